"""The promotion gate's scripted scenarios (ctr_infra.bench.gate), small: the real train
step on synthetic data decides as the README's table says, with its numbers."""

from __future__ import annotations

import os

from ctr_infra.bench import gate

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def test_tiny_worse_better_and_equal_candidates_get_the_documented_decisions():
    results = gate.run(part_rows=6_000, holdout_min_rows=2_000)
    assert [(r["status"], r["promoted"]) for r in results] == [
        ("trained", True), ("skipped", False), ("trained", False), ("trained", True),
        ("trained", True)]
    first, tiny, worse, better, equal = results
    assert first["tags"]["compared_with_version"] == "prior"
    assert tiny["reason"].startswith("not enough new data: 200 of 1000 rows")
    assert worse["reason"].startswith("worse than production v1")
    assert float(worse["tags"]["logloss_diff_upper95"]) > 0.001
    for promoted in (better, equal):
        assert float(promoted["tags"]["logloss_diff_upper95"]) <= 0.001
    table = gate.to_markdown(results)
    assert table.count("\n") == len(results) + 1 and "| rejected |" in table
