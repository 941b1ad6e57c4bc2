"""Reload's export: registry alias -> immutable bundle in S3 -> pointer (compare-and-swap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctr import bundle, layout, registry
from ctr.errors import ConflictError, DataError, NoModelError, ValidationError
from ctr.steps import ReloadResult
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import (
    MODEL_NAME,
    FakeMlflowClient,
    copy_downloader,
    sample_table,
    tiny_predictor,
)


@pytest.fixture
def s3() -> MemoryS3:
    return MemoryS3()


@pytest.fixture
def store(s3: MemoryS3) -> Store:
    return Store(s3, "bucket")


@pytest.fixture
def client(tmp_path: Path) -> FakeMlflowClient:
    return FakeMlflowClient(tmp_path)


def publish(client: FakeMlflowClient, store: Store) -> ReloadResult:
    return bundle.publish_production(client, store, MODEL_NAME, downloader=copy_downloader)


def sync(client: FakeMlflowClient, store: Store) -> Any:
    return bundle.sync_production(client, store, MODEL_NAME, downloader=copy_downloader)


def puts(s3: MemoryS3) -> int:
    return s3.calls.count("put_object")


def test_first_publish_writes_bundle_snapshot_and_pointer(client, store):
    predictor = tiny_predictor(0)
    client.add_version(predictor)
    client.set_alias("production", 1)

    result = publish(client, store)

    assert result.to_payload() == {"status": "published", "version": 1,
                                   "prefix": "serving/v1/"}
    pointer = bundle.load_pointer(store)
    assert pointer is not None and (pointer.version, pointer.prefix) == (1, "serving/v1/")
    assert pointer.published_at.endswith("+00:00")
    loaded, typed = bundle.load_bundle(store, pointer)
    provenance = typed.model_dump()
    table = sample_table()
    np.testing.assert_array_equal(loaded.predict_table(table), predictor.predict_table(table))
    assert provenance["model_name"] == MODEL_NAME
    assert provenance["version"] == 1
    assert provenance["aliases"] == ["production"]
    assert provenance["run_id"] == "run0001"
    assert provenance["run_name"] == "train-manual-1"
    assert provenance["artifact_uri"].endswith("run0001/model")
    assert provenance["trained_at"] == "2023-11-14T22:14:20+00:00"
    assert provenance["data_window"] == "parquet parts 0-1"
    assert provenance["metrics"] == {"holdout_auc": 0.7, "holdout_logloss": 0.49}

    stored = bundle.load_registry_snapshot(store)
    assert stored is not None
    snapshot = stored.model_dump()
    assert snapshot["production_version"] == 1
    [v1] = snapshot["versions"]
    assert v1["aliases"] == ["production"] and v1["status"] == "production"
    assert v1["run_name"] == "train-manual-1" and v1["status_reason"] == "why 1"
    assert "train_logloss_curve" not in v1["metrics"]
    assert v1["created_at"].startswith("2023-11-14T")


@pytest.mark.parametrize("again", ["publish", "sync"])
def test_second_publish_is_a_no_op(client, store, s3, again):
    """...and so is the sync at the start of an execution while serving follows."""
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    publish(client, store)
    before = puts(s3)

    result = publish(client, store) if again == "publish" else sync(client, store)

    assert result.to_payload() == {"status": "unchanged", "version": 1,
                                   "prefix": "serving/v1/"}
    assert puts(s3) == before


def test_promotion_moves_pointer_and_keeps_old_bundle_immutable(client, store, s3):
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    publish(client, store)
    v1_model = s3.objects["serving/v1/model.ubj"]
    client.add_version(tiny_predictor(1))
    client.set_alias("previous", 1)
    client.set_alias("production", 2)

    result = publish(client, store)

    assert (result.status, result.version) == ("published", 2)
    assert bundle.load_pointer(store).prefix == "serving/v2/"
    assert s3.objects["serving/v1/model.ubj"] == v1_model
    statuses = {v.version: v.status for v in bundle.load_registry_snapshot(store).versions}
    assert statuses == {2: "production", 1: "previous"}


def test_rollback_republishes_the_existing_bundle_without_downloading(client, store, s3):
    for seed in (0, 1):
        client.add_version(tiny_predictor(seed))
    client.set_alias("production", 1)
    publish(client, store)
    client.set_alias("production", 2)
    publish(client, store)
    v1_bytes = s3.objects["serving/v1/model.ubj"]
    client.set_alias("production", 1)

    result = bundle.publish_production(client, store, MODEL_NAME,
                                       downloader=_must_not_download)

    assert (result.status, result.version) == ("published", 1)
    assert bundle.load_pointer(store).version == 1
    assert s3.objects["serving/v1/model.ubj"] == v1_bytes


def _must_not_download(uri: str, dst: Path) -> Path:
    raise AssertionError(f"bundle exists, nothing should be downloaded (asked for {uri})")


def test_no_production_alias_refreshes_snapshot_then_raises(client, store):
    client.add_version(tiny_predictor(0), status="rejected")

    with pytest.raises(NoModelError):
        publish(client, store)

    snapshot = bundle.load_registry_snapshot(store)
    assert [(v.version, v.status) for v in snapshot.versions] == [(1, "rejected")]
    assert snapshot.production_version is None
    assert bundle.load_pointer(store) is None


def test_unregistered_model_is_no_model(client, store):
    with pytest.raises(NoModelError):
        publish(client, store)
    assert bundle.load_registry_snapshot(store).versions == []


def test_snapshot_follows_pagination_and_reuses_finished_runs(client, store):
    for seed in (0, 1, 2):
        client.add_version(tiny_predictor(seed))
    client.set_alias("production", 3)
    publish(client, store)
    client.calls.clear()
    client.versions[2].tags["status"] = "rejected"

    previous = bundle.load_registry_snapshot(store)
    snap = registry.snapshot(client, MODEL_NAME, previous=previous)

    assert [v.version for v in snap.versions] == [3, 2, 1]
    assert snap.versions[1].status == "rejected"
    assert "get_run" not in client.calls
    assert client.calls.count("search_model_versions") == 2      # page size 2


def test_unchanged_snapshot_is_not_rewritten(client, store, s3):
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    publish(client, store)
    etag = s3.objects[layout.REGISTRY_SNAPSHOT_KEY][1]

    publish(client, store)

    assert s3.objects[layout.REGISTRY_SNAPSHOT_KEY][1] == etag


def test_an_incomplete_bundle_is_completed(client, store, s3):
    """A crash after the first write: the retry finishes the bundle."""
    predictor = tiny_predictor(0)
    client.add_version(predictor)
    client.set_alias("production", 1)
    store.put("serving/v1/model.ubj", predictor.model_bytes())

    result = publish(client, store)

    assert result.status == "published"
    assert {"serving/v1/feature_transform.json", "serving/v1/provenance.json"} <= set(s3.objects)


def test_a_bundle_that_does_not_load_is_never_published(client, store, s3, tmp_path):
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    transform = tmp_path / "run0001" / "feature_transform" / "feature_transform.json"
    doc = json.loads(transform.read_text())
    transform.write_text(json.dumps({**doc, "format_version": 999}))

    with pytest.raises(ValidationError):
        publish(client, store)

    assert not [k for k in s3.objects if k.startswith("serving/v1/")]
    assert bundle.load_pointer(store) is None


class RacingS3(MemoryS3):
    """Another reload moves the pointer between our read and our conditional write."""

    def __init__(self, rival: dict[str, Any]) -> None:
        super().__init__()
        self.rival: dict[str, Any] | None = rival

    def put_object(self, Bucket: str, Key: str, **kwargs: Any) -> dict[str, Any]:
        if Key == layout.PRODUCTION_POINTER_KEY and self.rival is not None:
            rival, self.rival = self.rival, None
            super().put_object(Bucket=Bucket, Key=Key, Body=json.dumps(rival).encode())
        return super().put_object(Bucket=Bucket, Key=Key, **kwargs)


def test_losing_the_pointer_race_re_resolves(client):
    s3 = RacingS3({"version": 1, "prefix": "serving/v1/", "published_at": "rival"})
    store = Store(s3, "bucket")
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)

    result = publish(client, store)

    assert result.status == "unchanged"          # the rival already published v1
    assert bundle.load_pointer(store).published_at == "rival"


def test_persistent_conflicts_surface_as_conflict_error(client, store, s3):
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    s3.fail_next = [("put_object", "PreconditionFailed")] * 3

    with pytest.raises(ConflictError):
        publish(client, store)


def test_load_pointer_absent_and_malformed(store):
    assert bundle.load_pointer(store) is None
    store.put(layout.PRODUCTION_POINTER_KEY, b'{"prefix": "serving/v1/"}')
    with pytest.raises(DataError):
        bundle.load_pointer(store)


def test_load_bundle_reports_a_missing_file(store):
    pointer = bundle.Pointer(7, "serving/v7/", "", '"x"')
    with pytest.raises(DataError, match="incomplete"):
        bundle.load_bundle(store, pointer)


# ------------------------------------------------------------- serving follows the registry

def test_sync_before_any_production_version_is_an_answer_not_an_error(client, store, s3):
    assert sync(client, store).to_payload() == {
        "status": "no_model",
        "reason": f"no version of {MODEL_NAME!r} has the alias 'production'"}
    client.add_version(tiny_predictor(0), status="rejected")

    result = sync(client, store)

    assert result.status == "no_model"
    assert bundle.load_pointer(store) is None
    assert [v.version for v in bundle.load_registry_snapshot(store).versions] == [1]
    assert not [k for k in s3.objects if k.startswith("serving/v")]


def test_a_promotion_whose_reload_failed_shows_in_the_snapshot_and_heals_at_sync(client,
                                                                                  store):
    """The train step refreshes the snapshot after its gate; the reload after it fails;
    the snapshot already names the new production version (what /health compares with),
    and the next execution's sync publishes it."""
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    publish(client, store)
    client.add_version(tiny_predictor(1))
    client.set_alias("previous", 1)
    client.set_alias("production", 2)

    snap = bundle.refresh_registry_snapshot(client, store, MODEL_NAME)   # train, after the gate

    assert snap.production_version == 2
    assert bundle.load_registry_snapshot(store).production_version == 2
    assert bundle.load_pointer(store).version == 1                     # serving is behind
    result = sync(client, store)
    assert (result.status, result.version) == ("published", 2)
    assert bundle.load_pointer(store).version == 2


def test_refreshing_the_snapshot_exports_nothing_and_survives_a_lost_race(client, store, s3):
    client.add_version(tiny_predictor(0))
    client.set_alias("production", 1)
    s3.fail_next = [("put_object", "PreconditionFailed")]

    snap = bundle.refresh_registry_snapshot(client, store, MODEL_NAME)

    assert snap.production_version == 1
    assert bundle.load_registry_snapshot(store).production_version == 1
    assert not [k for k in s3.objects if k.startswith("serving/v")]
    assert bundle.load_pointer(store) is None
