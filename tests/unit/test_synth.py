"""ctr.synth: synthetic Criteo data with known click probabilities."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from ctr import criteo, synth
from ctr.schema import CAT_COLUMNS, INT_COLUMNS, PARQUET_SCHEMA


@functools.cache
def _sample(rows: int = 150_000, seed: int = 1) -> tuple[pa.Table, np.ndarray]:
    return synth.generate_table(rows, seed)


def test_schema_and_determinism() -> None:
    a, pa_ = synth.generate_table(1000, seed=1)
    b, pb = synth.generate_table(1000, seed=1)
    c, _ = synth.generate_table(1000, seed=2)
    assert a.schema.equals(PARQUET_SCHEMA)
    assert a.num_rows == 1000 and pa_.shape == (1000,)
    assert a.equals(b) and np.array_equal(pa_, pb)
    assert not a.equals(c)


@pytest.mark.parametrize(("rows", "start"), [(7, 0), (100, 3), (2000, synth.BLOCK_ROWS - 1000),
                                             (5, 2 * synth.BLOCK_ROWS + 17)])
def test_any_slice_is_the_same_rows_of_one_stream(rows: int, start: int) -> None:
    whole, p = synth.generate_table(start + rows, seed=1)
    part, q = synth.generate_table(rows, seed=1, start_row=start)
    assert part.equals(whole.slice(start, rows))
    assert np.array_equal(q, p[start:start + rows])


def test_zero_rows_and_bad_arguments() -> None:
    table, p = synth.generate_table(0)
    assert table.num_rows == 0 and table.schema.equals(PARQUET_SCHEMA) and p.size == 0
    with pytest.raises(ValueError, match="must be >= 0"):
        synth.generate_table(-1)


def test_realistic_marginals() -> None:
    table, p = _sample()
    labels = table.column("label").to_numpy()
    assert 0.22 < labels.mean() < 0.28                      # ~25% positives
    assert abs(labels.mean() - p.mean()) < 0.01             # labels follow p
    assert p.min() > 0.0 and p.max() < 1.0
    # per-column missing rates follow the configured ones
    for name, rate in zip(INT_COLUMNS, synth.INT_MISSING, strict=True):
        assert abs(table.column(name).null_count / table.num_rows - rate) < 0.01, name
    for name, rate in zip(CAT_COLUMNS, synth.CAT_MISSING, strict=True):
        assert abs(table.column(name).null_count / table.num_rows - rate) < 0.01, name
    # heavy-tailed integers, some negative (I2 goes down to -3 as in Criteo)
    assert pc.min(table.column("I2")).as_py() == -3
    i5 = table.column("I5").drop_null().to_numpy()
    assert i5.max() > 100 * np.median(i5)
    # cardinalities from 3 to very many, Zipf-shaped (the head value is frequent)
    assert pc.count_distinct(table.column("C9")).as_py() == 3
    assert pc.count_distinct(table.column("C20").drop_null()).as_py() == 4
    assert max(synth.CARDINALITIES) >= 100_000
    assert max(pc.count_distinct(table.column(c)).as_py() for c in CAT_COLUMNS) > 20_000
    counts = pc.value_counts(table.column("C3").drop_null()).field("counts").to_numpy()
    assert counts.max() > 50 * np.median(counts)
    # every categorical is 8 lowercase hex characters
    assert criteo.parse_tsv(criteo.table_to_tsv(table.slice(0, 5000))).rejects == []


def test_labels_come_from_the_known_model() -> None:
    table, p = _sample()
    labels = table.column("label").to_numpy()
    auc = roc_auc_score(labels, p)
    assert 0.75 < auc < 0.9                    # informative, but not trivially separable
    # calibration: within probability deciles, the click rate matches the mean p
    order = np.argsort(p)
    for bucket in np.array_split(order, 10):
        assert abs(labels[bucket].mean() - p[bucket].mean()) < 0.02


def test_drift_changes_probabilities_over_time_only_when_asked() -> None:
    start = synth.DRIFT_PERIOD_ROWS // 4          # where sin() peaks
    _, stationary = synth.generate_table(2000, seed=1, start_row=start)
    _, drifting = synth.generate_table(2000, seed=1, start_row=start, drift=1.0)
    _, early = synth.generate_table(2000, seed=1, start_row=0, drift=1.0)
    _, early_stationary = synth.generate_table(2000, seed=1, start_row=0)
    assert np.abs(drifting - stationary).mean() > 0.05
    assert np.abs(early - early_stationary).max() < 0.01


@pytest.mark.parametrize("name", ["data.txt", "data.txt.gz"])
def test_write_tsv_writes_criteo_lines_and_the_sidecar(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    info = synth.write_tsv(out, 3000, seed=1, progress=False)
    raw = out.read_bytes()
    text = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert info["rows"] == 3000 and info["bytes"] == len(text)
    parsed = criteo.parse_tsv(text)
    assert parsed.rejects == [] and parsed.lines == 3000
    table, p = synth.generate_table(3000, seed=1)
    assert parsed.table.equals(table.cast(PARQUET_SCHEMA))
    sidecar = np.load(synth.sidecar_path(out))
    assert np.array_equal(sidecar, p)


def test_write_tsv_without_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "x.txt"
    info = synth.write_tsv(out, 10, progress=False, sidecar=False)
    assert info["sidecar"] is None and not synth.sidecar_path(out).exists()
    assert out.read_bytes().count(b"\n") == 10
