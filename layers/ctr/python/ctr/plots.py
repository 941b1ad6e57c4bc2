"""Diagnostic plots of a training run, as PNG bytes (logged to MLflow as artifacts).

Matplotlib's non-interactive Agg backend is selected explicitly: Lambda has no
display, and the figures are only ever written to bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import xgboost as xgb
from matplotlib.figure import Figure

from ctr import metrics


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def roc(y: np.ndarray, p: np.ndarray) -> bytes:
    fpr, tpr = metrics.roc_curve(y, p)
    # A 1,000-point curve looks the same as a million-point one and plots fast.
    idx = np.unique(np.linspace(0, fpr.size - 1, min(fpr.size, 1000)).astype(int))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr[idx], tpr[idx], label=f"model (AUC {metrics.auc(y, p):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    ax.legend(loc="lower right")
    return _png(fig)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 20) -> bytes:
    mean_p, rate, _ = metrics.reliability(y, p, bins)
    top = float(max(mean_p.max(), rate.max(), 1e-3)) * 1.05
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot(mean_p, rate, marker="o",
            label=f"model (ECE {metrics.calibration_error(y, p, bins):.4f})")
    ax.set(xlabel="mean predicted probability (equal-mass bins)", ylabel="observed click rate",
           title="Reliability (holdout)", xlim=(0, top), ylim=(0, top))
    ax.legend(loc="upper left")
    return _png(fig)


def feature_importance(booster: xgb.Booster, top: int = 25) -> bytes:
    gain = booster.get_score(importance_type="total_gain")
    items = sorted(gain.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.25 * len(items) + 1)))
    if items:
        names, values = zip(*items, strict=True)
        ax.barh(names, values)
    ax.set(xlabel="total gain", title="Feature importance")
    return _png(fig)


def learning_curve(evals_result: Mapping[str, Mapping[str, list[float]]]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_metric in evals_result.items():
        for metric_name, values in by_metric.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=f"{name} {metric_name}")
    ax.set(xlabel="boosting round", ylabel="logloss", title="Learning curve")
    ax.legend()
    return _png(fig)


def all_plots(y: np.ndarray, p: np.ndarray, booster: xgb.Booster,
              evals_result: Mapping[str, Mapping[str, list[float]]]) -> dict[str, bytes]:
    """File name -> PNG bytes for every diagnostic plot."""
    return {
        "roc.png": roc(y, p),
        "reliability.png": reliability(y, p),
        "feature_importance.png": feature_importance(booster),
        "learning_curve.png": learning_curve(evals_result),
    }
