"""The train Lambda handler: settings, event overrides, result shape, metrics."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from ctr import bundle
from ctr.errors import ValidationError
from ctr.registry import audit
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import put_parts
from tests.unit.test_audit import FakeEvents


@pytest.fixture(scope="module")
def app_module(tmp_path_factory, load_handler):
    """The handler module, imported once with its settings from the environment."""
    tmp = tmp_path_factory.mktemp("train_handler")
    uri = f"sqlite:///{tmp}/mlflow.db"
    MlflowClient(uri).create_experiment("exp", artifact_location=(tmp / "a").as_uri())
    with pytest.MonkeyPatch.context() as mp:
        # The gate's stack parameters scaled to 1,500-row parts.
        yield load_handler("train", mp, MLFLOW_TRACKING_URI=uri, MODEL_NAME="m",
                           EXPERIMENT_NAME="exp", MPLCONFIGDIR=str(tmp / "mpl"),
                           HOLDOUT_MIN_ROWS="300", MIN_NEW_ROWS="1")


@pytest.fixture
def handler(app_module, monkeypatch):
    store = Store(MemoryS3(), "bucket")
    monkeypatch.setattr(app_module, "store", store)
    monkeypatch.setattr(app_module, "events", FakeEvents())
    return app_module, store


def _emitted_metrics(output: str) -> set[str]:
    names: set[str] = set()
    for line in output.splitlines():
        if '"_aws"' in line:
            doc = json.loads(line)
            names.update(m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"])
    return names


def test_empty_bucket_is_skipped(handler, lambda_context, capsys):
    module, _ = handler
    out = module.lambda_handler({}, lambda_context)
    assert out["status"] == "skipped" and out["version"] is None
    assert "TrainingSkipped" in _emitted_metrics(capsys.readouterr().out)


def test_a_malformed_event_is_a_validation_error_naming_the_field(handler, lambda_context):
    module, _ = handler
    with pytest.raises(ValidationError) as err:
        module.lambda_handler({"num_boost_round": "many", "force": "perhaps"}, lambda_context)
    assert {tuple(e["loc"]) for e in err.value.details["errors"]} == {
        ("num_boost_round",), ("force",)}


def test_event_overrides_rounds_and_names_the_execution(handler, lambda_context, capsys):
    module, store = handler
    put_parts(store, 0, 2, 1500, seed=2)
    out = module.lambda_handler({"execution": "exec-42", "num_boost_round": 8}, lambda_context)
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 1, True)
    run = module.client.get_run(out["run_id"])
    assert run.data.params["num_boost_round"] == "8"
    assert run.data.metrics["holdout_rows"] == 300          # HOLDOUT_MIN_ROWS reached the window
    assert module.client.get_model_version("m", "1").tags["execution"] == "exec-42"
    json.dumps(out)                                   # the result is JSON-able
    # The registry events reached the audit trail and EventBridge, with the execution.
    trail = audit.list_events(store, "m")
    assert [(e.kind, e.version, e.actor) for e in trail] == [
        ("registered", 1, "exec-42"), ("promoted", 1, "exec-42")]
    assert [e["DetailType"] for e in module.events.entries] == ["ModelRegistered",
                                                               "ModelPromoted"]
    # ...and the registry's production version is in S3 for /health before any reload.
    assert bundle.load_registry_snapshot(store).production_version == 1
    emitted = _emitted_metrics(capsys.readouterr().out)
    assert {"ModelsTrained", "ModelsPromoted", "TrainingSeconds", "HoldoutLogloss"} <= emitted
