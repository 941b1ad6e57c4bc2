"""Training: a bounded window of the newest Parquet parts -> a fitted `Predictor` with
holdout metrics.

* Window: Criteo rows are chronological, so the newest part is the holdout (what the
  model will face next) and training uses the parts before it, newest first, until
  `max_train_rows` is reached (the oldest part used is cut to its newest rows). With a
  single part, its newest `SINGLE_PART_HOLDOUT_SHARE` is held out instead. The bound is
  what keeps one run inside Lambda's 900 s / 10,240 MB (see `DEFAULT_MAX_TRAIN_ROWS`).
* Data path: Parquet bytes -> Arrow table -> `FeatureTransform.encode` (NumPy float32)
  -> `QuantileDMatrix`; no pandas frame is built.
* Model: XGBoost `hist` with the seed's settings (max_depth 8, eta 0.15, up to 200
  rounds) plus early stopping on the holdout logloss (see `TrainParams`); the booster
  is cut back to its best round, so the saved model is the one that was measured.
  Choosing one integer (the round count) on the holdout makes its holdout logloss very
  slightly optimistic; the promotion gate compares against the production model on
  the same rows, so this is the same small edge for every candidate.

This module knows nothing about MLflow (see `ctr.registry`).
"""

from __future__ import annotations

import hashlib
import resource
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
from ctr.schema import LABEL
from ctr.storage import Store

# Fit time and peak memory grow about linearly with the rows; 4M training rows need
# ~5 GB and ~2 min single-threaded (docs/measurements.md, "Training window sizing"):
# well inside Lambda's 10,240 MB and 900 s, with margin for real Criteo data (wider
# vocabularies, more rounds) and slower networks to the tracking server.
DEFAULT_MAX_TRAIN_ROWS = 4_000_000
SINGLE_PART_HOLDOUT_SHARE = 0.2
CURVE_SAMPLE_ROWS = 100_000


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
class Part:
    """One Parquet part used by a run (logged as an MLflow dataset input)."""

    key: str
    index: int
    rows: int          # rows used from this part
    digest: str        # sha256 of the object's bytes, first 16 hex chars
    role: str          # "training" or "holdout"


@dataclass
class Window:
    train: pa.Table
    holdout: pa.Table
    parts: list[Part]

    @property
    def first_part(self) -> int:
        return min(p.index for p in self.parts)

    @property
    def last_part(self) -> int:
        return max(p.index for p in self.parts)

    def describe(self) -> str:
        """Human-readable data window, stored as the version tag `data_window`."""
        return (f"parquet parts {self.first_part}-{self.last_part}, "
                f"{self.train.num_rows + self.holdout.num_rows} rows "
                f"(train {self.train.num_rows}, holdout {self.holdout.num_rows} "
                f"from part {self.last_part})")


@dataclass
class FitResult:
    predictor: Predictor
    params: TrainParams
    metrics: dict[str, float]
    holdout_labels: np.ndarray
    holdout_predictions: np.ndarray
    evals_result: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    window: Window | None = None


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
    return pq.read_table(pa.BufferReader(body)), digest


def load_window(store: Store, max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS) -> Window:
    """Read the holdout part and as many earlier parts (newest first) as fit in
    `max_train_rows`."""
    if max_train_rows < 1:
        raise DataError("max_train_rows must be positive", max_train_rows=max_train_rows)
    keys = list_parts(store)
    if not keys:
        raise NotFoundError("no parquet parts to train on", prefix=layout.PARQUET_PREFIX)
    newest, digest = _read_part(store, keys[-1])
    newest_index = layout.index_of(keys[-1])
    if len(keys) == 1:
        cut = newest.num_rows - max(1, int(newest.num_rows * SINGLE_PART_HOLDOUT_SHARE))
        holdout = newest.slice(cut)
        train_pieces = [newest.slice(0, min(cut, max_train_rows))]
        parts = [Part(keys[-1], newest_index, newest.num_rows, digest, "training+holdout")]
        return Window(pa.concat_tables(train_pieces), holdout, parts)

    holdout = newest
    parts = [Part(keys[-1], newest_index, newest.num_rows, digest, "holdout")]
    pieces: list[pa.Table] = []
    remaining = max_train_rows
    for key in reversed(keys[:-1]):
        table, digest = _read_part(store, key)
        take = min(table.num_rows, remaining)
        pieces.append(table.slice(table.num_rows - take))     # newest rows of the part
        parts.append(Part(key, layout.index_of(key), take, digest, "training"))
        remaining -= take
        if remaining == 0:
            break
    pieces.reverse()                                           # chronological order
    return Window(pa.concat_tables(pieces).combine_chunks(), holdout, parts)


def labels(table: pa.Table) -> np.ndarray:
    return table.column(LABEL).to_numpy().astype(np.float32)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit(train: pa.Table, holdout: pa.Table, params: TrainParams | None = None
        ) -> FitResult:
    """Fit the transform on `train`, train the booster with early stopping on
    `holdout`, and measure it on `holdout`."""
    params = params or TrainParams()
    if train.num_rows == 0 or holdout.num_rows == 0:
        raise DataError("training and holdout sets must both have rows",
                        train_rows=train.num_rows, holdout_rows=holdout.num_rows)
    started = time.perf_counter()
    y_train = labels(train)
    y_hold = labels(holdout)
    transform, x_train = FeatureTransform.fit_transform(
        train, min_count=params.min_count, max_categories=params.max_categories)
    assert x_train is not None
    dtrain = as_quantile_dmatrix(x_train, y_train, max_bin=params.max_bin)
    # Evaluation sets are plain DMatrix: XGBoost scores a QuantileDMatrix eval set about
    # 7x slower per round (measured), and the holdout is exactly what serving will see.
    # The learning curve's training side is the newest CURVE_SAMPLE_ROWS training rows;
    # scoring all of them every round would cost a quarter of the boosting time.
    sample = slice(max(0, train.num_rows - CURVE_SAMPLE_ROWS), None)
    dcurve = as_dmatrix(x_train[sample], y_train[sample])
    del x_train                    # the quantised copy inside dtrain is all XGBoost needs
    dhold = as_dmatrix(transform.encode(holdout), y_hold)
    booster_params = params.booster_params()
    evals_result: dict[str, dict[str, list[float]]] = {}
    callbacks: Sequence[xgb.callback.TrainingCallback] = [
        xgb.callback.EarlyStopping(rounds=params.early_stopping_rounds, save_best=True,
                                   data_name="holdout", metric_name="logloss",
                                   min_delta=params.early_stopping_min_delta)
    ] if params.early_stopping_rounds > 0 and params.num_boost_round > 1 else []
    booster = xgb.train(booster_params, dtrain, num_boost_round=params.num_boost_round,
                        evals=[(dcurve, "train"), (dhold, "holdout")],
                        evals_result=evals_result, verbose_eval=False,
                        callbacks=list(callbacks))
    predictions = booster.predict(dhold).astype(np.float64)
    seconds = time.perf_counter() - started
    result_metrics = {
        "holdout_logloss": metrics.logloss(y_hold, predictions),
        "holdout_auc": metrics.auc(y_hold, predictions),
        "calibration_error": metrics.calibration_error(y_hold, predictions),
        "train_rows": float(train.num_rows),
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


def train(store: Store, params: TrainParams | None = None,
          max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS) -> FitResult:
    """Load the newest window from the store and fit on it."""
    window = load_window(store, max_train_rows)
    result = fit(window.train, window.holdout, params)
    result.window = window
    return result


def params_dict(params: TrainParams, max_train_rows: int) -> dict[str, str | int | float]:
    return {**asdict(params), "max_train_rows": max_train_rows, "tree_method": "hist",
            "objective": "binary:logistic", "xgboost_version": xgb.__version__}
