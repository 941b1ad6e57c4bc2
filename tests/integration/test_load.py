"""Load (issue #8, part 5): bounded loops of predict requests at concurrency 32 over
loopback, with one model reload in the middle of each: 0 errors, p50/p99 printed, and
the answers switch from the served version to the newly published one.

Two targets, because of what concurrency 32 costs on the local cloud (2 cores):
* API Gateway -> predict Lambda (LocalStack + the process executor): a request that
  finds no idle execution environment waits for a new one (a Python process importing
  FastAPI, pyarrow and XGBoost, then loading the bundle), and the emulator adds them a
  few at a time. Measured on a shared 2-core machine: 31 requests/s at concurrency 32
  (p99 3.2 s) when it was quiet, 4-5 requests/s (p99 over 20 s) when other test
  sessions loaded it: 10,000 requests would take 5 to 35 minutes; 1,000 run there.
* the same app (`ctr.serving.app`) under uvicorn on 127.0.0.1, reading the same bucket
  through the emulator's S3, as `ctr_infra.bench.serve.uvicorn_app` runs it: 10,000
  requests (measured: 60-154 requests/s, 1-3 minutes). Both tests print their figures.
  In the suite they send 3,000 and 500 requests (UVICORN_REQUESTS, API_GATEWAY_REQUESTS:
  environment variables set the measured sizes).

Prediction logs (issue 14): both runs log every request (sample rate 1.0) through the
stack's Firehose delivery stream (PredictionLogStream) into predictions/ of the bucket:
the Lambda run with its deployed environment (PREDICTION_LOG_SAMPLE_RATE=1.0), the
uvicorn run with the same `PredictionLog` on that stream. Each request of the measured
loop carries its own X-Request-Id; the records logged under the run's ids must equal
the 200 answers' rows, once delivery settles (polled, with a timeout).

Both reloads go through the real path: the registry's `production` alias moves to the
other version, the deployed reload function publishes it, and the servers notice the
new `serving/production.json` within POINTER_TTL_SECONDS (5 s in the template).

The load generator runs in a child process (so it never shares a GIL with uvicorn),
sends exactly N requests from 32 threads with keep-alive connections, records each
answer's status, model version and completion time, and stops by itself (per-request
timeout, overall deadline)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ctr.bundle import load_pointer
from ctr.monitoring.reports import SkewReport
from ctr.predlog import PredictionRecord
from ctr.schema import FEATURE_COLUMNS
from ctr.serving.prediction_log import PredictionLog
from ctr_infra.bench.loadgen import merge_runs, run_loadgen
from ctr_infra.bench.report import summarize
from ctr_infra.bench.serve import newest_rows, uvicorn_app
from tests.synth_parts import put_parts

pytestmark = pytest.mark.slow

MODEL_NAME = os.environ.get("MODEL_NAME", "criteo_ctr_model")
CONCURRENCY = 32
# The suite's sizes (it must stay near 20 minutes on 2 cores); the measured runs quoted in
# the README used 10,000 and 1,000: CTR_LOAD_UVICORN_REQUESTS=10000
# CTR_LOAD_API_REQUESTS=1000 pytest tests/integration/test_load.py
UVICORN_REQUESTS = int(os.environ.get("CTR_LOAD_UVICORN_REQUESTS", "3000"))
API_GATEWAY_REQUESTS = int(os.environ.get("CTR_LOAD_API_REQUESTS", "500"))
POINTER_TTL_S = 5.0
SWITCH_GRACE_S = POINTER_TTL_S + 15.0   # TTL + loading the bundle on a busy machine
API_GATEWAY_TIMEOUT_S = 29.0           # AWS answers 504 after this; the emulator does not
REQUEST_TIMEOUT_S = 120.0              # so the client waits longer and counts the slow ones
COLD_START_TIMEOUT_S = 300.0
ROOT = Path(__file__).resolve().parents[2]
CHILD = "from tests.integration.test_load import loadgen_child; loadgen_child()"


# --------------------------------------------------------------------------- load generator

def loadgen_child() -> None:
    """Child process: a job line on stdin; prints "reload" once `reload_after` answers
    are in, then one JSON line with every answer as [done_at (epoch s), latency s,
    status, version or None, error or None].

    It sends at least `requests` requests and, whatever their number, keeps sending until
    `after_reload_s` after the parent writes "reloaded" (the reload returned): a fast
    load must not end before the switch can be seen (500 requests once finished while a
    loaded machine was still inside the reload)."""
    job = json.loads(sys.stdin.readline())
    body, requests = json.dumps(job["body"]).encode(), int(job["requests"])
    id_prefix = job.get("request_id_prefix")
    deadline = time.monotonic() + float(job["max_seconds"])
    tickets = itertools.count()
    answers: list[list[Any]] = []
    lock = threading.Lock()
    settle_until = [float("inf")]

    def wait_for_reload() -> None:
        for line in sys.stdin:
            if line.startswith("reloaded"):
                settle_until[0] = time.monotonic() + float(job["after_reload_s"])
                break
        else:                    # the parent closed stdin without a reload: no extension
            settle_until[0] = 0.0

    def more(ticket: int) -> bool:
        if time.monotonic() >= deadline:
            return False
        return ticket < requests or time.monotonic() < settle_until[0]

    def worker() -> None:
        with httpx.Client(timeout=float(job["timeout"])) as client:
            while more(ticket := next(tickets)):
                t0 = time.perf_counter()
                status, version, error = 0, None, None
                headers = {"content-type": "application/json"}
                if id_prefix:
                    headers["x-request-id"] = f"{id_prefix}-{ticket}"
                try:
                    response = client.post(job["url"], content=body, headers=headers)
                    status = response.status_code
                    if status == 200:
                        version = response.json()["model"]["version"]
                    else:
                        error = response.text[:200]
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    error = f"{type(err).__name__}: {err}"[:200]
                answer = [time.time(), time.perf_counter() - t0, status, version, error]
                with lock:
                    answers.append(answer)
                    if len(answers) == int(job["reload_after"]):
                        print("reload", flush=True)

    threading.Thread(target=wait_for_reload, daemon=True).start()
    threads = [threading.Thread(target=worker) for _ in range(int(job["concurrency"]))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"answers": answers, "seconds": time.perf_counter() - started}),
          flush=True)


@dataclass
class LoadRun:
    answers: list[list[Any]]
    seconds: float
    reload: dict[str, Any]
    reload_started: float
    reload_returned: float

    @property
    def errors(self) -> list[str]:
        return [f"HTTP {a[2]}: {a[4]}" for a in self.answers if a[2] != 200 or a[4]]

    def versions(self, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        return Counter(a[3] for a in self.answers if since <= a[0] < until and a[2] == 200)

    def stats(self) -> dict[str, float]:
        return summarize([a[1] for a in self.answers if a[2] == 200])


def load_with_reload(url: str, body: dict[str, Any], requests: int,
                     reload: Callable[[], dict[str, Any]], *, reload_after: float,
                     max_seconds: float, request_id_prefix: str | None = None) -> LoadRun:
    """`requests` POSTs of `body` at CONCURRENCY; `reload()` runs once the fraction
    `reload_after` of them is answered (early enough for the rest to see the switch:
    under load the reload function itself took up to 17.5 s)."""
    job = {"url": url, "body": body, "requests": requests, "concurrency": CONCURRENCY,
           "timeout": REQUEST_TIMEOUT_S, "max_seconds": max_seconds,
           "reload_after": int(requests * reload_after),
           "after_reload_s": SWITCH_GRACE_S + 5.0,
           "request_id_prefix": request_id_prefix}
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            result, reloaded = None, None
            for line in proc.stdout:
                if line.strip() == "reload" and reloaded is None:
                    t0 = time.time()
                    outcome = reload()
                    reloaded = (outcome, t0, time.time())
                    proc.stdin.write("reloaded\n")
                    proc.stdin.close()
                elif line.startswith("{"):
                    result = json.loads(line)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-2000:]
    assert result is not None, f"the load generator gave no result: {tail}"
    assert reloaded is not None, "the load never reached the reload point"
    return LoadRun(result["answers"], result["seconds"], *reloaded)


def check_and_report(name: str, run: LoadRun, requests: int, old: int, new: int
                     ) -> dict[str, float]:
    stats = run.stats()
    slow = sum(1 for a in run.answers if a[1] > API_GATEWAY_TIMEOUT_S)
    first_new = min((a[0] for a in run.answers if a[3] == new), default=None)
    last_old = max((a[0] for a in run.answers if a[3] == old), default=None)
    print(f"\n{name}: {len(run.answers)} requests at concurrency {CONCURRENCY} in "
          f"{run.seconds:.1f} s ({len(run.answers) / run.seconds:.0f} req/s): "
          f"{len(run.errors)} errors, p50 {stats.get('p50_ms', 0):.1f} ms, "
          f"p99 {stats.get('p99_ms', 0):.1f} ms, max {max(a[1] for a in run.answers):.1f} s, "
          f"{slow} slower than {API_GATEWAY_TIMEOUT_S:.0f} s")
    print(f"  reload to v{new} ({run.reload.get('status')}) took "
          f"{run.reload_returned - run.reload_started:.1f} s; answers by version "
          f"{dict(run.versions())}; first v{new} answer "
          f"{(first_new or 0) - run.reload_started:+.1f} s, last v{old} answer "
          f"{(last_old or 0) - run.reload_started:+.1f} s after the reload started")

    assert len(run.answers) >= requests, "the loop stopped early (deadline)"
    assert run.errors == [], Counter(run.errors).most_common(3)
    assert run.reload["status"] == "published" and run.reload["version"] == new, run.reload
    assert set(run.versions()) == {old, new}
    assert set(run.versions(until=run.reload_started)) == {old}      # nothing new before
    last = max(run.answers, key=lambda a: a[0])
    assert last[3] == new, "the load ended before the switch"
    late = run.versions(since=run.reload_returned + SWITCH_GRACE_S)
    assert set(late) <= {new}, (late, f"v{old} answered {SWITCH_GRACE_S:.0f} s after reload")
    return stats


# --------------------------------------------------------------------------- prediction logs

LOG_DELIVERY_TIMEOUT_S = 120.0


class LoggedRecords:
    """Prediction records in predictions/ whose request id starts with a prefix; objects
    are immutable, so each is read once."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        self.seen: dict[str, list[tuple[str, int]]] = {}

    def ids(self) -> Counter[tuple[str, int]]:
        for key in self.store.list_keys("predictions/"):
            if key not in self.seen:
                lines = self.store.get(key).body.decode().splitlines()
                records = [PredictionRecord.model_validate_json(line) for line in lines if line]
                self.seen[key] = [(r.request_id, r.row) for r in records
                                  if r.request_id.startswith(self.prefix + "-")]
        return Counter(x for found in self.seen.values() for x in found)


def check_prediction_log(cloud, run: LoadRun, prefix: str, rows_per_request: int) -> None:
    """The run's records in S3 = the rows of its 200 answers, each logged once."""
    answered = sum(1 for a in run.answers if a[2] == 200) * rows_per_request
    logged = LoggedRecords(cloud.store, prefix)
    started = time.monotonic()
    cloud.wait_for(f"{answered} logged prediction records under {prefix}",
                   lambda: sum(logged.ids().values()) >= answered,
                   timeout_s=LOG_DELIVERY_TIMEOUT_S, every_s=2)
    waited = time.monotonic() - started
    time.sleep(3)                       # anything late would be a duplicate
    ids = logged.ids()
    print(f"  prediction log: {sum(ids.values())} records for {answered} answered rows in "
          f"{len(logged.seen)} objects under predictions/ (delivered {waited:.1f} s after "
          f"the last answer)")
    assert sum(ids.values()) == answered
    assert max(ids.values()) == 1, "a record was logged twice"
    assert {rid for rid, _ in ids} <= {f"{prefix}-{i}" for i in range(len(run.answers))}
    keys = list(logged.seen)
    assert all(re.fullmatch(r"predictions/\d{4}/\d{2}/\d{2}/\d{2}/.+", k) for k in keys), keys[:3]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def mlflow_client(cloud):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cloud.mlflow_uri)


@pytest.fixture(scope="module")
def two_versions(cloud, mlflow_client) -> tuple[int, int]:
    """Two registered versions, the first published and served."""
    from ctr.registry import promote

    cloud.reset_data()
    put_parts(cloud.store, 0, 2, 4000, seed=41)
    first = cloud.invoke("TrainFunction", {"num_boost_round": 20, "execution": "it-load-1"})
    assert first["promoted"] is True, first
    assert cloud.invoke("ReloadFunction")["status"] == "published"
    put_parts(cloud.store, 2, 1, 4000, seed=41)
    second = cloud.invoke("TrainFunction", {"num_boost_round": 5, "execution": "it-load-2"})
    assert second["status"] == "trained", second
    v1, v2 = int(first["version"]), int(second["version"])
    promote(mlflow_client, MODEL_NAME, v1, reason="load test: serve the first version")
    return v1, v2


def switch_plan(cloud, mlflow_client, versions: tuple[int, int]) -> tuple[int, int]:
    """(served version, the other one), with the other one made production in the
    registry but not yet published: the reload in the middle of the load publishes it."""
    from ctr.registry import promote

    pointer = load_pointer(cloud.store)
    assert pointer is not None
    old = int(cloud.store.get_json(pointer.prefix + "provenance.json")[0]["version"])
    new = next(v for v in versions if v != old)
    promote(mlflow_client, MODEL_NAME, new, reason="load test: reload during load")
    return old, new


def one_row(cloud) -> dict[str, Any]:
    return {"rows": newest_rows(cloud.store, 1)}


# --------------------------------------------------------------------------- tests

@pytest.fixture
def log_every_request(cloud) -> Iterator[None]:
    """The deployed predict function logs every request while the test runs."""
    before = cloud.function_env("PredictFunction").get("PREDICTION_LOG_SAMPLE_RATE")
    cloud.set_env("PredictFunction", PREDICTION_LOG_SAMPLE_RATE="1.0")
    yield
    cloud.set_env("PredictFunction", PREDICTION_LOG_SAMPLE_RATE=before)


def test_api_gateway_load_with_a_reload(cloud, mlflow_client, two_versions,
                                        log_every_request):
    old, new = switch_plan(cloud, mlflow_client, two_versions)
    url = f"{cloud.api_url.rstrip('/')}/predict"
    cloud.wait_for(f"API Gateway to serve v{old}", lambda: httpx.post(
        url, json=one_row(cloud), timeout=60).json().get("model", {}).get("version") == old,
        timeout_s=60, every_s=1)
    # Cold, 32 concurrent requests wait for environments to start (measured: ~200 of
    # 1,000 took more than 30 s). Start them first and print what that costs; the
    # measured loop then runs on whatever environments the emulator keeps warm.
    started = time.perf_counter()
    cold = merge_runs([run_loadgen(url, one_row(cloud), CONCURRENCY, CONCURRENCY,
                                   warmup=CONCURRENCY, timeout=COLD_START_TIMEOUT_S)])
    print(f"\nstarting {CONCURRENCY} environments: {cold['requests'] + CONCURRENCY} "
          f"requests in {time.perf_counter() - started:.1f} s; the last {cold['n']} "
          f"in {cold['seconds']:.1f} s, p50 "
          f"{cold.get('p50_ms', 0):.0f} ms, p99 {cold.get('p99_ms', 0):.0f} ms, "
          f"{cold['errors']} errors {cold['error_samples']}")

    prefix = f"load-gw-{uuid.uuid4().hex[:8]}"
    run = load_with_reload(url, one_row(cloud), API_GATEWAY_REQUESTS,
                           lambda: cloud.invoke("ReloadFunction"), reload_after=0.1,
                           max_seconds=900, request_id_prefix=prefix)

    check_and_report("API Gateway -> Lambda", run, API_GATEWAY_REQUESTS, old, new)
    check_prediction_log(cloud, run, prefix, rows_per_request=1)
    check_skew_from_the_log(cloud)


def check_skew_from_the_log(cloud) -> None:
    """The monitor step compares every logged record (this load's and the warm-up's) with
    the production version's training baseline and writes the skew report."""
    logged = sum(1 for key in cloud.store.list_keys("predictions/")
                 for line in cloud.store.get(key).body.splitlines() if line.strip())
    result = cloud.invoke("MonitorFunction", {"execution": "it-load-skew"})
    assert result["skew_records"] == logged >= API_GATEWAY_REQUESTS, (result, logged)
    reports = [SkewReport.model_validate_json(cloud.store.get(k).body)
               for k in cloud.store.list_keys("monitoring/skew/")]
    newest = max(reports, key=lambda r: r.evaluated_at)
    assert newest.records == logged
    assert {f.feature for f in newest.features} == set(FEATURE_COLUMNS)
    assert newest.baseline_version == result["production_version"]
    print(f"  skew: {newest.records} served rows against v{newest.baseline_version}'s "
          f"baseline; flagged {newest.flagged or 'none'} ({newest.note or 'no note'})")


def test_uvicorn_load_of_10k_requests_with_a_reload(cloud, mlflow_client, two_versions):
    old, new = switch_plan(cloud, mlflow_client, two_versions)

    prefix = f"load-uv-{uuid.uuid4().hex[:8]}"
    firehose = cloud.client("firehose")
    plog = PredictionLog(lambda: firehose, cloud.outputs["PredictionLogStreamName"], 1.0)
    with uvicorn_app(cloud.store, prediction_log=plog) as base:
        run = load_with_reload(f"{base}/predict", one_row(cloud), UVICORN_REQUESTS,
                               lambda: cloud.invoke("ReloadFunction"), reload_after=0.25,
                               max_seconds=900, request_id_prefix=prefix)
    plog.close(timeout_s=10)

    check_and_report("uvicorn (same app, same bucket)", run, UVICORN_REQUESTS, old, new)
    check_prediction_log(cloud, run, prefix, rows_per_request=1)
    assert plog.counters.dropped_rows == 0
