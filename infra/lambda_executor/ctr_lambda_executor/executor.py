"""LocalStack runtime executor that runs each Lambda execution environment as a local
Python process (a `Worker`) instead of a Docker container.

Selected with LAMBDA_RUNTIME_EXECUTOR=process (entry point in this package's
pyproject). LocalStack starts one executor per execution environment and more of them
for concurrent invocations; each executor owns one worker process.

Unlike the Docker executor, results come back over a pipe rather than through
LocalStack's HTTP callback routes: `invoke()` returns the InvocationResult directly,
which is all LocalStack's ExecutionEnvironment needs.

SnapStart: a published version whose configuration has SnapStart on
(`ApplyOn: PublishedVersions`) gets a snapshot template when LocalStack prepares it
(publishing waits for it, so the version turns Active once its snapshot exists, as in
AWS); every execution environment of that version is then a fork of the template
(`worker.SnapshotTemplate`). `$LATEST` and functions without SnapStart start as before.
If the template fails, the version still becomes Active and its environments
cold-start; the reason is logged. Templates of the two newest versions of a function are
kept; an older version's is rebuilt on first need.

Settings (environment of the LocalStack process):
  CTR_LAMBDA_PYTHON    interpreter for the functions (the project's venv python)
  CTR_LAMBDA_LOG_DIR   where <function-name>.log files are appended (make logs)
  CTR_LAMBDA_REFUSE_FILE  test-only fault switch: while this JSON file holds
                       {"until": <epoch seconds>, "functions": [names]} with a future
                       deadline, invocations of those functions (all when the list is
                       empty) fail as if the Lambda service refused them (the invoke
                       answers a service error, which Step Functions retries)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from localstack import config
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

from ctr_lambda_executor.worker import (
    SnapshotTemplate,
    SnapshotUnavailable,
    Worker,
    WorkerSpec,
    default_python,
    refusing,
)

LOG = logging.getLogger(__name__)
LOCALHOST = "127.0.0.1"
SNAPSHOTS_KEPT_PER_FUNCTION = 2


def snapstart_on(function_version: FunctionVersion) -> bool:
    """SnapStart applies: a published version of a function with ApplyOn PublishedVersions."""
    snap = function_version.config.snap_start or {}
    return (function_version.id.qualifier != "$LATEST"
            and snap.get("ApplyOn") == "PublishedVersions"
            and function_version.config.code is not None)


def worker_spec(function_version: FunctionVersion, env_vars: dict[str, Any]) -> WorkerSpec:
    cfg = function_version.config
    if cfg.code is None:
        raise LambdaRuntimeException("Container-image functions need Docker; "
                                     "the process executor runs zip functions only")
    env = {k: str(v) for k, v in env_vars.items()}
    # No X-Ray daemon on the host: Powertools' tracer would only log errors.
    env.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    log_dir = os.environ.get("CTR_LAMBDA_LOG_DIR")
    log_file = None
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log_file = Path(log_dir) / f"{function_version.id.function_name}.log"
    return WorkerSpec(
        python=default_python(),
        handler=cfg.handler or "",
        code_dir=Path(cfg.code.get_unzipped_code_location()),
        layer_dirs=[Path(layer.code.get_unzipped_code_location()) for layer in cfg.layers],
        env=env,
        function_name=function_version.id.function_name,
        hot_reload=cfg.code.is_hot_reloading(),
        log_file=log_file,
    )


def snapshot_env(function_version: FunctionVersion) -> dict[str, Any]:
    """The environment a version's init runs with before the snapshot: the function's
    configuration and Lambda's reserved variables, with credentials for the function's
    role (AWS's init phase can call AWS too). Each restored copy gets its execution
    environment's own variables instead."""
    fid, cfg = function_version.id, function_version.config
    env: dict[str, Any] = {
        "AWS_DEFAULT_REGION": fid.region, "AWS_REGION": fid.region,
        "AWS_LAMBDA_FUNCTION_NAME": fid.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": cfg.memory_size,
        "AWS_LAMBDA_FUNCTION_VERSION": fid.qualifier,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fid.function_name}",
        "AWS_LAMBDA_FUNCTION_TIMEOUT": cfg.timeout,
        "LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "LOCALSTACK_HOSTNAME": LOCALHOST, "EDGE_PORT": str(config.GATEWAY_LISTEN[0].port),
        "_HANDLER": cfg.handler or "",
        "AWS_EXECUTION_ENV": "AWS_Lambda_rapid",
    }
    if not config.LAMBDA_DISABLE_AWS_ENDPOINT_URL:
        env["AWS_ENDPOINT_URL"] = f"http://{LOCALHOST}:{config.GATEWAY_LISTEN[0].port}"
    try:  # the same role session an execution environment gets
        from localstack.aws.connect import connect_to

        sts = connect_to(region_name=fid.region).sts.request_metadata(
            service_principal="lambda")
        creds = sts.assume_role(RoleArn=cfg.role, RoleSessionName=fid.function_name,
                                DurationSeconds=43200)["Credentials"]
        env.update({"AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                    "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                    "AWS_SESSION_TOKEN": creds["SessionToken"]})
    except Exception as err:  # init then runs without credentials; restores get theirs
        LOG.warning("SnapStart %s: no role credentials for the snapshot's init: %s",
                    function_version.qualified_arn, err)
    env.update(cfg.environment or {})
    return env


class Snapshots:
    """The snapshot templates of published SnapStart versions, by qualified ARN."""

    def __init__(self, kept_per_function: int = SNAPSHOTS_KEPT_PER_FUNCTION) -> None:
        self.kept = kept_per_function
        self._lock = threading.Lock()
        self._version_locks: dict[str, threading.Lock] = {}
        self._templates: dict[str, SnapshotTemplate] = {}
        self._failed: dict[str, str] = {}

    def take(self, function_version: FunctionVersion) -> SnapshotTemplate | None:
        """The version's template, taking the snapshot now if there is none yet (or the
        one there is went away or is stale). None when it cannot be taken (logged)."""
        arn = function_version.qualified_arn
        with self._lock:
            version_lock = self._version_locks.setdefault(arn, threading.Lock())
        with version_lock:
            with self._lock:
                current = self._templates.get(arn)
                failed = self._failed.get(arn)
            if current is not None and current.alive() and not current.stale():
                return current
            if current is None and failed is not None:
                return None
            if current is not None:
                current.stop()
            template = SnapshotTemplate(
                worker_spec(function_version, snapshot_env(function_version)),
                label=f"{function_version.id.function_name}:{function_version.id.qualifier}")
            try:
                template.start()
            except SnapshotUnavailable as err:
                LOG.warning("SnapStart: %s; environments of this version start cold", err)
                with self._lock:
                    self._templates.pop(arn, None)
                    self._failed[arn] = str(err)
                return None
            with self._lock:
                self._templates[arn] = template
                self._failed.pop(arn, None)
                evicted = self._older_of(function_version)
            for old in evicted:
                old.stop()
            return template

    def get(self, function_version: FunctionVersion) -> SnapshotTemplate | None:
        return self.take(function_version)

    def _older_of(self, function_version: FunctionVersion) -> list[SnapshotTemplate]:
        """Templates of the same function beyond the newest `kept` (caller holds _lock)."""
        prefix = function_version.id.unqualified_arn() + ":"
        mine = sorted((arn for arn in self._templates if arn.startswith(prefix)),
                      key=lambda arn: int(arn.rsplit(":", 1)[1])
                      if arn.rsplit(":", 1)[1].isdigit() else -1)
        return [self._templates.pop(arn) for arn in mine[:-self.kept]] if self.kept else []

    def drop(self, function_version: FunctionVersion) -> None:
        arn = function_version.qualified_arn
        with self._lock:
            template = self._templates.pop(arn, None)
            self._failed.pop(arn, None)
        if template is not None:
            template.stop()


SNAPSHOTS = Snapshots()


class ProcessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.worker: Worker | None = None

    def start(self, env_vars: dict[str, str]) -> None:
        template = SNAPSHOTS.get(self.function_version) if snapstart_on(
            self.function_version) else None
        self.worker = Worker(worker_spec(self.function_version, env_vars), template=template)
        self.worker.start()

    def stop(self) -> None:
        if self.worker:
            self.worker.stop()

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        if self.worker is None:
            raise LambdaRuntimeException(f"executor {self.id} not started")
        if reason := refusing(self.function_version.id.function_name):
            raise LambdaRuntimeException(reason)
        out = self.worker.invoke(
            request_id=payload["invoke-id"],
            payload=payload.get("payload") or "",
            arn=payload.get("invoked-function-arn", ""),
            timeout_s=float(self.function_version.config.timeout),
            trace_id=payload.get("trace-id", ""),
        )
        return InvocationResult(payload["invoke-id"], out.payload, is_error=not out.ok,
                                logs=out.logs)

    def get_address(self) -> str:
        return LOCALHOST

    def get_endpoint_from_executor(self) -> str:
        return LOCALHOST

    def get_runtime_endpoint(self) -> str:
        # Not used by the process runtime (results come over a pipe), kept for the API.
        return f"http://{LOCALHOST}:{config.GATEWAY_LISTEN[0].port}/_localstack_lambda/{self.id}"

    def get_logs(self) -> str:
        return self.worker.recent_logs() if self.worker else ""

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        cfg = function_version.config
        if cfg.code:
            cfg.code.prepare_for_execution()
        for layer in cfg.layers:
            layer.code.prepare_for_execution()
        if snapstart_on(function_version):
            # Publishing a SnapStart version includes its init and the snapshot.
            SNAPSHOTS.take(function_version)

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        """The version's snapshot template, if any, ends; environments end in stop(),
        unzipped code is LocalStack's."""
        SNAPSHOTS.drop(function_version)

    @classmethod
    def validate_environment(cls) -> bool:
        python = default_python()
        if not os.access(python, os.X_OK):
            LOG.warning("CTR_LAMBDA_PYTHON=%s is not executable", python)
            return False
        return True
