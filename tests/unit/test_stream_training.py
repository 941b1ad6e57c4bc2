"""The streamed trainer (ctr.stream_features, ctr.stream_training) against the in-memory
one: the same window, the same transform state, the same training features, disjoint
roles, and one batch alive at a time."""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from ctr import synth
from ctr.errors import DataError
from ctr.features import FeatureTransform, hex_keys
from ctr.storage import Store
from ctr.stream_features import StreamFit, quantiles_from_counts
from ctr.stream_training import fit_window, plan_window, read_role
from ctr.training import NotEnoughData, TrainParams, WindowSpec, fit, load_window
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import parquet_bytes, put_parts

PARAMS = TrainParams(num_boost_round=12, min_count=3, nthread=1)


@pytest.fixture
def store() -> Store:
    return Store(MemoryS3(), "bucket")


def _with_bad_values(table: pa.Table) -> pa.Table:
    """Some C1 values that are not 8 hex characters (pooled into "other")."""
    values = table.column("C1").to_pylist()
    for i in range(0, len(values), 97):
        values[i] = "zz" if i % 2 else "0123456789"
    return table.set_column(table.schema.get_field_index("C1"), "C1",
                            pa.array(values, pa.string()))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 32, 33, 100, 1001, 4096])
def test_quantiles_from_counts_equal_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    q = np.linspace(0, 1, 33)[1:-1]
    for scale in (1.0, 1000.5, 1e-3):
        x = rng.integers(-3, 60, n).astype(np.float64) * scale
        values, counts = np.unique(x, return_counts=True)
        assert np.array_equal(quantiles_from_counts(values, counts, q), np.quantile(x, q))


def test_a_null_slot_holding_bytes_is_missing_not_a_key():
    # Arrow allows a null slot to keep bytes in the data buffer; ctr.synth writes such.
    data = pa.py_buffer(b"0000000a" b"0000000b" b"0000000c")
    offsets = pa.py_buffer(np.array([0, 8, 16, 24], dtype=np.int32).tobytes())
    validity = pa.py_buffer(bytes([0b101]))
    arr = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, data])
    keys, missing, valid = hex_keys(arr)
    assert missing.tolist() == [False, True, False]
    assert valid.tolist() == [True, False, True]
    assert keys[valid].tolist() == [10, 12]


@pytest.mark.parametrize("batch", [997, 6000, 30_000])
@pytest.mark.parametrize("caps", [dict(min_count=3, max_categories=40),
                                  dict(min_count=1, max_categories=100_000)])
def test_streamed_fit_equals_the_in_memory_fit(batch, caps):
    rows = 30_000
    table = _with_bad_values(synth.generate_table(rows, seed=5)[0])
    expected, x_expected = FeatureTransform.fit_transform(table, **caps)
    stats = StreamFit(rows, **caps)
    for start in range(0, rows, batch):                      # batches cross fold bounds
        stats.add(table.slice(start, batch))
    assert stats.finish() == expected                        # the whole serialized state
    assert stats.finish().to_json() == expected.to_json()
    # The out-of-fold training features, row for row, from any batching.
    step = 4_321
    x = np.concatenate([stats.encode_training(table.slice(s, step), s)
                        for s in range(0, rows, step)])
    assert x.dtype == np.float32
    assert np.array_equal(x, x_expected, equal_nan=True)


def test_stream_fit_refuses_rows_beyond_or_short_of_what_it_was_told():
    table, _ = synth.generate_table(1000)
    stats = StreamFit(900)
    with pytest.raises(DataError, match="more training rows"):
        stats.add(table)
    stats.add(table.slice(0, 800))
    with pytest.raises(DataError, match="fewer training rows"):
        stats.finish()


SPEC = WindowSpec(max_rows=26_000, holdout_min_rows=3000, holdout_share=0.1,
                  validation_share=0.1)


def test_the_planned_window_is_the_loaded_window_and_its_roles_are_disjoint(store):
    put_parts(store, 0, 5, 7000)
    window, _ = fit_window(store, SPEC, PARAMS, batch_rows=2500)
    loaded = load_window(store, SPEC)
    assert window.slices == loaded.slices                  # same rows, digests included
    assert window.describe() == loaded.describe()
    assert window.holdout.equals(loaded.holdout)
    # Disjoint and in time order: training < validation < holdout, no row twice.
    seen: dict[str, set[int]] = {}
    order = []
    for s in window.slices:
        rows = {s.index * 7000 + r for r in range(s.offset, s.offset + s.rows)}
        assert not rows & set().union(*seen.values())
        seen.setdefault(s.role, set()).update(rows)
        order.append(s.role)
    assert max(seen["training"]) < min(seen["validation"])
    assert max(seen["validation"]) < min(seen["holdout"])
    assert sorted(set().union(*seen.values())) == list(range(35_000 - 26_000, 35_000))
    assert order == sorted(order, key=["training", "validation", "holdout"].index)
    assert read_role(store, window, "training").equals(loaded.train)
    assert read_role(store, window, "validation").equals(loaded.validation)
    assert read_role(store, window, "training", 1234).equals(loaded.train.slice(
        loaded.train.num_rows - 1234))


def test_the_streamed_trainer_matches_the_in_memory_trainer_on_the_same_rows(store):
    put_parts(store, 0, 4, 8000)
    loaded = load_window(store, SPEC)
    expected = fit(loaded.train, loaded.validation, loaded.holdout, PARAMS)
    _, got = fit_window(store, SPEC, PARAMS, batch_rows=3000)
    assert got.predictor.transform == expected.predictor.transform
    for name in ("train_rows", "validation_rows", "holdout_rows", "positive_rate",
                 "holdout_positive_rate"):
        assert got.metrics[name] == expected.metrics[name], name
    # The quantile sketch may cut bins differently when built from batches: within noise.
    assert got.metrics["holdout_logloss"] == pytest.approx(
        expected.metrics["holdout_logloss"], abs=2e-3)
    assert got.metrics["holdout_auc"] == pytest.approx(expected.metrics["holdout_auc"],
                                                       abs=2e-3)
    assert np.array_equal(got.holdout_labels, expected.holdout_labels)


def test_only_one_training_batch_is_alive_at_a_time(store):
    put_parts(store, 0, 4, 8000)
    alive: list[weakref.ref[np.ndarray]] = []
    most = 0
    shapes = []

    def on_batch(x: np.ndarray) -> None:
        nonlocal most
        gc.collect()
        # XGBoost's DataIter keeps the batch it was last given until the next one.
        most = max(most, sum(r() is not None for r in alive))
        alive.append(weakref.ref(x))
        shapes.append(x.shape[0])

    window, _ = fit_window(store, SPEC, PARAMS, batch_rows=2000, on_batch=on_batch)
    train_rows = window.role_rows("training")
    assert max(shapes) <= 2000
    assert sum(shapes) % train_rows == 0 and sum(shapes) // train_rows >= 2  # passes
    assert len(shapes) > 2 * (train_rows // 2000)
    assert most <= 1


def test_a_part_that_changes_while_training_reads_it_is_an_error(store):
    put_parts(store, 0, 3, 8000)
    window = plan_window(store, SPEC)
    window, _ = fit_window(store, SPEC, PARAMS, batch_rows=4000)
    table, _ = synth.generate_table(8000, seed=9)
    store.put(window.slices[0].key, parquet_bytes(table))
    with pytest.raises(DataError, match="changed"):
        read_role(store, window, "training")


def test_a_window_too_small_for_an_honest_holdout_is_refused(store):
    put_parts(store, 0, 1, 1000)
    with pytest.raises(NotEnoughData):
        fit_window(store, replace(SPEC, holdout_min_rows=600), PARAMS)
