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
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctr_infra import localcloud
from ctr_infra.bench.plan import Echo
from ctr_infra.localcloud import CloudConfig, CloudError, Stack

BENCH_STACK = "ctr-bench"


@dataclass(kw_only=True)
class BenchCloud(Stack):
    private: bool
    startup_s: float
    keep_state: bool = False        # a section failed: keep a private cloud's logs

    def describe(self) -> dict[str, Any]:
        return {"private": self.private, "stack": self.cfg.stack_name,
                "endpoint_url": self.cfg.endpoint_url, "mlflow_uri": self.cfg.mlflow_uri,
                "startup_s": self.startup_s}


@contextlib.contextmanager
def private_cloud(echo: Echo) -> Iterator[BenchCloud]:
    """A fresh local cloud on free ports in a temp state dir, stopped by PID at the end.
    The state dir is removed afterwards, unless something failed (its path is printed)."""
    from ctr_infra.commands.cloud import running_cloud

    state = Path(tempfile.mkdtemp(prefix="ctr-bench-cloud-"))
    cfg = CloudConfig.on_free_ports(state, BENCH_STACK)
    failed = True
    try:
        echo(f"==> private local cloud on {cfg.endpoint_url} (state {state})")
        t0 = time.monotonic()
        with running_cloud(cfg) as outputs:
            startup = time.monotonic() - t0
            echo(f"    ready after {startup:.1f}s")
            cloud = BenchCloud(cfg=cfg, outputs=outputs, private=True, startup_s=startup)
            yield cloud
            failed = cloud.keep_state
    finally:
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
    with localcloud.aws_env_applied(cfg):
        cloud = BenchCloud(cfg=cfg, outputs=outputs, private=False, startup_s=0.0)
        used = [p for p in localcloud.DATA_PREFIXES if next(iter(cloud.store.list_keys(p)), None)]
        model = cloud.function_env("TrainFunction").get("MODEL_NAME", "criteo_ctr_model")
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


@contextlib.contextmanager
def function_env(cloud: BenchCloud, logical: str, **changes: str) -> Iterator[
        Callable[..., None]]:
    """Change variables of a function for a block, restoring the original environment
    afterwards; yields a setter for further changes inside the block."""
    original = cloud.function_env(logical)

    def apply(**more: str) -> None:
        cloud.set_function_env(logical, {**original, **changes, **more})

    apply()
    try:
        yield apply
    finally:
        cloud.set_function_env(logical, original)
