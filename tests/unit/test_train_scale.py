"""The training-at-scale bench (ctr_infra.bench.train_scale) on a tiny window: parts
generated to disk one at a time, both trainers on the same rows, figures as ratios."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ctr import layout
from ctr.storage import Store
from ctr.training import part_rows
from ctr_infra.bench import train_scale
from ctr_infra.bench.plan import QUICK


def test_generated_parts_are_readable_through_a_store_and_carry_their_truth(tmp_path):
    assert train_scale.generate(tmp_path, 7000, part_rows=3000, echo=lambda _: None) == 3
    store = Store(train_scale.DirS3(tmp_path), "bench")
    keys = sorted(store.list_keys(layout.PARQUET_PREFIX))
    assert keys == [layout.parquet_key(i) for i in range(3)]
    assert [part_rows(store, k) for k in keys] == [3000, 3000, 1000]
    assert train_scale.truth_path(tmp_path, 2).exists()


def test_both_trainers_run_on_the_same_window_with_the_same_quality(tmp_path):
    train_scale.generate(tmp_path, 12_000, part_rows=3000, echo=lambda _: None)
    runs = {mode: train_scale.run_in_process(tmp_path, 10_000, mode)
            for mode in train_scale.MODES}
    memory, stream = runs["memory"], runs["stream"]
    assert memory["rows"] == stream["rows"] == 10_000
    assert memory["holdout_rows"] == stream["holdout_rows"] == 1000
    assert stream["logloss"] == pytest.approx(memory["logloss"], abs=5e-3)
    assert 0 < stream["normalized_gap"] < 1
    assert stream["bayes_logloss"] == memory["bayes_logloss"]
    assert stream["peak_rss_mb"] > 0 and stream["rows_per_s"] > 0


def test_the_quick_plan_gives_streamed_figures_against_in_memory_ones(monkeypatch):
    def fake_child(directory, rows, mode, nthread=1):
        return {"mode": mode, "rows": rows, "rows_per_s": 100.0 if mode == "stream" else 50.0,
                "rows_per_cpu_s": 300.0 if mode == "stream" else 200.0, "cpu_seconds": 1.0,
                "seconds": 1.0, "peak_rss_mb": 300.0 if mode == "stream" else 600.0,
                "logloss": 0.43, "auc": 0.8, "normalized_gap": 0.1, "rounds": 9,
                "loadavg": [1.0, 2.0]}

    monkeypatch.setattr(train_scale, "run_child", fake_child)
    monkeypatch.setattr(train_scale, "generate", lambda *a, **k: 1)
    figures, runs = train_scale.figures(replace(QUICK, train_scale_repeats=2),
                                        lambda _: None)
    by_id = {f["id"]: f for f in figures}
    assert len(runs) == 4
    assert by_id["training.scale.20000.peak_rss_mb"]["ratio"] == 0.5
    assert by_id["training.scale.20000.rows_per_s"]["ratio"] == 2.0
    assert by_id["training.scale.20000.rows_per_cpu_s"]["ratio"] == 1.5
    assert "load avg 1.0-2.0" in by_id["training.scale.20000.rows_per_s"]["note"]
