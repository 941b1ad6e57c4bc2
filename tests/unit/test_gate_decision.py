"""The promotion gate's rule (ctr.registry.decision) and its statistics (ctr.metrics):
numbers in, verdict out, on data with a known answer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ctr import metrics
from ctr.metrics import PairedBound
from ctr.registry.decision import Evidence, GatePolicy, decide

POLICY = GatePolicy(tolerance=0.001, calibration_band=0.1, auc_tolerance=0.0)


def bound(mean: float, half: float, rows: int = 200_000, blocks: int = 50) -> PairedBound:
    return PairedBound(mean, mean + half, mean - half, rows, blocks)


def evidence(**overrides) -> Evidence:
    base = {"version": 5, "rows": 200_000, "candidate_logloss": 0.44,
            "calibration_ratio": 1.01, "production_version": 4,
            "production_logloss": 0.4405, "logloss_difference": bound(-0.0005, 0.0002),
            "auc_difference": bound(0.001, 0.0005)}
    return Evidence(**(base | overrides))


# --------------------------------------------------------------------------- the rule

def test_a_candidate_no_worse_within_the_tolerance_is_promoted_with_its_numbers():
    d = decide(evidence(), POLICY)
    assert d.promoted and d.reason.startswith("no worse than production v4")
    assert "95% upper bound -0.000300 on 200000 holdout rows (50 time blocks)" in d.reason
    tags = d.numbers()
    assert tags["compared_with_version"] == "4" and tags["logloss_diff_upper95"] == "-0.000300"
    assert tags["gate_rows"] == "200000" and tags["promotion_tolerance"] == "0.001"


def test_an_equal_model_on_ample_data_is_promoted_for_freshness():
    assert decide(evidence(logloss_difference=bound(0.0, 0.0002)), POLICY).promoted


def test_the_upper_bound_not_the_mean_decides():
    """A candidate better on average but with too little evidence is rejected."""
    d = decide(evidence(logloss_difference=bound(-0.002, 0.004, rows=200, blocks=10)), POLICY)
    assert not d.promoted and "worse than production v4" in d.reason
    assert "> tolerance 0.001" in d.reason


def test_a_significantly_lower_auc_is_rejected_even_with_a_good_logloss():
    d = decide(evidence(auc_difference=bound(-0.01, 0.002)), POLICY)
    assert not d.promoted and "AUC significantly lower" in d.reason


def test_a_miscalibrated_candidate_is_rejected_only_with_evidence():
    sure = decide(evidence(calibration_ratio=1.25, calibration_interval=(1.2, 1.3)), POLICY)
    noisy = decide(evidence(calibration_ratio=1.16, calibration_interval=(0.95, 1.4)), POLICY)
    assert not sure.promoted and "calibration ratio 1.250" in sure.reason
    assert "95% interval 1.200-1.300" in sure.reason
    assert noisy.promoted                  # 300 rows: the observed rate is itself noisy


def test_the_calibration_interval_covers_the_ratio_and_narrows_with_rows():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 6, 200_000)
    y = (rng.random(p.size) < p).astype(float)
    ratio, low, high = metrics.calibration_interval(y, p)
    assert low < 1 < high and high - low < 0.03 and ratio == pytest.approx(1, abs=0.01)
    _, low_s, high_s = metrics.calibration_interval(y[:300], p[:300])
    assert high_s - low_s > 5 * (high - low)


def test_a_first_model_must_beat_the_constant_prior_with_evidence():
    first = {"production_version": None, "production_logloss": None, "auc_difference": None,
             "prior_logloss": 0.56}
    good = decide(evidence(**first, logloss_difference=bound(-0.1, 0.01)), POLICY)
    coin = decide(evidence(**first, logloss_difference=bound(-0.001, 0.003)), POLICY)
    assert good.promoted and good.reason.startswith("first model: beats the constant prior")
    assert good.numbers()["compared_with_version"] == "prior"
    assert not coin.promoted and "does not beat the constant prior" in coin.reason


def test_the_production_version_itself_is_already_production():
    assert decide(evidence(production_version=5), POLICY).reason == "already production"


def test_a_production_model_this_code_cannot_load_is_replaced():
    d = decide(evidence(production_logloss=None, production_loadable=False,
                        logloss_difference=None), POLICY)
    assert d.promoted and "cannot load" in d.reason and d.production_version == 4


# --------------------------------------------------------------------------- the statistics

def test_t_quantiles_match_the_table():
    for df, exact in [(5, 2.015), (9, 1.833), (19, 1.729), (49, 1.677)]:
        assert metrics.t95(df) == pytest.approx(exact, abs=0.002)


def test_block_count_follows_the_rows():
    assert [metrics.n_blocks(n) for n in (5, 800, 20_000, 200_000, 10**7)] == [5, 10, 20, 50, 50]


def test_the_upper_bound_covers_the_true_mean_about_95_percent_of_the_time():
    """Coverage on autocorrelated differences with a known mean of zero: blocks of rows
    that share a random offset (as rows of the same hour do)."""
    rng = np.random.default_rng(7)
    covered = 0
    trials = 400
    for _ in range(trials):
        offsets = np.repeat(rng.normal(0, 0.02, 200), 50)            # 10,000 rows
        diff = offsets + rng.normal(0, 0.05, offsets.size)
        covered += metrics.paired_difference(diff).upper >= 0.0
    assert 0.91 <= covered / trials <= 0.99, covered / trials


def test_a_real_difference_is_detected_and_a_null_one_is_not():
    rng = np.random.default_rng(3)
    worse = metrics.paired_difference(0.002 + rng.normal(0, 0.05, 200_000))
    assert worse.lower > 0 and worse.blocks == 50 and worse.rows == 200_000
    same = metrics.paired_difference(rng.normal(0, 0.05, 200_000))
    assert same.lower < 0 < same.upper < 0.001


def test_paired_auc_difference_is_zero_for_the_same_model_and_positive_for_a_better_one():
    rng = np.random.default_rng(5)
    p = rng.random(20_000)
    y = (rng.random(p.size) < p).astype(int)
    noisy = np.clip(p + rng.normal(0, 0.3, p.size), 0, 1)
    same = metrics.paired_auc_difference(y, p, p)
    better = metrics.paired_auc_difference(y, p, noisy)
    assert same.mean == 0 and same.upper == 0
    assert better.lower > 0


def test_calibration_ratio_is_mean_prediction_over_rate():
    assert metrics.calibration_ratio(np.array([0, 1, 0, 1]), np.full(4, 0.6)) == pytest.approx(1.2)


def test_the_serving_side_never_imports_mlflow():
    """The predict function imports ctr.bundle (and through it ctr.registry) without
    MLflow installed; importing them must not pull it in."""
    code = ("import sys, ctr.bundle, ctr.registry, ctr.serving.app; "
            "print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
