"""Training on a window far larger than memory would allow if it were held at once.

`fit_window` gives the same model inputs as `load_window` + `fit` (same window, same
three-way cut, same transform state, the same training features row for row) but never
holds the training rows together:

1. Plan: the window is cut from Parquet footers alone (`part_rows`: two ranged GETs per
   part), exactly as `load_window` cuts it -- newest `max_rows` rows, then training,
   validation and holdout in time order (`WindowSpec.sizes`).
2. Statistics: the training rows are read part by part, in batches of `batch_rows`,
   into a `ctr.stream_features.StreamFit` (counts add up; the transform it gives equals
   `FeatureTransform.fit_transform` on the concatenated rows).
3. Matrix: XGBoost builds a `QuantileDMatrix` from a `DataIter` over the training rows;
   each batch is read, encoded out of fold (`StreamFit.encode_training`) and handed over
   one at a time. XGBoost walks the iterator several times (4 passes measured with
   xgboost 3.4), so the first pass writes each encoded batch to a spill directory (local
   disk, /tmp on Lambda: 160 bytes a row) and the later passes memory-map it; what stays
   in memory is XGBoost's quantised matrix (one byte per feature and row).
4. Validation (early stopping) is encoded with the full statistics into a plain DMatrix,
   as in `fit`; the holdout is read as Arrow (the promotion gate scores it) and
   predicted batch by batch.

The rows of the three roles come from disjoint ranges of the plan (tested), recorded
with each part's digest; a part whose bytes change between two reads is an error.
Peak memory: the quantised training matrix, the validation matrix and the holdout table
grow with the window; the Arrow rows, the float features and the fit temporaries are
bounded by one part and one batch.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

from ctr import layout, metrics
from ctr.errors import DataError
from ctr.features import FEATURE_NAMES, N_FEATURES, as_dmatrix
from ctr.predictor import Predictor
from ctr.storage import Store
from ctr.stream_features import StreamFit
from ctr.training import (
    CURVE_SAMPLE_ROWS,
    FitResult,
    Slice,
    TrainParams,
    WindowSpec,
    WindowViews,
    labels,
    part_rows,
    peak_rss_mb,
    train_booster,
    window_parts,
)

# Rows per batch handed to XGBoost: 262,144 rows are 42 MB of float features.
DEFAULT_BATCH_ROWS = 1 << 18
ROLES = ("training", "validation", "holdout")


@dataclass
class StreamWindow(WindowViews):
    """The window of a streamed run: its slices (digests filled in as parts are read)
    and the holdout rows, which the promotion gate scores."""

    slices: list[Slice]
    holdout: pa.Table = field(default_factory=lambda: pa.table({}))


def plan_window(store: Store, spec: WindowSpec | None = None) -> StreamWindow:
    """The window `load_window` would read, cut from the parts' footers (no digests
    yet: they are filled in when each part is read)."""
    spec, keys = window_parts(store, spec)
    pieces: list[tuple[str, int, int]] = []                # (key, offset, rows), newest first
    remaining = spec.max_rows
    for key in reversed(keys):
        rows = part_rows(store, key)
        take = min(rows, remaining)
        pieces.append((key, rows - take, take))
        remaining -= take
        if remaining == 0:
            break
    pieces.reverse()
    total = sum(rows for *_, rows in pieces)
    n_train, n_val, _ = spec.sizes(total)
    bounds = {"training": (0, n_train), "validation": (n_train, n_train + n_val),
              "holdout": (n_train + n_val, total)}
    slices: list[Slice] = []
    start = 0
    for key, offset, rows in pieces:
        end = start + rows
        for role, (lo, hi) in bounds.items():
            a, b = max(lo, start), min(hi, end)
            if a < b:
                slices.append(Slice(key, layout.index_of(key), offset + a - start, b - a,
                                    "", role))
        start = end
    return StreamWindow(slices)


class _PartReader:
    """Reads parts from the store, remembering each part's digest: a part that changes
    between two reads of one run is an error (parts are written once)."""

    def __init__(self, store: Store, window: StreamWindow) -> None:
        self.store, self.window = store, window
        self.digests: dict[str, str] = {}

    def read(self, key: str) -> pq.ParquetFile:
        body = self.store.get(key).body
        digest = hashlib.sha256(body).hexdigest()[:16]
        known = self.digests.setdefault(key, digest)
        if known != digest:
            raise DataError(f"{key} changed while training read it", key=key)
        self.window.slices = [s if s.key != key else
                              Slice(s.key, s.index, s.offset, s.rows, digest, s.role)
                              for s in self.window.slices]
        return pq.ParquetFile(pa.BufferReader(body))

    def batches(self, role: str, batch_rows: int, newest: int | None = None
                ) -> Iterator[tuple[pa.Table, int]]:
        """(rows, index of the first row within the role) of one role, in time order,
        at most `batch_rows` at a time, decoded batch by batch (a whole part is never
        decoded at once); `newest`: only the role's newest rows."""
        slices = [s for s in self.window.slices if s.role == role]
        total = sum(s.rows for s in slices)
        skip = 0 if newest is None else max(0, total - newest)
        first = 0                                   # role index of the slice's first row
        for s in slices:
            if first + s.rows > skip:
                lo = s.offset + max(0, skip - first)        # part rows [lo, hi) wanted
                hi = s.offset + s.rows
                row = 0                                     # part row of the batch start
                for batch in self.read(s.key).iter_batches(batch_size=batch_rows):
                    a, b = max(lo, row), min(hi, row + batch.num_rows)
                    if a < b:
                        yield (pa.Table.from_batches([batch]).slice(a - row, b - a),
                               first + a - s.offset)
                    row += batch.num_rows
                    if row >= hi:
                        break
            first += s.rows

    def table(self, role: str, newest: int | None = None) -> pa.Table:
        parts = [t for t, _ in self.batches(role, DEFAULT_BATCH_ROWS, newest)]
        return pa.concat_tables(parts).combine_chunks() if parts else pa.table({})


class _TrainingBatches(xgb.DataIter):
    """The training rows for XGBoost, one encoded batch at a time. The first pass
    encodes and spills each batch to `spill_dir`; later passes memory-map the spill."""

    def __init__(self, reader: _PartReader, stats: StreamFit, batch_rows: int,
                 spill_dir: Path, on_batch: Callable[[np.ndarray], None] | None = None
                 ) -> None:
        self.reader, self.stats, self.batch_rows = reader, stats, batch_rows
        self.spill_dir, self.on_batch = spill_dir, on_batch
        self.spilled: list[tuple[Path, Path]] = []
        self.passes = 0
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        super().__init__(release_data=True)

    def _first_pass(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for table, first in self.reader.batches("training", self.batch_rows):
            x = self.stats.encode_training(table, first)
            y = labels(table)
            del table
            paths = (self.spill_dir / f"x{len(self.spilled):05d}.npy",
                     self.spill_dir / f"y{len(self.spilled):05d}.npy")
            np.save(paths[0], x)
            np.save(paths[1], y)
            self.spilled.append(paths)
            yield x, y

    def _spilled(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x_path, y_path in self.spilled:
            yield np.load(x_path, mmap_mode="r"), np.load(y_path)

    def reset(self) -> None:
        self._it = None

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._it is None:
            self.passes += 1
            self._it = self._first_pass() if self.passes == 1 else self._spilled()
        batch = next(self._it, None)
        if batch is None:
            return False
        x, y = batch
        if self.on_batch is not None:
            self.on_batch(x)
        input_data(data=x, label=y, feature_names=FEATURE_NAMES)
        return True


def fit_window(store: Store, spec: WindowSpec | None = None,
               params: TrainParams | None = None, *, batch_rows: int = DEFAULT_BATCH_ROWS,
               spill_dir: str | None = None,
               on_batch: Callable[[np.ndarray], None] | None = None
               ) -> tuple[StreamWindow, FitResult]:
    """Plan the newest window, fit the transform over its training rows part by part,
    train on the streamed matrix with early stopping on the validation rows, and
    measure on the holdout (see the module). `on_batch` sees every training batch
    handed to XGBoost (tests)."""
    params = params or TrainParams()
    window = plan_window(store, spec)
    started = time.perf_counter()
    reader = _PartReader(store, window)
    n_train, n_val, n_hold = (window.role_rows(r) for r in ROLES)
    if min(n_train, n_val, n_hold) == 0:
        raise DataError("training, validation and holdout sets must all have rows",
                        train_rows=n_train, validation_rows=n_val, holdout_rows=n_hold)
    stats = StreamFit(n_train, min_count=params.min_count,
                      max_categories=params.max_categories)
    for table, _ in reader.batches("training", batch_rows):
        stats.add(table)
    transform = stats.finish()
    with tempfile.TemporaryDirectory(prefix="ctr-train-", dir=spill_dir) as spill:
        batches = _TrainingBatches(reader, stats, batch_rows, Path(spill), on_batch)
        threads = {"nthread": params.nthread} if params.nthread else {}
        dtrain = xgb.QuantileDMatrix(batches, missing=np.nan, max_bin=params.max_bin,
                                     **threads)
        del batches
    # The learning curve's training side: the newest CURVE_SAMPLE_ROWS training rows.
    curve = [(stats.encode_training(t, first), labels(t))
             for t, first in reader.batches("training", batch_rows, CURVE_SAMPLE_ROWS)]
    dcurve = as_dmatrix(np.concatenate([x for x, _ in curve]),
                        np.concatenate([y for _, y in curve]))
    del curve
    x_val = np.empty((n_val, N_FEATURES), dtype=np.float32)
    y_val = np.empty(n_val, dtype=np.float32)
    for table, first in reader.batches("validation", batch_rows):
        x_val[first:first + table.num_rows] = transform.encode(table)
        y_val[first:first + table.num_rows] = labels(table)
    dval = as_dmatrix(x_val, y_val)
    del x_val
    booster, evals_result = train_booster(params, dtrain, dcurve, dval)
    del dtrain, dcurve, dval
    window.holdout = reader.table("holdout")
    y_hold = labels(window.holdout)
    predictions = np.concatenate([
        booster.predict(as_dmatrix(transform.encode(window.holdout.slice(i, batch_rows))))
        for i in range(0, n_hold, batch_rows)]).astype(np.float64)
    seconds = time.perf_counter() - started
    result_metrics = {
        "holdout_logloss": metrics.logloss(y_hold, predictions),
        "holdout_auc": metrics.auc(y_hold, predictions),
        "calibration_error": metrics.calibration_error(y_hold, predictions),
        "train_rows": float(n_train),
        "validation_rows": float(n_val),
        "holdout_rows": float(n_hold),
        # As `fit` computes it (the mean of float32 labels).
        "positive_rate": float(np.float32(transform.prior)),
        "holdout_positive_rate": float(y_hold.mean()),
        "holdout_mean_prediction": float(predictions.mean()),
        "num_trees": float(booster.num_boosted_rounds()),
        "training_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }
    return window, FitResult(Predictor(booster, transform), params, result_metrics, y_hold,
                             predictions, evals_result)


def read_role(store: Store, window: StreamWindow, role: str, newest: int | None = None
              ) -> pa.Table:
    """The rows of one role of a planned (or fitted) window, e.g. the newest training
    rows for the monitoring baseline; a part whose digest no longer matches is an
    error."""
    reader = _PartReader(store, StreamWindow(list(window.slices)))
    reader.digests = {s.key: s.digest for s in window.slices if s.digest}
    return reader.table(role, newest)


def spill_bytes_per_row() -> int:
    """Local disk a training row takes while XGBoost builds its matrix (features and
    label as float32)."""
    return N_FEATURES * 4 + 4
