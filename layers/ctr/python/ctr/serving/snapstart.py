"""Lambda SnapStart for the predict function: what happens before the snapshot and
after each restore.

With SnapStart (`SnapStart: ApplyOn: PublishedVersions`), Lambda runs the function's
initialisation once when a version is published, snapshots the memory, and starts
every later execution environment from a copy of that snapshot. So whatever the
initialisation leaves in memory is shared by every copy, and the copies must refresh
what must not be shared:

* before the snapshot (`before_snapshot`): warm the heavy paths once -- read the
  production pointer, load the bundle, run one prediction (NumPy, Arrow and XGBoost's
  first-call costs) -- so a restored copy answers its first request from memory;
* after a restore (`after_restore`):
  - the random generators are reseeded from the OS (every copy would otherwise draw
    the same sequence: request ids, retry jitter);
  - the S3 client is dropped, so each copy opens its own connections (a snapshot's
    sockets are dead, and sharing one client's state across copies is wrong);
  - the model-pointer clock is reset: the copy may be restored hours after the
    snapshot, and `time.monotonic()` in the snapshot says nothing about the time
    since the pointer was read, so the first request re-reads the pointer (and loads
    a newer bundle if reload moved it meanwhile).

The hooks are registered with `snapshot_restore_py`, which Lambda's Python runtimes
(3.12+) provide, and so does the local cloud's process executor for a SnapStart
version (its snapshot template is forked per environment). Elsewhere (tests, uvicorn,
`$LATEST` locally) there is no such module and no snapshot: `register` does nothing,
and initialisation stays lazy.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from ctr.errors import DomainError
from ctr.schema import FEATURE_COLUMNS
from ctr.serving.model_cache import ModelCache

log = logging.getLogger(__name__)


def before_snapshot(cache: ModelCache) -> None:
    """Load the production model and predict once, so the snapshot holds them warm.
    No model yet (or S3 unreachable) is not an error: the first request loads it."""
    try:
        cache.refresh(force=True)
        model = cache.current
        if model is not None:
            import pyarrow as pa

            from ctr.criteo import FEATURE_SCHEMA

            empty_row = pa.Table.from_pylist([dict.fromkeys(FEATURE_COLUMNS)],
                                             schema=FEATURE_SCHEMA)
            model.predict(empty_row)
            model.predictor.explain_table(empty_row)
    except DomainError as err:
        log.warning("before snapshot: no model warmed: %s", err.message)
    cache.forget_connections()


def after_restore(cache: ModelCache) -> None:
    """Give this restored copy its own randomness, connections and pointer clock."""
    random.seed()
    cache.forget_connections()
    cache.expire_pointer()


def register(cache: ModelCache,
             runtime_hooks: tuple[Callable[..., Any], Callable[..., Any]] | None = None
             ) -> bool:
    """Register both hooks with Lambda's runtime (or with `runtime_hooks`, a pair of
    (register_before_snapshot, register_after_restore) for tests). False when there is
    no SnapStart runtime here."""
    if runtime_hooks is None:
        try:
            from snapshot_restore_py import (
                register_after_restore,
                register_before_snapshot,
            )
        except ImportError:
            return False
        runtime_hooks = (register_before_snapshot, register_after_restore)
    on_snapshot, on_restore = runtime_hooks
    on_snapshot(before_snapshot, cache)
    on_restore(after_restore, cache)
    return True
