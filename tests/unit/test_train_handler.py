"""The train Lambda handler: settings, event overrides, result shape, metrics."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pytest_socket import disable_socket, enable_socket

from ctr.errors import ValidationError
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3 as FakeS3
from tests.synth_parts import put_parts

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Context:
    function_name: str = "train"
    memory_limit_in_mb: int = 10240
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:train"
    aws_request_id: str = "req-1"


@pytest.fixture(scope="module")
def app_module(tmp_path_factory):
    """The handler module, imported once with its settings from the environment."""
    tmp = tmp_path_factory.mktemp("train_handler")
    uri = f"sqlite:///{tmp}/mlflow.db"
    MlflowClient(uri).create_experiment("exp", artifact_location=(tmp / "a").as_uri())
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"BUCKET_NAME": "bucket", "MLFLOW_TRACKING_URI": uri,
                           "MODEL_NAME": "m", "EXPERIMENT_NAME": "exp",
                           "POWERTOOLS_TRACE_DISABLED": "1", "AWS_DEFAULT_REGION": "us-east-1",
                           "MPLCONFIGDIR": str(tmp / "mpl")}.items():
            mp.setenv(key, value)
        spec = importlib.util.spec_from_file_location("train_app",
                                                      ROOT / "functions/train/app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        enable_socket()      # the X-Ray SDK opens (and never uses) a UDP socket at import
        try:
            spec.loader.exec_module(module)
        finally:
            disable_socket(allow_unix_socket=True)
        yield module


@pytest.fixture
def handler(app_module, monkeypatch):
    store = Store(FakeS3(), "bucket")
    monkeypatch.setattr(app_module, "store", store)
    return app_module, store


def _emitted_metrics(output: str) -> set[str]:
    names: set[str] = set()
    for line in output.splitlines():
        if '"_aws"' in line:
            doc = json.loads(line)
            names.update(m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"])
    return names


def test_empty_bucket_is_skipped(handler, capsys):
    module, _ = handler
    out = module.lambda_handler({}, Context())
    assert out["status"] == "skipped" and out["version"] is None
    assert "TrainingSkipped" in _emitted_metrics(capsys.readouterr().out)


def test_a_malformed_event_is_a_validation_error_naming_the_field(handler):
    module, _ = handler
    with pytest.raises(ValidationError) as err:
        module.lambda_handler({"num_boost_round": "many", "force": "perhaps"}, Context())
    assert {tuple(e["loc"]) for e in err.value.details["errors"]} == {
        ("num_boost_round",), ("force",)}


def test_event_overrides_rounds_and_names_the_execution(handler, capsys):
    module, store = handler
    put_parts(store, 0, 2, 1500, seed=2)
    out = module.lambda_handler({"execution": "exec-42", "num_boost_round": 1}, Context())
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 1, True)
    run = module.client.get_run(out["run_id"])
    assert run.data.params["num_boost_round"] == "1"
    assert module.client.get_model_version("m", "1").tags["execution"] == "exec-42"
    json.dumps(out)                                   # the result is JSON-able
    emitted = _emitted_metrics(capsys.readouterr().out)
    assert {"ModelsTrained", "ModelsPromoted", "TrainingSeconds", "HoldoutLogloss"} <= emitted
