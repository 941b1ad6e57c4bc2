"""The local cloud the pipeline and serving sections measure on.

By default a *private* one (LocalStack + MLflow on free loopback ports, a temporary
state directory, stack `ctr-bench`), started only when a cloud section runs and stopped
by PID at the end, exactly as the test session's cloud. A running `make up` cloud is
never used by default: the pipeline section registers and promotes a model and moves
the serving pointer, which would change what the user's API serves, and the user's
scheduled executions would disturb the timings. `existing_cloud` (CLI
`--existing-cloud`) measures on a running cloud instead, only if its bucket data
prefixes and model registry are empty (the test suite uses this with its session
cloud); the bench's data is left there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctr_infra import localcloud
from ctr_infra.bench.plan import Echo
from ctr_infra.localcloud import CloudConfig, CloudError

BENCH_STACK = "ctr-bench"
DATA_PREFIXES = ("raw/", "chunks/", "parquet/", "rejects/", "serving/", "state/")


@dataclass
class BenchCloud:
    cfg: CloudConfig
    outputs: dict[str, str]
    private: bool
    startup_s: float
    _clients: dict[str, Any] = field(default_factory=dict)
    keep_state: bool = False        # a section failed: keep a private cloud's logs

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = localcloud.boto3_client(self.cfg, service)
        return self._clients[service]

    @property
    def store(self) -> Any:
        from ctr.storage import Store

        return Store(self.client("s3"), self.outputs["BucketName"])

    def describe(self) -> dict[str, Any]:
        return {"private": self.private, "stack": self.cfg.stack_name,
                "endpoint_url": self.cfg.endpoint_url, "mlflow_uri": self.cfg.mlflow_uri,
                "startup_s": self.startup_s}


@contextlib.contextmanager
def _aws_env(cfg: CloudConfig) -> Iterator[None]:
    """AWS_* pointing at this cloud for the duration (as the test session does)."""
    env = localcloud.aws_env(cfg)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def private_cloud(echo: Echo) -> Iterator[BenchCloud]:
    """A fresh local cloud on free ports in a temp state dir, stopped by PID at the end.
    The state dir is removed afterwards, unless something failed (its path is printed)."""
    from ctr_infra.commands.cloud import bring_up

    state = Path(tempfile.mkdtemp(prefix="ctr-bench-cloud-"))
    cfg = CloudConfig(state_dir=state, localstack_port=localcloud.free_port(),
                      mlflow_port=localcloud.free_port(), stack_name=BENCH_STACK)
    failed = True
    with _aws_env(cfg):
        try:
            echo(f"==> private local cloud on {cfg.endpoint_url} (state {state})")
            t0 = time.monotonic()
            outputs = bring_up(cfg, schedule_on=False, quiet=True)
            startup = time.monotonic() - t0
            echo(f"    ready after {startup:.1f}s")
            cloud = BenchCloud(cfg, outputs, private=True, startup_s=startup)
            yield cloud
            failed = cloud.keep_state
        finally:
            localcloud.stop(cfg)
            if failed:
                echo(f"    kept the bench cloud's state and logs in {state}")
            else:
                shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def started_early(cm: contextlib.AbstractContextManager[BenchCloud]
                  ) -> Iterator[Callable[[], BenchCloud]]:
    """Enter `cm` in a background thread now; yield a function that waits for the start
    and returns the cloud (or raises its error); exit `cm` at the end."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-cloud") as pool:
        future = pool.submit(cm.__enter__)
        completed = False
        try:
            yield future.result
            completed = True
        finally:
            if future.exception() is None:          # waits for the start to end
                future.result().keep_state |= not completed
                cm.__exit__(None, None, None)


@contextlib.contextmanager
def existing_cloud(cfg: CloudConfig) -> Iterator[BenchCloud]:
    """A running local cloud, used only if it holds no data and no model."""
    outputs = localcloud.read_outputs(cfg)
    if not outputs.get("BucketName") or not localcloud.running_pid(cfg, "localstack"):
        raise CloudError(f"no running local cloud in {cfg.state_dir} (`make up`, or run "
                         "without --existing-cloud to use a private one)")
    with _aws_env(cfg):
        cloud = BenchCloud(cfg, outputs, private=False, startup_s=0.0)
        used = [p for p in DATA_PREFIXES if next(iter(cloud.store.list_keys(p)), None)]
        model = _function_env(cloud, "TrainFunction").get("MODEL_NAME", "criteo_ctr_model")
        from mlflow import MlflowClient

        versions = MlflowClient(tracking_uri=cfg.mlflow_uri).search_model_versions(
            f"name='{model}'")
        if used or versions:
            raise CloudError(
                f"the running cloud ({cfg.stack_name}) holds data ({', '.join(used) or '-'}) "
                f"or {len(versions)} version(s) of {model}: the bench would mix its data and "
                "models with them. Run `ctr bench` without --existing-cloud (a private "
                "cloud) or empty that cloud first.")
        yield cloud


def _function_env(cloud: BenchCloud, logical: str) -> dict[str, str]:
    conf = cloud.client("lambda").get_function_configuration(
        FunctionName=cloud.outputs[f"{logical}Name"])
    return dict(conf.get("Environment", {}).get("Variables", {}))


def set_function_env(cloud: BenchCloud, logical: str, variables: dict[str, str],
                     timeout_s: float = 60) -> None:
    """Replace a deployed function's environment and wait until the update is live
    (LocalStack then starts new execution environments)."""
    lam = cloud.client("lambda")
    name = cloud.outputs[f"{logical}Name"]
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": variables})
    deadline = time.monotonic() + timeout_s
    while lam.get_function_configuration(FunctionName=name).get(
            "LastUpdateStatus") != "Successful":
        if time.monotonic() > deadline:
            raise CloudError(f"{name}: configuration update not live after {timeout_s:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def function_env(cloud: BenchCloud, logical: str, **changes: str) -> Iterator[
        Callable[..., None]]:
    """Change variables of a function for a block, restoring the original environment
    afterwards; yields a setter for further changes inside the block."""
    original = _function_env(cloud, logical)

    def apply(**more: str) -> None:
        set_function_env(cloud, logical, {**original, **changes, **more})

    apply()
    try:
        yield apply
    finally:
        set_function_env(cloud, logical, original)
