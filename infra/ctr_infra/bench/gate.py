"""The promotion gate on scripted scenarios: what it decides, with the numbers.

    python -m ctr_infra.bench.gate [--part-rows 50000] [--holdout-min-rows 20000]

One model history on `ctr.synth` data (known truth, time-ordered), through the real
train step (`ctr.registry.train_step.train_and_register`: window, fit, MLflow run,
registered version, gate) on an in-memory S3 and a SQLite MLflow store:

1. first model (a deliberately small recipe) on four parts -> judged against the prior;
2. a tiny file (200 rows) arrives                          -> not enough new data;
3. a deliberately worse candidate (one boosting round)     -> judged against production;
4. a better candidate (the full recipe) on a new part      -> judged against production;
5. an equal-quality candidate (same recipe, a new part)     -> judged against production.

The policy is the production one scaled to the data: HoldoutMinRows `holdout_min_rows`,
MinNewRows = HoldoutMinRows / 2, the default tolerance and guards. Prints a Markdown
table (the README's "Promotion gate" table comes from it). Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from ctr import layout, synth
from ctr.registry.decision import GatePolicy
from ctr.storage import Store
from ctr.training import TrainParams, WindowSpec
from ctr_infra.bench.report import markdown_table
from ctr_infra.memory_s3 import MemoryS3

SMALL = TrainParams(num_boost_round=8, early_stopping_rounds=0, max_depth=3)
ONE_ROUND = TrainParams(num_boost_round=1)
FULL = TrainParams()


def _put_part(store: Store, index: int, rows: int, start_row: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table, _ = synth.generate_table(rows, seed=17, start_row=start_row)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.put(layout.parquet_key(index), sink.getvalue().to_pybytes())


def run(part_rows: int = 50_000, holdout_min_rows: int = 20_000) -> list[dict[str, Any]]:
    from mlflow import MlflowClient

    from ctr.registry.train_step import TrainPolicy, train_and_register

    policy = TrainPolicy(window=WindowSpec(holdout_min_rows=holdout_min_rows),
                         gate=GatePolicy(), min_new_rows=holdout_min_rows // 2)
    store = Store(MemoryS3(), "gate-bench")
    rows_so_far, next_part = 0, 0

    def arrive(rows: int) -> None:
        nonlocal rows_so_far, next_part
        _put_part(store, next_part, rows, rows_so_far)
        rows_so_far += rows
        next_part += 1

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ctr-gate-bench-") as tmp:
        client = MlflowClient(tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        client.create_experiment("gate", artifact_location=(Path(tmp) / "a").as_uri())

        def step(name: str, params: TrainParams) -> None:
            out = train_and_register(store, client, model_name="gate_model",
                                     experiment_name="gate", params=params, policy=policy,
                                     execution=name.split(":")[0])
            tags = (dict(client.get_model_version("gate_model", str(out.version)).tags)
                    if out.version else {})
            results.append({"scenario": name, "status": out.status, "promoted": out.promoted,
                            "version": out.version, "reason": out.reason, "tags": tags})

        for _ in range(4):
            arrive(part_rows)
        step("1: first model (small recipe)", SMALL)
        arrive(200)
        step("2: tiny file, 200 rows", FULL)
        arrive(part_rows)
        step("3: worse candidate (1 round)", ONE_ROUND)
        arrive(part_rows)
        step("4: better candidate (full recipe)", FULL)
        arrive(part_rows)
        step("5: equal candidate (same recipe, new part)", FULL)
    return results


def to_markdown(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        t = r["tags"]
        rows.append((r["scenario"], t.get("gate_rows", "-"),
                     t.get("candidate_holdout_logloss", "-"),
                     t.get("production_holdout_logloss", t.get("prior_holdout_logloss", "-")),
                     t.get("logloss_diff_mean", "-"), t.get("logloss_diff_upper95", "-"),
                     t.get("calibration_ratio", "-"),
                     "promoted" if r["promoted"] else r["status"] if r["status"] == "skipped"
                     else "rejected",
                     r["reason"].split(":")[0]))
    return "\n".join(markdown_table(
        ("scenario", "holdout rows", "candidate logloss", "production (or prior) logloss",
         "mean difference", "95% upper bound", "calibration ratio", "decision", "why"),
        rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctr_infra.bench.gate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--part-rows", type=int, default=50_000)
    parser.add_argument("--holdout-min-rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    results = run(args.part_rows, args.holdout_min_rows)
    print(to_markdown(results))
    for r in results:
        print(f"- {r['scenario']}: {r['reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
