"""The promotion gate's rule (ctr.registry.decision) on its own: numbers in, verdict out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ctr.registry.decision import Evidence, decide


def evidence(**overrides) -> Evidence:
    base = {"version": 5, "candidate_logloss": 0.44, "rows": 1000, "tolerance": 0.0,
            "production_version": 4, "production_logloss": 0.45}
    return Evidence(**(base | overrides))


def test_first_model_is_promoted_without_a_comparison():
    d = decide(evidence(production_version=None, production_logloss=None))
    assert d.promoted and d.reason.startswith("first model")
    assert d.comparison_tags() == {}


def test_the_production_version_itself_is_already_production():
    d = decide(evidence(production_version=5))
    assert d.promoted and d.reason == "already production"


def test_a_production_model_this_code_cannot_load_is_replaced():
    d = decide(evidence(production_logloss=None, production_loadable=False))
    assert d.promoted and "cannot load" in d.reason and d.production_version == 4


def test_better_or_equal_is_promoted_and_worse_is_rejected_with_the_numbers():
    better = decide(evidence())
    equal = decide(evidence(candidate_logloss=0.45))
    worse = decide(evidence(candidate_logloss=0.46))
    assert (better.promoted, equal.promoted, worse.promoted) == (True, True, False)
    assert "worse than production v4's 0.450000 on the same 1000 holdout rows" in worse.reason
    assert worse.comparison_tags() == {
        "compared_with_version": "4", "production_holdout_logloss": "0.450000",
        "candidate_holdout_logloss": "0.460000", "promotion_tolerance": "0"}


@pytest.mark.parametrize(("tolerance", "promoted"), [(0.0, False), (0.009, False),
                                                     (0.011, True)])
def test_tolerance_is_how_much_worse_a_candidate_may_be(tolerance, promoted):
    assert decide(evidence(candidate_logloss=0.46, tolerance=tolerance)).promoted is promoted


def test_the_serving_side_never_imports_mlflow():
    """The predict function imports ctr.bundle (and through it ctr.registry) without
    MLflow installed; importing them must not pull it in."""
    code = ("import sys, ctr.bundle, ctr.registry, ctr.serving.app; "
            "print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
