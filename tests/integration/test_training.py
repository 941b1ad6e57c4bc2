"""Training on the local cloud: synthetic data with known truth -> chunk + aggregate ->
the deployed train function -> MLflow run, registered versions, gated promotion,
rollback. Tests run in file order and share one model history:

    parts 0-2 -> v1 (production)      no new part -> skipped
    part 3    -> v2 (promoted only if the gate's bound allows it, on the newest rows)
    part 4    -> v3 forced to 1 round -> rejected, production unchanged
    `ctr model promote 2`, `ctr model rollback` -> production back to v1
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from ctr import ingest, layout, registry, synth
from ctr import metrics as m
from ctr.training import WindowSpec, load_window
from tests.cloud import TEST_STACK_PARAMETERS

CHUNK = 5000
TOTAL_CHUNKS = 5
MODEL = os.environ.get("MODEL_NAME", "criteo_ctr_model")
CTR = str(Path(sys.executable).with_name("ctr"))
# The window the deployed train function cuts (the suite's stack parameters).
SPEC = WindowSpec(holdout_min_rows=int(TEST_STACK_PARAMETERS["CTR_HOLDOUT_MIN_ROWS"]))


@pytest.fixture(scope="module")
def client(cloud) -> MlflowClient:
    return MlflowClient(tracking_uri=cloud.mlflow_uri)


@pytest.fixture(scope="module")
def source(cloud, tmp_path_factory) -> Path:
    cloud.reset_data()
    path = tmp_path_factory.mktemp("training") / "train.txt"
    synth.write_tsv(path, CHUNK * TOTAL_CHUNKS, seed=21, progress=False)
    ingest.put(cloud.store, str(path), progress=False)
    return path


def add_parts(cloud, count: int) -> None:
    for _ in range(count):
        assert cloud.invoke("ChunkFunction", {"chunk_lines": CHUNK})["status"] == "chunked"
    cloud.invoke("AggregateFunction", {})


def aliases(client) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}


def tags(client, version) -> dict[str, str]:
    return dict(client.get_model_version(MODEL, str(version)).tags)


def ctr_cli(cloud, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CTR, "model", *args, "--tracking-uri", cloud.mlflow_uri,
                           "--model-name", MODEL], capture_output=True, text=True,
                          timeout=120, check=False)


def test_first_training_logs_a_complete_run_and_becomes_production(cloud, client, source):
    add_parts(cloud, 3)
    out = cloud.invoke("TrainFunction", {"execution": "it-train-1"})
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 1, True), out
    assert aliases(client) == {"production": "1"}

    run = client.get_run(out["run_id"])
    for key in ("holdout_logloss", "holdout_auc", "calibration_error", "train_rows",
                "holdout_rows", "positive_rate", "training_seconds", "peak_rss_mb"):
        assert key in run.data.metrics, key
    # 15,000 rows: holdout max(200, 1,500), validation 10% of the rest, training the rest.
    assert run.data.metrics["train_rows"] == 12_150
    assert run.data.metrics["validation_rows"] == 1_350
    assert run.data.metrics["holdout_rows"] == 1_500
    for key in ("max_depth", "eta", "num_boost_round", "max_train_rows", "max_categories"):
        assert key in run.data.params, key
    assert run.data.params["max_depth"] == "8" and run.data.params["eta"] == "0.15"
    plots = {f.path for f in client.list_artifacts(out["run_id"], "plots")}
    assert plots == {"plots/roc.png", "plots/reliability.png",
                     "plots/feature_importance.png", "plots/learning_curve.png"}
    assert client.list_artifacts(out["run_id"], "feature_transform")
    inputs = {d.dataset.name: [t.value for t in d.tags] for d in run.inputs.dataset_inputs}
    p = [layout.parquet_key(i) for i in range(3)]
    assert inputs == {f"{p[0]}[0:5000]": ["training"], f"{p[1]}[0:5000]": ["training"],
                      f"{p[2]}[0:2150]": ["training"], f"{p[2]}[2150:3500]": ["validation"],
                      f"{p[2]}[3500:5000]": ["holdout"]}
    assert all(d.dataset.digest for d in run.inputs.dataset_inputs)

    # The registered model loads and predicts from MLflow's artifact store (the bucket).
    predictor = registry.load_predictor(client, MODEL, 1)
    holdout = load_window(cloud.store, SPEC).holdout
    y = holdout.column("label").to_numpy()
    assert m.logloss(y, predictor.predict_table(holdout)) == pytest.approx(
        run.data.metrics["holdout_logloss"], abs=1e-6)

    t = tags(client, 1)
    assert t["status"] == "production" and t["execution"] == "it-train-1"
    assert t["data_window"].startswith("parquet parts 0-2, 15000 rows")
    assert "beats the constant prior" in t["status_reason"]
    assert t["compared_with_version"] == "prior" and float(t["logloss_diff_upper95"]) < 0


def test_no_new_part_means_a_clean_skip(cloud, client, source):
    out = cloud.invoke("TrainFunction", {"execution": "it-train-skip"})
    assert out["status"] == "skipped" and "no new data" in out["reason"]
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1


def test_more_data_is_promoted_only_if_the_bound_allows_it(cloud, client, source):
    add_parts(cloud, 1)
    out = cloud.invoke("TrainFunction", {"execution": "it-train-2"})
    assert out["status"] == "trained" and out["version"] == 2
    t = tags(client, 2)
    prod, upper = float(t["production_holdout_logloss"]), float(t["logloss_diff_upper95"])
    tolerance = float(t["promotion_tolerance"])
    if out["promoted"]:
        assert upper <= tolerance, t
    else:                                   # the bound, or a guard, said no (with numbers)
        assert upper > tolerance or "calibration" in out["reason"] or "AUC" in out["reason"]
    # Independently: both versions scored on the newest rows (this run's holdout) give the
    # recorded numbers.
    holdout = load_window(cloud.store, SPEC).holdout
    y = holdout.column("label").to_numpy()
    v1, v2 = (registry.load_predictor(client, MODEL, v) for v in (1, 2))
    assert prod == pytest.approx(m.logloss(y, v1.predict_table(holdout)), abs=1e-5)
    diff = m.paired_difference(m.per_row_logloss(y, v2.predict_table(holdout))
                               - m.per_row_logloss(y, v1.predict_table(holdout)))
    assert upper == pytest.approx(diff.upper, abs=2e-6) and t["gate_rows"] == str(len(y))
    expected = {"production": "2", "previous": "1"} if out["promoted"] else {"production": "1"}
    assert aliases(client) == expected


def test_a_one_round_model_is_rejected_and_production_is_unchanged(cloud, client, source):
    before = aliases(client)
    add_parts(cloud, 1)
    out = cloud.invoke("TrainFunction", {"execution": "it-train-weak", "num_boost_round": 1})
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 3, False), out
    assert aliases(client) == before
    t = tags(client, 3)
    assert t["status"] == "rejected" and "worse than production" in t["status_reason"]
    assert float(t["candidate_holdout_logloss"]) > float(t["production_holdout_logloss"])
    assert client.get_run(out["run_id"]).data.params["num_boost_round"] == "1"


def test_promote_and_rollback_from_the_command_line(cloud, client, source):
    promoted = ctr_cli(cloud, "promote", "2")
    assert promoted.returncode == 0, promoted.stderr
    assert aliases(client) == {"production": "2", "previous": "1"}
    rolled = ctr_cli(cloud, "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert "production = v1" in rolled.stdout
    assert aliases(client) == {"production": "1"}
    assert tags(client, 2)["status"] == "archived" and tags(client, 1)["status"] == "production"
    listed = ctr_cli(cloud, "list", "--json")
    versions = {v["version"]: v for v in json.loads(listed.stdout)}
    assert versions[1]["aliases"] == ["production"] and versions[3]["status"] == "rejected"
    assert np.isfinite(versions[3]["metrics"]["holdout_logloss"])
