"""Binary-classification metrics in plain NumPy (the train function ships without
scikit-learn). Shared by training, the promotion gate, plots and the benchmarks."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood; probabilities clipped to [1e-7, 1 - 1e-7] as
    XGBoost's own `logloss` does, so the numbers agree with its eval log."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold."""
    y = np.asarray(y)
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="mergesort")
    ps = np.asarray(p)[order]
    ys = y[order]
    distinct = np.flatnonzero(np.diff(ps)) if ps.size > 1 else np.empty(0, dtype=np.int64)
    ends = np.r_[distinct, ys.size - 1]
    tps = np.cumsum(ys)[ends]
    fps = (ends + 1) - tps
    pos, neg = max(tps[-1], 1), max(fps[-1], 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties counted as half, like scikit-learn); NaN when
    only one class is present."""
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    fpr, tpr = roc_curve(y, p)
    return float(np.trapezoid(tpr, fpr))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 20
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-mass bins of the predictions: (mean prediction, observed rate, count) per
    bin. Equal mass, not equal width: CTR predictions crowd near zero, and equal-width
    bins would leave most bins empty and one bin with most rows."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    groups = [g for g in np.array_split(order, min(bins, max(p.size, 1))) if g.size]
    mean_p = np.array([p[g].mean() for g in groups])
    rate = np.array([y[g].mean() for g in groups])
    count = np.array([g.size for g in groups])
    return mean_p, rate, count


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 20) -> float:
    """Expected calibration error: count-weighted mean |mean prediction - observed rate|
    over the equal-mass bins of `reliability`."""
    if np.asarray(p).size == 0:
        return float("nan")
    mean_p, rate, count = reliability(y, p, bins)
    return float(np.sum(count * np.abs(mean_p - rate)) / np.sum(count))


def summary(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"logloss": logloss(y, p), "auc": auc(y, p),
            "calibration_error": calibration_error(y, p)}
