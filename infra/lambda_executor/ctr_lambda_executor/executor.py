"""LocalStack runtime executor that runs each Lambda execution environment as a local
Python process (a `Worker`) instead of a Docker container.

Selected with LAMBDA_RUNTIME_EXECUTOR=process (entry point in this package's
pyproject). LocalStack starts one executor per execution environment and more of them
for concurrent invocations; each executor owns one worker process.

Unlike the Docker executor, results come back over a pipe rather than through
LocalStack's HTTP callback routes: `invoke()` returns the InvocationResult directly,
which is all LocalStack's ExecutionEnvironment needs.

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
from pathlib import Path

from localstack import config
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

from ctr_lambda_executor.worker import Worker, WorkerSpec, default_python, refusing

LOG = logging.getLogger(__name__)
LOCALHOST = "127.0.0.1"


class ProcessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.worker: Worker | None = None

    def _spec(self, env_vars: dict[str, str]) -> WorkerSpec:
        cfg = self.function_version.config
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
            log_file = Path(log_dir) / f"{self.function_version.id.function_name}.log"
        return WorkerSpec(
            python=default_python(),
            handler=cfg.handler or "",
            code_dir=Path(cfg.code.get_unzipped_code_location()),
            layer_dirs=[Path(layer.code.get_unzipped_code_location()) for layer in cfg.layers],
            env=env,
            function_name=self.function_version.id.function_name,
            hot_reload=cfg.code.is_hot_reloading(),
            log_file=log_file,
        )

    def start(self, env_vars: dict[str, str]) -> None:
        self.worker = Worker(self._spec(env_vars))
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

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        """Nothing to clean: processes end in stop(), unzipped code is LocalStack's."""

    @classmethod
    def validate_environment(cls) -> bool:
        python = default_python()
        if not os.access(python, os.X_OK):
            LOG.warning("CTR_LAMBDA_PYTHON=%s is not executable", python)
            return False
        return True
