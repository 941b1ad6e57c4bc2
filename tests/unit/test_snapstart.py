"""SnapStart hooks of the predict function (`ctr.serving.snapstart`): the snapshot holds
a warm model, and each restored copy gets its own randomness, S3 client and pointer
clock."""

from __future__ import annotations

import random
from typing import Any

from ctr import bundle
from ctr.serving import snapstart
from ctr.serving.model_cache import ModelCache
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import MODEL_NAME, FakeMlflowClient, copy_downloader, tiny_predictor


class CountingFactory:
    def __init__(self, store: Store) -> None:
        self.store, self.made = store, 0

    def __call__(self) -> Store:
        self.made += 1
        return self.store


def published(tmp_path) -> Store:
    store = Store(MemoryS3(), "bucket")
    registry = FakeMlflowClient(tmp_path / "mlflow")
    registry.set_alias("production", registry.add_version(tiny_predictor(0)))
    bundle.publish_production(registry, store, MODEL_NAME, downloader=copy_downloader)
    return store


def test_before_snapshot_loads_the_model_and_drops_the_connection(tmp_path):
    factory = CountingFactory(published(tmp_path))
    cache = ModelCache(factory, ttl=3600)
    snapstart.before_snapshot(cache)
    assert cache.current is not None and cache.current.pointer.version == 1
    assert cache._store is None and factory.made == 1


def test_before_snapshot_without_a_model_is_not_an_error():
    cache = ModelCache(lambda: Store(MemoryS3(), "bucket"), ttl=3600)
    snapstart.before_snapshot(cache)
    assert cache.current is None


def test_after_restore_reseeds_reconnects_and_rereads_the_pointer(tmp_path):
    factory = CountingFactory(published(tmp_path))
    cache = ModelCache(factory, ttl=3600)
    snapstart.before_snapshot(cache)
    assert not cache.due()                 # within the TTL in the snapshot's clock
    random.seed(1)
    snapshot_draw = random.random()
    random.seed(1)
    snapstart.after_restore(cache)
    assert random.random() != snapshot_draw
    assert cache.due() and cache.pointer_age() is None
    assert cache.get().pointer.version == 1     # re-read with a new client
    assert factory.made == 2


def test_register_uses_the_runtime_hooks_when_there_are_some():
    registered: list[tuple[str, Any, tuple[Any, ...]]] = []
    hooks = (lambda fn, *a: registered.append(("snapshot", fn, a)),
             lambda fn, *a: registered.append(("restore", fn, a)))
    cache = ModelCache(lambda: Store(MemoryS3(), "bucket"), ttl=5)
    assert snapstart.register(cache, hooks)
    assert registered == [("snapshot", snapstart.before_snapshot, (cache,)),
                          ("restore", snapstart.after_restore, (cache,))]
    assert snapstart.register(cache) is False        # no SnapStart runtime here
