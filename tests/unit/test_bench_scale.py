"""The scale section's arithmetic (ctr_infra.bench.scale): states summed by name, and the
extrapolation to the whole Criteo file -- fixed states kept, data states scaled, the
train state kept once its window is full, a line through two runs."""

from __future__ import annotations

import pytest

from ctr_infra.bench.scale import CRITEO_LINES, envs, extrapolate, seconds_by_state


def _run(lines: int, states: dict[str, float], window: int = 0) -> dict:
    third = window / 3
    return {"lines": lines, "peak_rss_mb": {"lambda:ChunkFunction": 900.0,
                                            "envs:ChunkFunction": 4, "localstack": 421.0},
            "states": [{"name": n, "type": "Choice" if n.endswith("?") else "Task",
                        "seconds": s} for n, s in states.items()]
            + [{"name": "Plan backfill", "type": "Task", "seconds": 1.0}],
            "train": {"metrics": {"train_rows": third, "validation_rows": third,
                                  "holdout_rows": third}} if window else {}}


def test_states_are_summed_by_name_and_choices_left_out():
    run = _run(1000, {"Plan backfill": 4.0, "Backfill planned?": 0.5, "Acquire lease": 1.0})
    assert seconds_by_state(run) == {"Plan backfill": 5.0, "Acquire lease": 1.0}


def test_one_run_scales_data_states_and_keeps_fixed_ones():
    run = _run(1_000_000, {"Acquire lease": 2.0, "Aggregate chunks in parallel": 10.0,
                           "Train model": 30.0}, window=1_000_000)
    ex = extrapolate([run])
    factor = CRITEO_LINES / 1_000_000
    assert ex["states_s"]["Acquire lease"] == 2.0
    assert ex["states_s"]["Aggregate chunks in parallel"] == pytest.approx(10.0 * factor)
    assert ex["states_s"]["Plan backfill"] == pytest.approx(1.0 * factor)
    assert ex["states_s"]["Train model"] == pytest.approx(30.0 * factor)   # window not full
    assert ex["total_s"] == pytest.approx(sum(ex["states_s"].values()))
    assert "one run" in ex["method"]


def test_a_full_training_window_is_not_scaled():
    run = _run(20_000_000, {"Train model": 300.0}, window=10_000_000)
    ex = extrapolate([run])
    assert ex["states_s"]["Train model"] == 300.0
    assert "window, 10,000,000 rows, was full" in ex["method"]


def test_two_runs_give_a_line_per_state_never_falling():
    small = _run(5_000_000, {"Cut backlog in parallel": 60.0, "Acquire lease": 3.0})
    big = _run(10_000_000, {"Cut backlog in parallel": 110.0, "Acquire lease": 1.0})
    ex = extrapolate([big, small])
    assert ex["from_lines"] == [5_000_000, 10_000_000]
    assert ex["states_s"]["Cut backlog in parallel"] == pytest.approx(
        110.0 + 10e-6 * (CRITEO_LINES - 10_000_000))
    assert ex["states_s"]["Acquire lease"] == 1.0            # slope clipped at 0
    assert "line through the runs at 5,000,000 and 10,000,000" in ex["method"]


def test_environments_of_a_function():
    run = _run(1, {})
    assert envs(run, "lambda:ChunkFunction") == 4
    assert envs(run, "localstack") == 1


def test_training_is_extrapolated_only_up_to_max_train_rows():
    run = {**_run(5_000_000, {"Train model": 150.0, "Aggregate chunks in parallel": 16.0},
                  window=5_000_000), "max_train_rows": 10_000_000}
    ex = extrapolate([run])
    assert ex["states_s"]["Train model"] == pytest.approx(300.0)
    assert ex["states_s"]["Aggregate chunks in parallel"] == pytest.approx(
        16.0 * CRITEO_LINES / 5_000_000)
    assert "taken at MaxTrainRows (10,000,000 rows)" in ex["method"]
