"""Training quality benchmark: this project's trainer against the seed's recipe and
against the two bounds that known-truth synthetic data makes available.

    ctr model bench --rows 2000000          (or python -m ctr_infra.bench.train)

On `rows` rows of one `ctr.synth` stream, the newest `holdout_share` is held out (rows
are time-ordered, as in Criteo), and four predictors are scored on it:

(a) this trainer: `ctr.training.fit` (feature transform + XGBoost hist + early stopping);
(b) the seed's recipe: pandas frames concatenated, `astype('category').cat.codes` per
    categorical, `xgb.train` 200 rounds, max_depth 8, eta 0.15. The seed computed codes
    on the training frame only; here they are computed on training + holdout together,
    the most favourable reading (codes computed on another frame would mean nothing);
(c) Bayes-optimal: the true click probability of every row (the best any model can do);
(d) the constant prior: the training positive rate for every row.

Normalized gap = (logloss - Bayes) / (prior - Bayes): 0 is perfect, 1 is no better
than the prior. Training seconds include everything from the Arrow table to the
trained booster (encoding, matrices, boosting). Prints a figure table, not a test.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from ctr import metrics, synth
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, LABEL
from ctr.training import TrainParams, WindowSpec, fit
from ctr_infra.bench import train_scale
from ctr_infra.bench.plan import LAMBDA_MAX_MEMORY_MB, Echo, Plan
from ctr_infra.bench.report import SectionResult, figure, markdown_table, timed

SEED_PART_ROWS = 1_000_000      # the seed concatenated one frame per 1M-line chunk


def seed_recipe(train: pa.Table, holdout: pa.Table, nthread: int = 0
                ) -> tuple[np.ndarray, float]:
    """The seed's train_model step, as written there; returns (holdout p, seconds)."""
    (booster, x_holdout), seconds = timed(_seed_fit, train, holdout, nthread)
    return booster.predict(xgb.DMatrix(x_holdout)).astype(np.float64), seconds


def _seed_fit(train: pa.Table, holdout: pa.Table, nthread: int) -> tuple[xgb.Booster, Any]:
    import pandas as pd

    frames = [train.slice(i, SEED_PART_ROWS).to_pandas()
              for i in range(0, train.num_rows, SEED_PART_ROWS)]
    frames.append(holdout.to_pandas())
    df = pd.concat(frames, ignore_index=True)
    x = df[list(FEATURE_COLUMNS)].copy()
    for c in CAT_COLUMNS:
        x[c] = x[c].astype("category").cat.codes
    y = df[LABEL]
    n = train.num_rows
    dtrain = xgb.DMatrix(x.iloc[:n], label=y.iloc[:n])
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 8, "eta": 0.15,
                         **({"nthread": nthread} if nthread > 0 else {})},
                        dtrain, num_boost_round=200)
    return booster, x.iloc[n:]


def _row(name: str, y: np.ndarray, p: np.ndarray, bayes: float, prior: float,
         seconds: float | None = None, **extra: Any) -> dict[str, Any]:
    ll = metrics.logloss(y, p)
    return {"predictor": name, "logloss": ll, "auc": metrics.auc(y, p),
            "normalized_gap": (ll - bayes) / (prior - bayes),
            "calibration_error": metrics.calibration_error(y, p),
            "training_seconds": seconds, **extra}


def run(rows: int = 2_000_000, holdout_share: float = 0.1, seed: int = 0,
        nthread: int = 0) -> dict[str, Any]:
    """Both trainers get the same number of XGBoost threads (0 = all cores)."""
    table, p_true = synth.generate_table(rows, seed=seed)
    cut = rows - int(rows * holdout_share)
    train, holdout = table.slice(0, cut), table.slice(cut)
    del table
    y = holdout.column(LABEL).to_numpy().astype(np.float64)
    y_train_rate = float(np.mean(train.column(LABEL).to_numpy()))
    bayes = metrics.logloss(y, p_true[cut:])
    prior = metrics.logloss(y, np.full(y.size, y_train_rate))

    # Early stopping on a validation slice (the newest training rows), never on the
    # holdout, exactly as the pipeline's window (ctr.training.WindowSpec) is cut.
    val_cut = train.num_rows - math.ceil(WindowSpec.validation_share * train.num_rows)
    ours = fit(train.slice(0, val_cut), train.slice(val_cut), holdout,
               TrainParams(nthread=nthread))
    seed_p, seed_seconds = seed_recipe(train, holdout, nthread)
    results = [
        _row("(a) this trainer", y, ours.holdout_predictions, bayes, prior,
             ours.metrics["training_seconds"], rounds=int(ours.metrics["num_trees"]),
             peak_rss_mb=ours.metrics["peak_rss_mb"]),
        _row("(b) seed recipe", y, seed_p, bayes, prior, seed_seconds, rounds=200),
        _row("(c) Bayes-optimal (true p)", y, p_true[cut:], bayes, prior),
        _row("(d) constant prior", y, np.full(y.size, y_train_rate), bayes, prior),
    ]
    return {"rows": rows, "train_rows": train.num_rows, "holdout_rows": holdout.num_rows,
            "seed": seed, "nthread": nthread, "xgboost": xgb.__version__, "results": results,
            "speedup_vs_seed": seed_seconds / ours.metrics["training_seconds"]}


def to_markdown(report: dict[str, Any]) -> str:
    head = (f"{report['rows']:,} synthetic rows (seed {report['seed']}), newest "
            f"{report['holdout_rows']:,} held out; XGBoost {report['xgboost']}, "
            f"{report['nthread'] or 'all'} thread(s)")
    rows = [(r["predictor"], f"{r['logloss']:.5f}", f"{r['auc']:.4f}",
             f"{r['normalized_gap']:.3f}", f"{r['calibration_error']:.4f}",
             "" if r["training_seconds"] is None else f"{r['training_seconds']:.1f}",
             r.get("rounds", "")) for r in report["results"]]
    table = markdown_table(("predictor", "logloss", "AUC", "normalized gap", "ECE",
                            "training s", "rounds"), rows)
    return "\n".join([head, "", *table, "", f"this trainer is "
                      f"{report['speedup_vs_seed']:.1f}x faster than the seed recipe"])


def section(plan: Plan, echo: Echo) -> SectionResult:
    """The training figures of `ctr bench`."""
    report = run(rows=plan.train_rows, nthread=plan.train_nthread)
    echo(to_markdown(report))
    ours, seed, bayes, prior = report["results"]
    seed_name = "seed recipe (cat.codes, 200 rounds)"
    bounds = (f"Bayes-optimal {bayes['logloss']:.5f}, constant prior {prior['logloss']:.5f}; "
              f"normalized gap 0 = Bayes, 1 = prior")
    rows = (f"{report['train_rows']:,} train / {report['holdout_rows']:,} holdout rows, "
            f"{plan.train_nthread or 'all'} XGBoost thread(s) each; n=1")
    figures = [
        figure("training.seconds", "training time (encode + boost)", ours["training_seconds"],
               "s", better="lower", baseline=(seed_name, seed["training_seconds"]),
               note=f"{rows}; {ours['rounds']} rounds (early stopping)"),
        figure("training.peak_rss_mb", "peak RSS of the bench process", ours["peak_rss_mb"],
               "MB", better="lower", baseline=("Lambda maximum memory", LAMBDA_MAX_MEMORY_MB),
               note="ru_maxrss so far, incl. the synthetic table"),
        figure("training.holdout_logloss", "holdout logloss", ours["logloss"], "nats",
               better="lower", baseline=(seed_name, seed["logloss"]), note=bounds),
        figure("training.holdout_auc", "holdout AUC", ours["auc"], "AUC", better="higher",
               baseline=(seed_name, seed["auc"])),
        figure("training.normalized_gap", "normalized logloss gap", ours["normalized_gap"],
               "gap", better="lower", baseline=(seed_name, seed["normalized_gap"]),
               note=bounds),
    ]
    # Streamed against in-memory on the same window, a child process per run.
    scale_figures, report["scale"] = train_scale.figures(plan, echo)
    return [*figures, *scale_figures], report


def main(argv: list[str] | None = None) -> int:
    """`python -m ctr_infra.bench.train [...]` is `ctr model bench [...]`."""
    from ctr_infra import cli

    return cli.main(["model", "bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
