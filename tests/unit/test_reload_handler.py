"""The reload Lambda handler: `publish` (after a promotion) and `sync` (the first task of
every execution) over a fake registry and an in-memory bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctr import bundle
from ctr.errors import NoModelError, ValidationError
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import FakeMlflowClient, copy_downloader, tiny_predictor


@pytest.fixture(scope="module")
def app_module(tmp_path_factory, load_handler):
    tmp = tmp_path_factory.mktemp("reload_handler")
    with pytest.MonkeyPatch.context() as mp:
        yield load_handler("reload", mp, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
                           MODEL_NAME="criteo_ctr_model")


@pytest.fixture
def handler(app_module, monkeypatch, tmp_path: Path):
    store = Store(MemoryS3(), "bucket")
    client = FakeMlflowClient(tmp_path)
    monkeypatch.setattr(app_module, "store", store)
    monkeypatch.setattr(app_module, "client", client)
    # the fake registry's artifacts are local files: publish them without MLflow
    for name in ("publish_production", "sync_production"):
        real = getattr(bundle, name)
        monkeypatch.setattr(app_module, name, lambda c, s, m, real=real: real(
            c, s, m, downloader=copy_downloader))
    return app_module, store, client


def test_sync_before_any_production_version_answers_no_model(handler, lambda_context):
    module, store, _ = handler

    out = module.lambda_handler({"action": "sync", "execution": "exec-1"}, lambda_context)

    assert out["status"] == "no_model" and "production" in out["reason"]
    assert bundle.load_pointer(store) is None
    with pytest.raises(NoModelError):                      # publish still fails loudly
        module.lambda_handler({}, lambda_context)


def test_sync_publishes_what_a_failed_reload_left_behind(handler, lambda_context,
                                                         monkeypatch):
    module, store, client = handler
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    assert module.lambda_handler({"execution": "exec-1"}, lambda_context)["version"] == 1
    client.add_version(tiny_predictor(1))
    client.set_alias("production", 2)
    monkeypatch.setenv("CTR_FAULTS", "reload.publish=ReloadBroken")

    with pytest.raises(RuntimeError, match=r"injected fault at reload\.publish"):
        module.lambda_handler({"execution": "exec-2"}, lambda_context)
    assert bundle.load_pointer(store).version == 1
    out = module.lambda_handler({"action": "sync", "execution": "exec-3"}, lambda_context)

    assert (out["status"], out["version"]) == ("published", 2)    # the fault is publish's
    assert bundle.load_pointer(store).version == 2


def test_an_unknown_action_is_a_validation_error(handler, lambda_context):
    module, _, _ = handler
    with pytest.raises(ValidationError) as err:
        module.lambda_handler({"action": "rollback"}, lambda_context)
    assert [tuple(e["loc"]) for e in err.value.details["errors"]] == [("action",)]
