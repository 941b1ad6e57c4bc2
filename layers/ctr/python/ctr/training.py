"""Training: a bounded window of the newest Parquet parts -> a fitted `Predictor` with
holdout metrics.

* Window (`WindowSpec`): Criteo rows are chronological, so the window is cut in time
  order into three slices: training rows, then a validation slice for early stopping,
  then the gate holdout -- the newest rows, what the model will face next. The holdout is
  the newest `holdout_min_rows` rows or `holdout_share` of the window, whichever is
  larger, and spans as many Parquet parts as it needs; the validation slice is
  `validation_share` of the rest. Training never sees validation or holdout rows and
  early stopping never sees the holdout, so the promotion gate judges every candidate on
  rows nothing was selected on. The exact row ranges (part, offset, count, digest) of
  all three slices are recorded (`Window.ranges`). The window holds at most `max_rows`
  rows, the bound that keeps one run inside Lambda's 900 s / 10,240 MB; a window too
  small for an honest holdout (`holdout_min_rows` more than half of it) is refused with
  `NotEnoughData`.
* Data path: Parquet bytes -> Arrow table -> `FeatureTransform.encode` (NumPy float32)
  -> `QuantileDMatrix`; no pandas frame is built. `load_window` + `fit` hold the whole
  window; the train step uses `ctr.stream_training.fit_window`, which gives the same
  window, transform and features part by part without holding the training rows.
* Model: XGBoost `hist` with the seed's settings (max_depth 8, eta 0.15, up to 200
  rounds) plus early stopping on the validation logloss (see `TrainParams`); the
  booster is cut back to its best round.

This module knows nothing about MLflow (see `ctr.registry`).
"""

from __future__ import annotations

import hashlib
import math
import resource
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

from ctr import layout, metrics
from ctr.errors import DataError, NotFoundError
from ctr.features import (
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_MIN_COUNT,
    FeatureTransform,
    as_dmatrix,
    as_quantile_dmatrix,
)
from ctr.predictor import Predictor
from ctr.schema import LABEL, read_part
from ctr.storage import Store

# The train step trains streamed (ctr.stream_training): measured on one thread, a
# 10M-row window peaked at 3.0 GB and 4M rows took 133 CPU-seconds (README, "Training
# at scale"); 10M rows stay within half of Lambda's 900 s and a third of its 10,240 MB,
# the margin kept for real Criteo data (wider vocabularies, more rounds), the gate's
# scoring and MLflow logging after the fit, and vCPUs slower than the machine measured.
DEFAULT_MAX_TRAIN_ROWS = 10_000_000
CURVE_SAMPLE_ROWS = 100_000


class NotEnoughData(DataError):
    """The window cannot give an honest holdout (or any training rows): a clean skip."""


@dataclass(frozen=True)
class WindowSpec:
    """How a training window is read and cut (the stack parameters MaxTrainRows,
    HoldoutMinRows, HoldoutShare, ValidationShare)."""

    max_rows: int = DEFAULT_MAX_TRAIN_ROWS
    # 200,000 rows put the standard error of a mean per-row logloss difference between
    # two similar models near 1e-4, ten times below the default PromotionTolerance.
    holdout_min_rows: int = 200_000
    holdout_share: float = 0.1
    validation_share: float = 0.1

    def sizes(self, window_rows: int) -> tuple[int, int, int]:
        """(training, validation, holdout) rows for a window of `window_rows` rows."""
        holdout = max(self.holdout_min_rows, math.ceil(self.holdout_share * window_rows))
        if holdout > window_rows // 2:
            raise NotEnoughData(
                f"not enough data for an honest holdout: the window has {window_rows} rows "
                f"and the holdout needs {holdout} (HoldoutMinRows {self.holdout_min_rows}, "
                "at most half the window)", window_rows=window_rows, holdout_rows=holdout)
        rest = window_rows - holdout
        validation = max(1, math.ceil(self.validation_share * rest))
        return rest - validation, validation, holdout


@dataclass(frozen=True)
class TrainParams:
    """Everything that decides the model; logged as MLflow params."""

    num_boost_round: int = 200
    # Stop after 5 rounds without a holdout logloss gain of at least 2e-4 over the best:
    # about half the boosting time for 1% of the distance between prior and
    # Bayes-optimal (docs/measurements.md, "Early stopping").
    early_stopping_rounds: int = 5
    early_stopping_min_delta: float = 2e-4
    max_depth: int = 8
    eta: float = 0.15
    max_bin: int = 256
    max_categories: int = DEFAULT_MAX_CATEGORIES
    min_count: int = DEFAULT_MIN_COUNT
    seed: int = 0
    nthread: int = 0          # 0 = every core XGBoost sees

    def booster_params(self) -> dict[str, str | int | float]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "max_bin": self.max_bin,
            "seed": self.seed,
            **({"nthread": self.nthread} if self.nthread > 0 else {}),
        }


@dataclass(frozen=True)
class Slice:
    """A contiguous row range of one Parquet part used by a run in one role."""

    key: str
    index: int
    offset: int        # first row of the part used
    rows: int          # rows used from this part
    digest: str        # sha256 of the part's bytes, first 16 hex chars
    role: str          # "training", "validation" or "holdout"

    def describe(self) -> str:
        return f"{self.key}[{self.offset}:{self.offset + self.rows}]@{self.digest}"


class WindowViews:
    """What a run records about its window, from its slices alone (and the holdout
    rows, which the promotion gate scores)."""

    slices: list[Slice]
    holdout: pa.Table

    @property
    def first_part(self) -> int:
        return min(s.index for s in self.slices)

    @property
    def last_part(self) -> int:
        return max(s.index for s in self.slices)

    def role_rows(self, role: str) -> int:
        return sum(s.rows for s in self.slices if s.role == role)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.slices)

    def ranges(self, role: str) -> str:
        """The exact rows of one role, e.g. `parquet/part_000003.parquet[0:5000]@3f2a...`."""
        return " + ".join(s.describe() for s in self.slices if s.role == role)

    def describe(self) -> str:
        """Human-readable data window, stored as the version tag `data_window`."""
        return (f"parquet parts {self.first_part}-{self.last_part}, {self.rows} rows "
                f"(train {self.role_rows('training')}, validation "
                f"{self.role_rows('validation')}, holdout {self.role_rows('holdout')})")


@dataclass
class Window(WindowViews):
    train: pa.Table
    validation: pa.Table
    holdout: pa.Table
    slices: list[Slice]


@dataclass
class FitResult:
    predictor: Predictor
    params: TrainParams
    metrics: dict[str, float]
    holdout_labels: np.ndarray
    holdout_predictions: np.ndarray
    evals_result: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def list_parts(store: Store) -> list[str]:
    """Parquet part keys, oldest first (by index, not by listing order)."""
    keys = [k for k in store.list_keys(layout.PARQUET_PREFIX) if k.endswith(".parquet")]
    return sorted(keys, key=layout.index_of)


def newest_part_index(store: Store) -> int | None:
    keys = list_parts(store)
    return layout.index_of(keys[-1]) if keys else None


def _read_part(store: Store, key: str) -> tuple[pa.Table, str]:
    body = store.get(key).body
    digest = hashlib.sha256(body).hexdigest()[:16]
    return read_part(body), digest


def part_rows(store: Store, key: str) -> int:
    """Rows of one Parquet part from its footer alone (two small ranged GETs, not the
    whole object): the footer ends with its length and the magic bytes `PAR1`."""
    head = store.head(key)
    if head is None:
        raise NotFoundError(f"{key} does not exist", key=key)
    size = int(head["ContentLength"])
    tail = store.get_range(key, size - 8, size - 1)
    footer_len = struct.unpack("<I", tail[:4])[0]
    footer = store.get_range(key, size - 8 - footer_len, size - 1)
    return int(pq.read_metadata(pa.BufferReader(b"PAR1" + footer)).num_rows)


def rows_after(store: Store, part_index: int | None, enough: int) -> int:
    """Rows in the parts newer than `part_index` (all parts when None), counted newest
    first and only until `enough` is reached."""
    total = 0
    for key in reversed(list_parts(store)):
        if part_index is not None and layout.index_of(key) <= part_index:
            break
        total += part_rows(store, key)
        if total >= enough:
            break
    return total


def window_parts(store: Store, spec: WindowSpec | None) -> tuple[WindowSpec, list[str]]:
    """The spec (default if None) and the part keys a window is cut from, oldest first;
    an error for a non-positive size or no parts."""
    spec = spec or WindowSpec()
    if spec.max_rows < 1:
        raise DataError("max_rows must be positive", max_rows=spec.max_rows)
    keys = list_parts(store)
    if not keys:
        raise NotFoundError("no parquet parts to train on", prefix=layout.PARQUET_PREFIX)
    return spec, keys


def load_window(store: Store, spec: WindowSpec | None = None) -> Window:
    """Read the newest parts (newest first) until `spec.max_rows` rows, then cut the
    window in time order into training, validation and holdout (see the module)."""
    spec, keys = window_parts(store, spec)
    pieces: list[tuple[str, int, str, pa.Table]] = []      # newest first
    remaining = spec.max_rows
    for key in reversed(keys):
        table, digest = _read_part(store, key)
        take = min(table.num_rows, remaining)
        offset = table.num_rows - take                         # the newest rows of the part
        pieces.append((key, offset, digest, table.slice(offset)))
        remaining -= take
        if remaining == 0:
            break
    pieces.reverse()                                           # chronological order
    window = pa.concat_tables([t for *_, t in pieces]).combine_chunks()
    n_train, n_val, _ = spec.sizes(window.num_rows)
    bounds = {"training": (0, n_train), "validation": (n_train, n_train + n_val),
              "holdout": (n_train + n_val, window.num_rows)}
    slices: list[Slice] = []
    start = 0                                                  # of each piece in the window
    for key, offset, digest, table in pieces:
        end = start + table.num_rows
        for role, (lo, hi) in bounds.items():
            a, b = max(lo, start), min(hi, end)
            if a < b:
                slices.append(Slice(key, layout.index_of(key), offset + a - start, b - a,
                                    digest, role))
        start = end
    return Window(window.slice(0, n_train), window.slice(n_train, n_val),
                  window.slice(n_train + n_val), slices)


def labels(table: pa.Table) -> np.ndarray:
    return table.column(LABEL).to_numpy().astype(np.float32)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit(train: pa.Table, validation: pa.Table, holdout: pa.Table,
        params: TrainParams | None = None) -> FitResult:
    """Fit the transform on `train`, train the booster with early stopping on
    `validation`, and measure it on `holdout` (which nothing here was selected on)."""
    params = params or TrainParams()
    if min(train.num_rows, validation.num_rows, holdout.num_rows) == 0:
        raise DataError("training, validation and holdout sets must all have rows",
                        train_rows=train.num_rows, validation_rows=validation.num_rows,
                        holdout_rows=holdout.num_rows)
    started = time.perf_counter()
    y_train = labels(train)
    y_val = labels(validation)
    y_hold = labels(holdout)
    transform, x_train = FeatureTransform.fit_transform(
        train, min_count=params.min_count, max_categories=params.max_categories)
    assert x_train is not None
    dtrain = as_quantile_dmatrix(x_train, y_train, max_bin=params.max_bin)
    # Evaluation sets are plain DMatrix: XGBoost scores a QuantileDMatrix eval set about
    # 7x slower per round (measured).
    # The learning curve's training side is the newest CURVE_SAMPLE_ROWS training rows;
    # scoring all of them every round would cost a quarter of the boosting time.
    sample = slice(max(0, train.num_rows - CURVE_SAMPLE_ROWS), None)
    dcurve = as_dmatrix(x_train[sample], y_train[sample])
    del x_train                    # the quantised copy inside dtrain is all XGBoost needs
    dval = as_dmatrix(transform.encode(validation), y_val)
    booster, evals_result = train_booster(params, dtrain, dcurve, dval)
    predictions = booster.predict(as_dmatrix(transform.encode(holdout))).astype(np.float64)
    seconds = time.perf_counter() - started
    result_metrics = {
        "holdout_logloss": metrics.logloss(y_hold, predictions),
        "holdout_auc": metrics.auc(y_hold, predictions),
        "calibration_error": metrics.calibration_error(y_hold, predictions),
        "train_rows": float(train.num_rows),
        "validation_rows": float(validation.num_rows),
        "holdout_rows": float(holdout.num_rows),
        "positive_rate": float(y_train.mean()),
        "holdout_positive_rate": float(y_hold.mean()),
        "holdout_mean_prediction": float(predictions.mean()),
        "num_trees": float(booster.num_boosted_rounds()),
        "training_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }
    return FitResult(Predictor(booster, transform), params, result_metrics, y_hold,
                     predictions, evals_result)


def train_booster(params: TrainParams, dtrain: xgb.DMatrix, dcurve: xgb.DMatrix,
                  dval: xgb.DMatrix) -> tuple[xgb.Booster, dict[str, dict[str, list[float]]]]:
    """Boost on `dtrain` with early stopping on `dval` (`dcurve`: the learning curve's
    training side); the booster is cut back to its best round."""
    evals_result: dict[str, dict[str, list[float]]] = {}
    callbacks: Sequence[xgb.callback.TrainingCallback] = [
        xgb.callback.EarlyStopping(rounds=params.early_stopping_rounds, save_best=True,
                                   data_name="validation", metric_name="logloss",
                                   min_delta=params.early_stopping_min_delta)
    ] if params.early_stopping_rounds > 0 and params.num_boost_round > 1 else []
    booster = xgb.train(params.booster_params(), dtrain,
                        num_boost_round=params.num_boost_round,
                        evals=[(dcurve, "train"), (dval, "validation")],
                        evals_result=evals_result, verbose_eval=False,
                        callbacks=list(callbacks))
    return booster, evals_result


def params_dict(params: TrainParams, max_train_rows: int) -> dict[str, str | int | float]:
    return {**asdict(params), "max_train_rows": max_train_rows, "tree_method": "hist",
            "objective": "binary:logistic", "xgboost_version": xgb.__version__}
