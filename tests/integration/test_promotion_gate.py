"""The promotion gate on the local cloud (issue 13's acceptance): the deployed train
function, real MLflow, the suite's stack with the production rule.

    parts 0-2 (20,000 rows each)   -> v1 beats the constant prior: production
    a 200-row part arrives         -> not enough new data: nothing registered
    two more 20,000-row parts      -> an equal-quality candidate on ample data: promoted,
                                      its 95% upper bound below the tolerance
"""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient

from tests.cloud import TEST_STACK_PARAMETERS
from tests.synth_parts import put_parts

MODEL = os.environ.get("MODEL_NAME", "criteo_ctr_model")
ROWS = 20_000
SEED = 23


@pytest.fixture(scope="module")
def client(cloud) -> MlflowClient:
    cloud.reset_data()
    return MlflowClient(tracking_uri=cloud.mlflow_uri)


@pytest.fixture(scope="module")
def first(cloud, client) -> dict:
    put_parts(cloud.store, 0, 3, ROWS, seed=SEED)
    return cloud.invoke("TrainFunction", {"execution": "it-gate-1"})


def versions(client) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))


def tags(client, version) -> dict[str, str]:
    return dict(client.get_model_version(MODEL, str(version)).tags)


def test_the_first_model_is_served_because_it_beats_the_prior(client, first):
    assert (first["status"], first["version"], first["promoted"]) == ("trained", 1, True), first
    t = tags(client, 1)
    assert t["compared_with_version"] == "prior"
    assert float(t["logloss_diff_upper95"]) < 0 and t["gate_rows"] == "6000"
    assert "beats the constant prior" in first["reason"] and "6000 holdout rows" in first["reason"]


def test_a_200_row_file_after_a_trained_model_trains_nothing_and_says_why(cloud, client, first):
    put_parts(cloud.store, 3, 1, 200, seed=SEED)
    cloud.set_env("TrainFunction", MIN_NEW_ROWS="1000")
    try:
        out = cloud.invoke("TrainFunction", {"execution": "it-gate-tiny"})
    finally:
        cloud.set_env("TrainFunction", MIN_NEW_ROWS=TEST_STACK_PARAMETERS["CTR_MIN_NEW_ROWS"])
    assert (out["status"], out["version"], out["promoted"]) == ("skipped", None, False)
    assert out["reason"].startswith("not enough new data: 200 of 1000 rows (MinNewRows) "
                                    "after part 2")
    assert versions(client) == [1]


def test_an_equal_candidate_on_ample_data_is_promoted_with_its_bound(cloud, client, first):
    put_parts(cloud.store, 4, 2, ROWS, seed=SEED)
    out = cloud.invoke("TrainFunction", {"execution": "it-gate-equal"})
    assert out["status"] == "trained" and out["version"] == 2, out
    t = tags(client, 2)
    upper, tolerance = float(t["logloss_diff_upper95"]), float(t["promotion_tolerance"])
    print(f"\nequal candidate: mean {t['logloss_diff_mean']}, upper {upper:+.6f}, "
          f"tolerance {tolerance}, {t['gate_rows']} rows, {t['gate_blocks']} blocks")
    assert out["promoted"] is True and upper <= tolerance, t
    assert t["compared_with_version"] == "1" and int(t["gate_rows"]) == 10_020
    assert f"{int(t['gate_rows'])} holdout rows" in out["reason"]
