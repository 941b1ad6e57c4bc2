"""Cost of the monitor step per 1M fresh rows (`ctr bench`'s "monitoring" section).

    python -m ctr_infra.bench.monitor [--rows 1000000]

Two real models (`ctr.training.fit` on 200,000 `ctr.synth` rows, one of them with fewer
rounds, as production and previous) and production's training baseline; then one new
part of `rows` rows is decoded from Parquet bytes and evaluated exactly as the monitor
function does (`ctr.monitoring.monitor.evaluate_part`: both models scored, quality
figures, the paired comparison, drift of 39 features and of the prediction). S3 and
CloudWatch round trips are not included (a few requests per part). Prints a table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from ctr import aggregate, synth
from ctr.monitoring.baseline import build_baseline
from ctr.monitoring.monitor import MonitorPolicy, ServedModel, evaluate_part
from ctr.schema import read_part, to_part
from ctr.training import TrainParams, fit, peak_rss_mb
from ctr_infra.bench.plan import LAMBDA_MAX_MEMORY_MB, Echo, Plan
from ctr_infra.bench.report import SectionResult, figure, markdown_table

TRAIN_ROWS = 200_000
PARAMS = TrainParams(num_boost_round=60, nthread=1)


def _served(role: str, version: int, result: Any, baseline: Any) -> ServedModel:
    return ServedModel(role=role, version=version, run_id=None, predictor=result.predictor,
                       baseline=baseline, holdout_logloss=result.metrics["holdout_logloss"],
                       last_part=0, demoted_by_rollback=False)


def run(rows: int = 1_000_000, seed: int = 41, train_rows: int = TRAIN_ROWS) -> dict[str, Any]:
    extra = train_rows // 5
    table, _ = synth.generate_table(train_rows + extra, seed=seed)
    val_rows = train_rows // 10
    train, val, hold = (table.slice(0, train_rows - val_rows),
                        table.slice(train_rows - val_rows, val_rows),
                        table.slice(train_rows, extra))
    prod = fit(train, val, hold, PARAMS)
    prev = fit(train, val, hold, replace(PARAMS, num_boost_round=20))
    baseline = build_baseline(train, prod.holdout_predictions, prod.predictor.transform)
    part, _ = synth.generate_table(rows, seed=seed, start_row=train_rows + extra)
    data = aggregate.parquet_bytes(to_part(part))        # as the aggregate step writes it
    del part
    started = time.perf_counter()
    decoded = read_part(data)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    outcome = evaluate_part(1, decoded, _served("production", 2, prod, baseline),
                            _served("previous", 1, prev, None), MonitorPolicy())
    eval_s = time.perf_counter() - started
    per_million = 1_000_000 / rows
    return {"rows": rows, "parquet_mb": len(data) / 1e6, "read_seconds": read_s,
            "evaluate_seconds": eval_s, "seconds_per_million": (read_s + eval_s) * per_million,
            "peak_rss_mb": peak_rss_mb(), "trees": [prod.metrics["num_trees"],
                                                    prev.metrics["num_trees"]],
            "flagged": outcome.drift.flagged if outcome.drift else None,
            "previous_better": bool(outcome.quality.comparison
                                    and outcome.quality.comparison.previous_better)}


def to_markdown(r: dict[str, Any]) -> str:
    return "\n".join(markdown_table(
        ["rows", "Parquet MB", "decode s", "evaluate s (2 models + drift)", "s per 1M rows",
         "peak RSS MB"],
        [[f"{r['rows']:,}", f"{r['parquet_mb']:.1f}", f"{r['read_seconds']:.2f}",
          f"{r['evaluate_seconds']:.2f}", f"{r['seconds_per_million']:.2f}",
          f"{r['peak_rss_mb']:.0f}"]]))


def section(plan: Plan, echo: Echo) -> SectionResult:
    report = run(rows=plan.monitor_rows, train_rows=plan.monitor_train_rows)
    echo(to_markdown(report))
    note = (f"{report['rows']:,} rows, production ({report['trees'][0]:.0f} trees) and "
            f"previous scored, 39 features + prediction drift; n=1")
    return [
        figure("monitoring.seconds_per_million", "monitor step per 1M fresh rows",
               report["seconds_per_million"], "s", better="lower", note=note),
        figure("monitoring.peak_rss_mb", "peak RSS of the bench process",
               report["peak_rss_mb"], "MB", better="lower",
               baseline=("Lambda maximum memory", LAMBDA_MAX_MEMORY_MB)),
    ], report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(to_markdown(run(rows=args.rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
