"""Training window, fitting and metrics (no MLflow here; see test_registry.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ctr import layout, metrics, synth
from ctr.errors import DataError, NotFoundError
from ctr.schema import to_part
from ctr.storage import Store
from ctr.training import (
    NotEnoughData,
    TrainParams,
    WindowSpec,
    fit,
    labels,
    load_window,
    newest_part_index,
    part_rows,
    rows_after,
)
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import put_parts

ROWS = 1000


@pytest.fixture
def store() -> Store:
    return Store(MemoryS3(), "bucket")


SMALL = WindowSpec(max_rows=100 * ROWS, holdout_min_rows=200, holdout_share=0.1,
                   validation_share=0.1)


@pytest.mark.parametrize("versions", [(2,), (1,), (1, 2)], ids=["v2", "v1", "mixed"])
def test_window_is_cut_in_time_order_into_training_validation_and_holdout(store, versions):
    """Parts of both formats (version 1: hex strings; 2: uint32) read into one window."""
    put_parts(store, 0, 4, ROWS, versions=versions)
    assert newest_part_index(store) == 3
    spec = WindowSpec(max_rows=2500, holdout_min_rows=600, holdout_share=0.1,
                      validation_share=0.1)
    w = load_window(store, spec)
    # 2500 newest rows (parts 2 and 3 and the newest 500 of part 1); holdout
    # max(600, 250) = 600, validation 10% of the 1900 others = 190, training 1710.
    newest = to_part(synth.generate_table(2500, start_row=1500)[0])
    assert (w.train.num_rows, w.validation.num_rows, w.holdout.num_rows) == (1710, 190, 600)
    assert w.train.equals(newest.slice(0, 1710))
    assert w.validation.equals(newest.slice(1710, 190))
    assert w.holdout.equals(newest.slice(1900))
    assert [(x.index, x.offset, x.rows, x.role) for x in w.slices] == [
        (1, 500, 500, "training"), (2, 0, 1000, "training"),
        (3, 0, 210, "training"), (3, 210, 190, "validation"), (3, 400, 600, "holdout")]
    assert all(len(x.digest) == 16 for x in w.slices)
    assert w.ranges("holdout") == f"{layout.parquet_key(3)}[400:1000]@{w.slices[-1].digest}"
    assert w.describe() == ("parquet parts 1-3, 2500 rows (train 1710, validation 190, "
                            "holdout 600)")


def test_a_holdout_spans_several_parts_when_the_newest_is_small(store):
    put_parts(store, 0, 3, ROWS)
    put_parts(store, 3, 1, 50)                         # a tiny newest part
    w = load_window(store, SMALL)
    holdout_parts = [(x.index, x.rows) for x in w.slices if x.role == "holdout"]
    assert holdout_parts == [(2, 255), (3, 50)] and w.holdout.num_rows == 305


def test_window_orders_parts_by_index_not_by_listing(store):
    put_parts(store, 9, 1, ROWS)
    put_parts(store, 10, 1, ROWS)        # "part_000010" sorts after "part_000009" anyway,
    put_parts(store, 100, 1, ROWS)       # but indices, not strings, decide
    w = load_window(store, SMALL)
    assert w.last_part == 100 and w.first_part == 9


def test_a_window_too_small_for_an_honest_holdout_is_refused(store):
    put_parts(store, 0, 1, ROWS)
    with pytest.raises(NotEnoughData) as err:
        load_window(store, WindowSpec(holdout_min_rows=501))
    assert "honest holdout" in err.value.message
    assert load_window(store, WindowSpec(holdout_min_rows=500)).holdout.num_rows == 500


def test_part_rows_reads_only_the_footer(store):
    put_parts(store, 0, 3, ROWS)
    put_parts(store, 3, 1, 77)
    assert part_rows(store, layout.parquet_key(3)) == 77
    assert rows_after(store, None, 10**9) == 3 * ROWS + 77
    assert rows_after(store, 1, 10**9) == ROWS + 77
    assert rows_after(store, 0, 100) == 77 + ROWS      # stops once enough are counted
    assert rows_after(store, 3, 1) == 0


def test_no_parts_and_bad_bounds_are_clear_errors(store):
    assert newest_part_index(store) is None
    with pytest.raises(NotFoundError):
        load_window(store)
    store.put(layout.parquet_key(0), b"")
    with pytest.raises(DataError):
        load_window(store, WindowSpec(max_rows=0))


def test_fit_stops_early_on_validation_and_measures_on_the_holdout(store):
    probas = put_parts(store, 0, 3, 2000, seed=5)
    w = load_window(store, SMALL)
    result = fit(w.train, w.validation, w.holdout,
                 TrainParams(num_boost_round=30, min_count=5, nthread=1))
    m = result.metrics
    for key in ("holdout_logloss", "holdout_auc", "calibration_error", "train_rows",
                "validation_rows", "holdout_rows", "positive_rate", "training_seconds",
                "peak_rss_mb"):
        assert key in m and np.isfinite(m[key]), key
    y = result.holdout_labels
    prior = metrics.logloss(y, np.full(y.size, m["positive_rate"]))
    bayes = metrics.logloss(y, probas[-1][-w.holdout.num_rows:])
    assert bayes < m["holdout_logloss"] < prior
    assert m["holdout_auc"] > 0.6
    assert (m["train_rows"], m["validation_rows"], m["holdout_rows"]) == (4860, 540, 600)
    assert set(result.evals_result) == {"train", "validation"}
    # The saved booster is cut back to its best round on the validation slice...
    booster = result.predictor.booster
    curve = result.evals_result["validation"]["logloss"]
    assert booster.num_boosted_rounds() == booster.best_iteration + 1 <= len(curve)
    assert curve[booster.best_iteration] == pytest.approx(
        metrics.logloss(labels(w.validation), result.predictor.predict_table(w.validation)),
        abs=1e-5)
    # ...and the holdout metrics are the saved model's, on rows it was not selected on.
    np.testing.assert_allclose(result.predictor.predict_table(w.holdout),
                               result.holdout_predictions, atol=1e-6)


def test_one_round_model_is_clearly_worse(store):
    put_parts(store, 0, 2, 3000, seed=5)
    w = load_window(store, SMALL)
    small = {"max_depth": 4, "eta": 0.3, "min_count": 5, "nthread": 1}
    one = fit(w.train, w.validation, w.holdout, TrainParams(num_boost_round=1, **small))
    assert one.predictor.booster.num_boosted_rounds() == 1
    many = fit(w.train, w.validation, w.holdout, TrainParams(num_boost_round=30, **small))
    assert one.metrics["holdout_logloss"] > many.metrics["holdout_logloss"] + 0.01


def test_fit_rejects_empty_sets():
    table, _ = synth.generate_table(10)
    with pytest.raises(DataError):
        fit(table, table, table.slice(0, 0))


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)
    coarse = np.round(p, 1)                       # many ties
    assert metrics.auc(y, coarse) == pytest.approx(roc_auc_score(y, coarse), abs=1e-12)
    assert metrics.logloss(y, p) == pytest.approx(log_loss(y, p), abs=1e-9)
    assert np.isnan(metrics.auc(np.zeros(4), np.arange(4)))


def test_calibration_error_separates_calibrated_from_biased():
    rng = np.random.default_rng(1)
    p = rng.beta(1, 3, 200_000)
    y = (rng.random(p.size) < p).astype(float)
    assert metrics.calibration_error(y, p) < 0.005
    assert metrics.calibration_error(y, np.clip(p + 0.05, 0, 1)) == pytest.approx(0.05, abs=0.01)
    mean_p, rate, count = metrics.reliability(y, p, bins=10)
    assert count.sum() == p.size and np.all(np.diff(mean_p) > 0) and rate.shape == (10,)
