"""Real rows for the page's "try a sample" button: a pool read from the newest
Parquet part, so the examples always look like the data the model was trained on."""

from __future__ import annotations

import io
import random
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

from ctr import layout
from ctr.errors import NotFoundError
from ctr.schema import to_record
from ctr.serving.model_cache import ModelCache

SAMPLE_POOL_ROWS = 1024


class SampleSource:
    """A pool of real rows from the newest Parquet part, re-read when a newer part
    appears (checked at most every `ttl` seconds)."""

    def __init__(self, cache: ModelCache, ttl: float) -> None:
        self._cache = cache
        self._ttl = ttl
        self._pool: tuple[str, pa.Table] | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def sample(self, n: int) -> tuple[str, pa.Table]:
        with self._lock:
            now = time.monotonic()
            stale = self._checked_at is None or now - self._checked_at >= self._ttl
            if self._pool is None or stale:
                self._pool = self._read_newest()
                self._checked_at = now
            key, pool = self._pool
        picks = sorted(random.sample(range(pool.num_rows), min(n, pool.num_rows)))
        return key, pool.take(pa.array(picks, pa.int64()))

    def _read_newest(self) -> tuple[str, pa.Table]:
        store = self._cache.store
        keys = [k for k in store.list_keys(layout.PARQUET_PREFIX) if k.endswith(".parquet")]
        if not keys:
            raise NotFoundError("no Parquet data yet: ingest and aggregate some data first")
        key = max(keys, key=layout.index_of)
        if self._pool is not None and self._pool[0] == key:
            return self._pool
        parquet = pq.ParquetFile(io.BytesIO(store.get(key).body))
        batch = next(parquet.iter_batches(batch_size=SAMPLE_POOL_ROWS), None)
        if batch is None:
            raise NotFoundError(f"{key} has no rows")
        return key, to_record(pa.Table.from_batches([batch]))
