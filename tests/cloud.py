"""The local cloud for integration and browser tests, shared by both: LocalStack (host
mode, process Lambda executor) and an MLflow server, started ONCE per test session on
free loopback ports with a temporary state directory, the stack deployed from
template.yaml, and everything stopped by PID at the end."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ctr_infra.commands.cloud import running_cloud
from ctr_infra.localcloud import CloudConfig, Stack


class _Client:
    """`cloud.s3` etc.: the stack's cached boto3 client of one service."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __get__(self, cloud: Stack, owner: type | None = None) -> Any:
        return cloud.client(self.service)


@dataclass
class Cloud(Stack):
    s3 = _Client("s3")
    lambda_client = _Client("lambda")
    sfn = _Client("stepfunctions")
    logs = _Client("logs")

    @property
    def api_url(self) -> str:
        return self.outputs["LocalApiUrl"]

    @property
    def mlflow_uri(self) -> str:
        return self.cfg.mlflow_uri

    @property
    def state_machine_arn(self) -> str:
        return self.outputs["StateMachineArn"]

    def invoke(self, logical: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Synchronous invoke; raises AssertionError with the Lambda error on failure."""
        resp = self.lambda_client.invoke(FunctionName=self.function_name(logical),
                                         Payload=json.dumps(payload or {}).encode())
        body = json.loads(resp["Payload"].read() or b"null")
        if resp.get("FunctionError"):
            raise LambdaError(body)
        return body

    def set_env(self, logical: str, **variables: str | None) -> None:
        """Merge variables into a deployed function's environment (None removes one)
        and wait until the update is live (new execution environments)."""
        env = self.function_env(logical)
        for key, value in variables.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        self.set_function_env(logical, env, every_s=0.5)

    def reset_data(self) -> None:
        """Empty the bucket's data prefixes and the model registry, for a module that
        needs to start from nothing (the session shares one stack)."""
        self.empty_data()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.mlflow_uri)
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(os.environ.get("MODEL_NAME", "criteo_ctr_model"))

    def start_execution(self, name: str | None = None) -> str:
        kwargs = {"name": name} if name else {}
        return str(self.sfn.start_execution(stateMachineArn=self.state_machine_arn,
                                            input="{}", **kwargs)["executionArn"])

    def wait_execution(self, arn: str, timeout_s: float = 600) -> dict[str, Any]:
        return dict(self.wait_for(f"execution {arn.rsplit(':', 1)[-1]}", lambda: (
            d := self.sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d,
            timeout_s=timeout_s, every_s=1.0))

    def states_entered(self, arn: str) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events
                if "stateEnteredEventDetails" in e]

    def wait_for(self, what: str, check: Callable[[], Any], timeout_s: float = 60,
                 every_s: float = 0.5) -> Any:
        """Poll `check` until it returns something truthy; fail after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(every_s)
        pytest.fail(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class LambdaError(AssertionError):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(f"{body.get('errorType')}: {body.get('errorMessage')}")
        self.body = body
        self.error_type = body.get("errorType")


# The gate's stack parameters scaled to the suite's data (parts of a few thousand rows);
# the rule itself is the production one (ctr.registry.decision).
# Monitoring alarms evaluate every 10 s instead of once per scheduled run (600 s).
TEST_STACK_PARAMETERS = {"CTR_HOLDOUT_MIN_ROWS": "200", "CTR_MIN_NEW_ROWS": "1",
                         "CTR_MONITOR_ALARM_PERIOD": "10"}


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    cfg = CloudConfig.on_free_ports(Path(tmp_path_factory.mktemp("localcloud")), "ctr-test")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in TEST_STACK_PARAMETERS.items():
            mp.setenv(key, value)
        with running_cloud(cfg) as outputs:
            yield Cloud(cfg=cfg, outputs=outputs)
