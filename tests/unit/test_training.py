"""Training window, fitting and metrics (no MLflow here; see test_registry.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ctr import layout, metrics, synth
from ctr.errors import DataError, NotFoundError
from ctr.storage import Store
from ctr.training import TrainParams, fit, load_window, newest_part_index, train
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import put_parts

ROWS = 1000


@pytest.fixture
def store() -> Store:
    return Store(MemoryS3(), "bucket")


def test_window_holds_out_the_newest_part_and_bounds_training_rows(store):
    put_parts(store, 0, 4, ROWS)
    assert newest_part_index(store) == 3
    w = load_window(store, max_train_rows=1500)
    expected_holdout, _ = synth.generate_table(ROWS, start_row=3 * ROWS)
    assert w.holdout.equals(expected_holdout)
    # 1500 training rows: all of part 2 and the newest 500 rows of part 1, in order.
    expected_train, _ = synth.generate_table(1500, start_row=1500)
    assert w.train.equals(expected_train)
    assert [(p.index, p.rows, p.role) for p in w.parts] == [
        (3, ROWS, "holdout"), (2, ROWS, "training"), (1, 500, "training")]
    assert all(len(p.digest) == 16 for p in w.parts)
    assert w.describe() == ("parquet parts 1-3, 2500 rows (train 1500, holdout 1000 "
                            "from part 3)")


def test_window_orders_parts_by_index_not_by_listing(store):
    put_parts(store, 9, 1, ROWS)
    put_parts(store, 10, 1, ROWS)        # "part_000010" sorts after "part_000009" anyway,
    put_parts(store, 100, 1, ROWS)       # but indices, not strings, decide
    w = load_window(store, max_train_rows=10 * ROWS)
    assert w.last_part == 100 and w.first_part == 9


def test_single_part_holds_out_its_newest_fifth(store):
    put_parts(store, 0, 1, ROWS)
    w = load_window(store)
    assert (w.train.num_rows, w.holdout.num_rows) == (800, 200)
    expected_holdout, _ = synth.generate_table(200, start_row=800)
    assert w.holdout.equals(expected_holdout)


def test_no_parts_and_bad_bounds_are_clear_errors(store):
    assert newest_part_index(store) is None
    with pytest.raises(NotFoundError):
        load_window(store)
    store.put(layout.parquet_key(0), b"")
    with pytest.raises(DataError):
        load_window(store, max_train_rows=0)


def test_train_beats_the_prior_and_reports_every_metric(store):
    probas = put_parts(store, 0, 3, 2000, seed=5)
    result = train(store, TrainParams(num_boost_round=30, min_count=5, nthread=1))
    m = result.metrics
    for key in ("holdout_logloss", "holdout_auc", "calibration_error", "train_rows",
                "holdout_rows", "positive_rate", "training_seconds", "peak_rss_mb"):
        assert key in m and np.isfinite(m[key]), key
    y = result.holdout_labels
    prior = metrics.logloss(y, np.full(y.size, m["positive_rate"]))
    bayes = metrics.logloss(y, probas[-1])
    assert bayes < m["holdout_logloss"] < prior
    assert m["holdout_auc"] > 0.6
    assert (m["train_rows"], m["holdout_rows"]) == (4000, 2000)
    assert set(result.evals_result) == {"train", "holdout"}
    # The saved booster is cut back to its best round, and it is what was measured.
    booster = result.predictor.booster
    curve = result.evals_result["holdout"]["logloss"]
    assert booster.num_boosted_rounds() == booster.best_iteration + 1 <= len(curve)
    assert curve[booster.best_iteration] == pytest.approx(m["holdout_logloss"], abs=1e-5)
    np.testing.assert_allclose(result.predictor.predict_table(result.window.holdout),
                               result.holdout_predictions, atol=1e-6)


def test_one_round_model_is_clearly_worse(store):
    put_parts(store, 0, 2, 3000, seed=5)
    w = load_window(store)
    small = {"max_depth": 4, "eta": 0.3, "min_count": 5, "nthread": 1}
    one = fit(w.train, w.holdout, TrainParams(num_boost_round=1, **small))
    assert one.predictor.booster.num_boosted_rounds() == 1
    many = fit(w.train, w.holdout, TrainParams(num_boost_round=30, **small))
    assert one.metrics["holdout_logloss"] > many.metrics["holdout_logloss"] + 0.01


def test_fit_rejects_empty_sets():
    table, _ = synth.generate_table(10)
    with pytest.raises(DataError):
        fit(table, table.slice(0, 0))


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
