"""A booster plus the feature transform it was trained with: the unit that training
saves, the registry logs, reload exports and serving loads (`ctr.bundle`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import xgboost as xgb

from ctr.features import FeatureTransform, as_dmatrix
from ctr.schema import FEATURE_COLUMNS

# File names of a saved predictor, in a directory and in a serving bundle.
MODEL_FILE = "model.ubj"
TRANSFORM_FILE = "feature_transform.json"


@dataclass(frozen=True)
class Explanation:
    """Per row, in logit (margin) units: `base` (XGBoost's bias term: the model's
    expected margin) and `contributions` (rows, 39) per raw field in FEATURE_COLUMNS
    order; base + the row's contributions = the logit of `probabilities`."""

    probabilities: np.ndarray
    base: np.ndarray
    contributions: np.ndarray


# Encoded feature j < 39 comes from raw field j (I1..I13 as numbers, C1..C26 as rates);
# the last one, log_odds_sum, from all 39 fields (tested in tests/unit/test_explain.py).


class Predictor:
    """A booster plus the transform it was trained with: the unit that is saved,
    shipped to serving and loaded there."""

    def __init__(self, booster: xgb.Booster, transform: FeatureTransform) -> None:
        self.booster = booster
        self.transform = transform
        self.threads: int | None = None    # None: XGBoost's default (every core)

    def use_threads(self, threads: int) -> None:
        """Threads for every XGBoost call of this predictor: predictions and the
        explanation's DMatrix. With 1, no OpenMP team is ever started, which also keeps
        a process safe to fork (SnapStart's local emulation) after it predicted."""
        self.booster.set_param({"nthread": threads})
        self.threads = threads

    def predict_table(self, table: pa.Table) -> np.ndarray:
        if table.num_rows == 0:
            return np.empty(0, dtype=np.float64)
        # In-place prediction on the float32 array: the same trees and the same float32
        # inputs as a DMatrix (identical results, tested), without copying the rows into
        # one -- for a single row that copy was most of the prediction time.
        encoded = self.transform.encode(table)
        return np.asarray(self.booster.inplace_predict(encoded, missing=np.nan),
                          dtype=np.float64)

    def explain_table(self, table: pa.Table) -> Explanation:
        """Probabilities plus XGBoost's exact per-feature contributions (TreeSHAP,
        `pred_contribs`) mapped back to the 39 raw fields.

        The 39 encoded columns that come from one raw field each give it their
        contribution. The `log_odds_sum` column is built from all 39 fields (the sum of
        their log-odds terms, `FeatureTransform.encode_with_terms`); its contribution is
        shared among them in proportion to |term|: how far each field moved that sum.
        The sharing keeps the total, so base + contributions is still the margin."""
        n = table.num_rows
        if n == 0:
            empty = np.empty(0, dtype=np.float64)
            return Explanation(empty, empty, np.empty((0, len(FEATURE_COLUMNS))))
        encoded, terms = self.transform.encode_with_terms(table)
        probabilities = np.asarray(self.booster.inplace_predict(encoded, missing=np.nan),
                                   dtype=np.float64)
        phi = np.asarray(self.booster.predict(as_dmatrix(encoded, nthread=self.threads),
                                             pred_contribs=True),
                         dtype=np.float64)
        n_raw = len(FEATURE_COLUMNS)
        contributions = phi[:, :n_raw].copy()
        weight = np.abs(terms)
        total = weight.sum(axis=1, keepdims=True)
        share = np.divide(weight, total, out=np.full_like(weight, 1.0 / n_raw),
                          where=total > 0)
        contributions += share * phi[:, n_raw:n_raw + 1]
        return Explanation(probabilities, phi[:, -1], contributions)

    def model_bytes(self) -> bytes:
        return bytes(self.booster.save_raw(raw_format="ubj"))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self.model_bytes())
        (directory / TRANSFORM_FILE).write_bytes(self.transform.to_json())

    @classmethod
    def load(cls, directory: Path) -> Predictor:
        return cls.from_bytes((directory / MODEL_FILE).read_bytes(),
                              (directory / TRANSFORM_FILE).read_bytes())

    @classmethod
    def from_bytes(cls, model_bytes: bytes, transform_json: bytes) -> Predictor:
        booster = xgb.Booster()
        booster.load_model(bytearray(model_bytes))
        return cls(booster, FeatureTransform.from_json(transform_json))
