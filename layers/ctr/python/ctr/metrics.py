"""Binary-classification metrics in plain NumPy (the train function ships without
scikit-learn). Shared by training, the promotion gate, plots and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

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


# --------------------------------------------------------------------------- paired evidence

Z95 = 1.6448536269514722          # one-sided 95% quantile of the standard normal
MAX_BLOCKS = 50
ROWS_PER_BLOCK = 1_000


def t95(df: int) -> float:
    """One-sided 95% quantile of Student's t with `df` degrees of freedom (Cornish-Fisher
    expansion around the normal quantile; within 0.002 of the exact value for df >= 5, so
    no scipy is needed)."""
    if df < 1:
        return float("inf")
    z = Z95
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def per_row_logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's negative log-likelihood (clipped as in `logloss`); their mean is `logloss`."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def n_blocks(rows: int) -> int:
    """How many contiguous time blocks a holdout of `rows` rows is cut into: one per
    ROWS_PER_BLOCK rows, between 10 and MAX_BLOCKS (never more than the rows)."""
    return max(1, min(rows, max(10, min(MAX_BLOCKS, rows // ROWS_PER_BLOCK))))


@dataclass(frozen=True)
class PairedBound:
    """Mean of a paired per-row difference with one-sided 95% bounds from batch means
    over contiguous time blocks (rows stay in time order)."""

    mean: float
    upper: float           # one-sided 95% upper bound of the mean
    lower: float           # one-sided 95% lower bound of the mean
    rows: int
    blocks: int


def batch_means_bound(block_values: np.ndarray, rows: int) -> PairedBound:
    """Bounds from one value per block: mean +- t95(B-1) * sd / sqrt(B)."""
    values = np.asarray(block_values, dtype=np.float64)
    values = values[np.isfinite(values)]
    b = values.size
    if b == 0:
        return PairedBound(float("nan"), float("inf"), float("-inf"), rows, 0)
    mean = float(values.mean())
    if b == 1:
        return PairedBound(mean, float("inf"), float("-inf"), rows, 1)
    half = t95(b - 1) * float(values.std(ddof=1)) / np.sqrt(b)
    return PairedBound(mean, mean + half, mean - half, rows, b)


def paired_difference(diff: np.ndarray) -> PairedBound:
    """Mean per-row difference (e.g. candidate logloss - production logloss on the same
    rows, in time order) with batch-means bounds: the rows are cut into `n_blocks`
    contiguous blocks and the block means treated as independent. Neighbouring rows of
    click logs are correlated (same hour, same campaigns), which a per-row normal
    approximation would ignore; blocks of a thousand rows and more absorb that
    correlation, and unlike a bootstrap the result is deterministic, so a retried step
    decides the same way."""
    diff = np.asarray(diff, dtype=np.float64)
    blocks = np.array_split(diff, n_blocks(diff.size)) if diff.size else []
    return batch_means_bound(np.array([b.mean() for b in blocks]), diff.size)


def paired_auc_difference(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> PairedBound:
    """AUC(a) - AUC(b) per time block, with the same batch-means bounds (blocks that hold
    one class only have no AUC and are left out)."""
    y = np.asarray(y)
    idx = np.array_split(np.arange(y.size), n_blocks(y.size)) if y.size else []
    values = np.array([auc(y[i], p_a[i]) - auc(y[i], p_b[i]) for i in idx])
    return batch_means_bound(values, int(y.size))


def calibration_ratio(y: np.ndarray, p: np.ndarray) -> float:
    """Mean prediction / observed positive rate (1 = calibrated on average)."""
    rate = float(np.mean(y))
    return float(np.mean(p)) / rate if rate > 0 else float("inf")


def calibration_interval(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """(ratio, lower, upper): the calibration ratio with one-sided 95% bounds from the
    batch-means bounds of the per-row difference p - y (ratio = 1 + mean(p - y) / rate).
    On a small holdout the observed rate itself is noisy; the bounds say how much."""
    y = np.asarray(y, dtype=np.float64)
    rate = float(np.mean(y)) if y.size else 0.0
    if rate <= 0:
        return float("inf"), float("inf"), float("inf")
    d = paired_difference(np.asarray(p, dtype=np.float64) - y)
    return 1 + d.mean / rate, 1 + d.lower / rate, 1 + d.upper / rate
