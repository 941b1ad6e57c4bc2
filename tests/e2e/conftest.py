"""Real-browser tests: Debian's Chromium driven by Playwright, against real servers.

Fixtures:
- `browser`: one headless Chromium for the session. It is Debian's binary found on
  PATH (`make test` installs it): Playwright's own browser download cannot work offline,
  so `playwright install` is never called.
- `page`: a fresh page per test (desktop size); at teardown its screenshot is saved to
  test-artifacts/e2e/<test name>.png, so a failure leaves a picture behind. JavaScript
  exceptions on the page fail the test.
- `live_api`: the deployed predict API behind API Gateway on the local cloud, with a
  production model. If none exists yet, the pipeline runs once (Step Functions: chunk,
  aggregate, train, reload) on a small synthetic file.
- `empty_api`: the same serving app under uvicorn on a free port, configured like the
  deployed predict function but pointed at a new, empty bucket in the local cloud. It
  shows the no-model state however much the other tests have trained already.
  (`serving(cloud, bucket, ...)` starts such an app on any bucket.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from ctr import ingest, synth
from ctr_infra.net import free_port

# The local cloud is one session fixture shared with the integration tests.
from tests.cloud import Cloud

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
E2E_ROWS = 20_000  # enough for a model that trains in seconds
PIPELINE_TIMEOUT_S = 600
# The serving app as the predict function builds it, settings from the environment.
SERVE = ("import sys, uvicorn\n"
         "from ctr.serving.app import ServingSettings, create_app\n"
         "uvicorn.run(create_app(ServingSettings()), host='127.0.0.1', port=int(sys.argv[1]),"
         " log_level='warning')\n")
# A cold Lambda process (FastAPI + xgboost imports) answers the first request slowly.
expect.set_options(timeout=30_000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not on PATH: run `make test-e2e` "
                    "(it installs chromium and chromium-driver) or "
                    "`apt-get install -y chromium chromium-driver`.")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    new_page = context.new_page()
    js_errors: list[str] = []
    new_page.on("pageerror", lambda error: js_errors.append(str(error)))
    yield new_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    new_page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    context.close()
    assert not js_errors, f"JavaScript errors on the page: {js_errors}"


def screenshot(page: Page, name: str) -> Path:
    """Save a named screenshot as a test artifact (full page)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def health(base_url: str) -> dict[str, Any]:
    """GET /health, or {} when the API does not answer 200 (yet)."""
    try:
        response = httpx.get(f"{base_url}/health", timeout=30)
    except httpx.HTTPError:
        return {}
    return response.json() if response.status_code == 200 else {}


def ensure_production_model(local_cloud: Cloud, base_url: str) -> None:
    """Run the pipeline once on synthetic data unless the API already serves a model."""
    if health(base_url).get("model_loaded"):
        return
    table, _ = synth.generate_table(E2E_ROWS, seed=11)
    local_cloud.store.put(ingest.raw_key_for("e2e", "train.txt"), synth.table_to_tsv(table),
                          content_type="text/plain")
    arn = local_cloud.sfn.start_execution(stateMachineArn=local_cloud.state_machine_arn,
                                    name=f"e2e-{uuid.uuid4().hex[:12]}",
                                    input="{}")["executionArn"]

    def finished() -> dict[str, Any] | None:
        described = local_cloud.sfn.describe_execution(executionArn=arn)
        return None if described["status"] == "RUNNING" else described

    described = local_cloud.wait_for("the pipeline execution", finished,
                               timeout_s=PIPELINE_TIMEOUT_S, every_s=2)
    assert described["status"] == "SUCCEEDED", json.dumps(described, default=str)
    local_cloud.wait_for("the API to serve the new model",
                   lambda: health(base_url).get("model_loaded"), timeout_s=60, every_s=1)


@pytest.fixture(scope="session")
def live_api(cloud: Cloud) -> str:
    """Base URL of the deployed API (no trailing slash), serving a production model."""
    base_url = cloud.api_url.rstrip("/")
    ensure_production_model(cloud, base_url)
    return base_url


@contextlib.contextmanager
def serving(cloud: Cloud, bucket: str, log_dir: Path, **env_extra: str) -> Iterator[str]:
    """The serving app under uvicorn on a free port, configured like the deployed predict
    function (its environment) but reading `bucket`, plus `env_extra`."""
    function = cloud.lambda_client.get_function_configuration(
        FunctionName=cloud.function_name("PredictFunction"))
    env = dict(os.environ)  # the cloud fixture exported AWS_ENDPOINT_URL and test keys
    env.update(function.get("Environment", {}).get("Variables", {}))
    env["BUCKET_NAME"] = bucket
    env.update(env_extra)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = log_dir / "uvicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port)],
            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not health(base_url):
            if server.poll() is not None:
                pytest.fail(f"uvicorn exited with {server.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not answer /health in 60 s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def empty_api(cloud: Cloud,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the serving app under uvicorn, reading an empty bucket: no model."""
    bucket = f"e2e-empty-{uuid.uuid4().hex[:10]}"
    cloud.s3.create_bucket(Bucket=bucket)
    try:
        with serving(cloud, bucket, tmp_path_factory.mktemp("uvicorn")) as base_url:
            yield base_url
    finally:
        cloud.s3.delete_bucket(Bucket=bucket)
