"""Drift of a set of rows (a new Parquet part, or served traffic) against the training
baseline (`ctr.monitoring.baseline`): one score per feature, and one for the prediction.

Method: the Jensen-Shannon distance, base 2, between the baseline's bin shares and the
rows' bin shares (the same fixed bins: quantile bins + missing for integers, top-K +
other + missing for categoricals). Why not PSI (the other common choice):

* JS distance is bounded in [0, 1] (0 = same distribution, 1 = disjoint), so one
  threshold means the same for a 10-bin integer and a 22-bin categorical; PSI is
  unbounded and grows with the number of bins;
* it is symmetric and defined when a bin is empty on one side (a value that vanished,
  or a new one): PSI divides by the share and takes its log, so it needs an arbitrary
  smoothing constant that then dominates the score of exactly those bins;
* its sampling noise is known: for a sample of n rows over K bins the JS divergence of a
  stationary sample is about (K - 1) / (8 n ln 2) bits, so the distance (its square root)
  is about 0.02 at n = 10,000 and K = 22 and shrinks like 1/sqrt(n). Below `min_rows`
  rows nothing is flagged (scores are still reported), since small parts give noisy
  scores.

A feature is flagged when its distance is above the threshold (the stack parameters
DriftThreshold and PredictionDriftThreshold) on at least `min_rows` rows (DriftMinRows).
`unseen_share` (categoricals) is reported next to the score; it is the share of
non-missing values the served model's feature transform has no rate of its own for
(values seen fewer than its `min_count` times in the training window, or never): with a
top-K baseline "never seen in training" cannot be known for the tail, but what the model
learned can, and that is what matters for its predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ctr.features import FeatureTransform
from ctr.monitoring.baseline import (
    Baseline,
    cat_counts,
    int_counts,
    prediction_counts,
    unseen_share,
)
from ctr.monitoring.reports import FeatureDrift

METHOD = "jensen-shannon distance (base 2)"


@dataclass(frozen=True)
class DriftPolicy:
    """The stack parameters DriftThreshold, PredictionDriftThreshold, DriftMinRows."""

    threshold: float = 0.1
    prediction_threshold: float = 0.1
    min_rows: int = 2_000


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two histograms (normalised here); 0 for
    identical, 1 for disjoint; 0 when either side is empty (nothing to compare)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in bins: {p.shape} vs {q.shape}")
    sp, sq = p.sum(), q.sum()
    if sp <= 0 or sq <= 0:
        return 0.0
    p, q = p / sp, q / sq
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    divergence = max(0.0, (kl(p) + kl(q)) / 2)
    return float(min(1.0, np.sqrt(divergence)))


def feature_drift(table: pa.Table, baseline: Baseline, policy: DriftPolicy,
                  transform: FeatureTransform | None = None) -> list[FeatureDrift]:
    """One `FeatureDrift` per feature of the baseline, in column order."""
    enough = table.num_rows >= policy.min_rows
    out = []
    for ib in baseline.ints:
        counts = int_counts(table.column(ib.feature), ib.edges)
        score = js_distance(np.asarray(ib.freqs), counts)
        out.append(FeatureDrift(
            feature=ib.feature, kind="int", score=score, threshold=policy.threshold,
            flagged=enough and score > policy.threshold,
            missing_share=float(counts[-1] / max(table.num_rows, 1))))
    for cb in baseline.cats:
        column = table.column(cb.feature)
        counts = cat_counts(column, cb.values)
        score = js_distance(np.asarray(cb.freqs), counts)
        out.append(FeatureDrift(
            feature=cb.feature, kind="cat", score=score, threshold=policy.threshold,
            flagged=enough and score > policy.threshold,
            missing_share=float(counts[-1] / max(table.num_rows, 1)),
            unseen_share=unseen_share(column, transform, cb.feature),
            baseline_unseen_share=cb.unseen_share))
    return out


def prediction_drift(predictions: np.ndarray, baseline: Baseline,
                     policy: DriftPolicy) -> FeatureDrift | None:
    """The served model's predictions on the rows against its holdout predictions."""
    if baseline.prediction is None:
        return None
    counts = prediction_counts(np.asarray(predictions, dtype=np.float64),
                               baseline.prediction.edges)
    score = js_distance(np.asarray(baseline.prediction.freqs), counts)
    return FeatureDrift(feature="prediction", kind="prediction", score=score,
                        threshold=policy.prediction_threshold,
                        flagged=len(predictions) >= policy.min_rows
                        and score > policy.prediction_threshold)


def flagged_names(features: list[FeatureDrift]) -> list[str]:
    return [f.feature for f in features if f.flagged]
