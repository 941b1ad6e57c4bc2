"""MLflow logging, gated promotion, promote/rollback/list, against a local SQLite
tracking store with artifacts in tmp_path (no server, no sockets)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from mlflow import MlflowClient

from ctr import layout, registry, synth
from ctr import metrics as m
from ctr.errors import NoModelError, NotFoundError, TransientError
from ctr.monitoring.baseline import Baseline
from ctr.registry import gate as gating
from ctr.registry import names, runlog, versions
from ctr.registry.decision import GatePolicy
from ctr.registry.train_step import TrainPolicy, train_and_register
from ctr.storage import Store
from ctr.training import TrainParams, WindowSpec, load_window
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import parquet_bytes, put_parts

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROWS = 4000
# Small, fast and robust on a few thousand rows; the recipe itself is tested elsewhere.
PARAMS = TrainParams(num_boost_round=40, early_stopping_rounds=5, max_depth=4, eta=0.3,
                     min_count=20, max_categories=50, nthread=1)
WEAK = TrainParams(num_boost_round=1, max_depth=1, eta=0.05, nthread=1)
# A first model that clearly beats the constant prior but leaves room for a better one.
FIRST = TrainParams(num_boost_round=3, early_stopping_rounds=0, max_depth=2, eta=0.3,
                    min_count=20, max_categories=50, nthread=1)
# The production defaults scaled to 4,000-row parts.
POLICY = TrainPolicy(window=WindowSpec(max_rows=40_000, holdout_min_rows=400),
                     gate=GatePolicy(tolerance=0.001), min_new_rows=1)


@pytest.fixture(scope="module")
def client(sqlite_mlflow):
    return sqlite_mlflow


def _experiment(client: MlflowClient, name: str, root: Path) -> str:
    """Pre-create the experiment so its artifacts land in tmp, not in ./mlruns."""
    return client.create_experiment(name, artifact_location=(root / name).as_uri())


def _aliases(client, name) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def _tags(client, name, version) -> dict[str, str]:
    return dict(client.get_model_version(name, str(version)).tags)


class Scenario:
    """One model's life, run once for the module (training is the slow part):
    weak v1 -> skip -> better v2 promoted -> 1-round v3 rejected -> forced v4 that
    crashed before its gate -> v4 gated on the next call."""

    def __init__(self, client: MlflowClient, root: Path) -> None:
        self.client, self.name, self.experiment = client, "scenario_model", "scenario_exp"
        _experiment(client, self.experiment, root)
        self.store = Store(MemoryS3(), "bucket")
        self.results: dict[str, dict] = {}
        self.aliases: dict[str, dict[str, str]] = {}
        self.tags: dict[str, dict[int, dict[str, str]]] = {}   # step -> version -> tags

    def train(self, step: str, params: TrainParams, **kw) -> dict:
        out = train_and_register(
            self.store, self.client, model_name=self.name, experiment_name=self.experiment,
            params=params, policy=kw.pop("policy", POLICY), execution=f"exec-{step}",
            **kw).to_payload()
        self.results[step] = out
        self.aliases[step] = _aliases(self.client, self.name) if out["version"] else {}
        self.tags[step] = {int(v.version): dict(v.tags) for v in
                           self.client.search_model_versions(f"name='{self.name}'")}
        return out


@pytest.fixture(scope="module")
def scenario(client, tmp_path_factory) -> Scenario:
    s = Scenario(client, tmp_path_factory.mktemp("artifacts"))
    s.results["empty"] = train_and_register(
        s.store, client, model_name=s.name, experiment_name=s.experiment).to_payload()
    put_parts(s.store, 0, 2, ROWS, seed=7)
    s.train("v1", FIRST)
    s.train("skip", PARAMS)
    put_parts(s.store, 2, 1, ROWS, seed=7)
    s.train("v2", PARAMS)
    s.holdout_v2 = load_window(s.store, POLICY.window).holdout
    put_parts(s.store, 3, 1, ROWS, seed=7)
    s.train("v3", WEAK)
    s.holdout_v3 = load_window(s.store, POLICY.window).holdout

    real_gate = gating.gate
    def crash(*a, **k):
        raise RuntimeError("simulated crash between register and gate")
    gating.gate = crash
    try:
        with pytest.raises(RuntimeError):
            s.train("v4-crash", PARAMS, force=True)
    finally:
        gating.gate = real_gate
    s.pending_tags = _tags(client, s.name, 4)
    s.train("v4-resumed", PARAMS)
    return s


def test_no_parts_is_a_clean_skip(scenario):
    out = scenario.results["empty"]
    assert out["status"] == "skipped" and "no parquet parts" in out["reason"]
    assert out["version"] is None and out["promoted"] is False


def test_first_version_becomes_production_with_a_complete_run(scenario, client):
    out = scenario.results["v1"]
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 1, True)
    assert scenario.aliases["v1"] == {"production": "1"}
    run = client.get_run(out["run_id"])
    for key in ("holdout_logloss", "holdout_auc", "calibration_error", "train_rows",
                "holdout_rows", "positive_rate", "training_seconds", "peak_rss_mb"):
        assert key in run.data.metrics, key
    assert run.data.metrics["train_rows"] == 6480 and run.data.params["max_depth"] == "2"
    assert run.data.tags["execution"] == "exec-v1"
    artifacts = {f.path for f in client.list_artifacts(out["run_id"], "plots")}
    assert artifacts == {f"plots/{n}" for n in ("roc.png", "reliability.png",
                                                "feature_importance.png",
                                                "learning_curve.png")}
    png = Path(client.download_artifacts(out["run_id"], "plots/roc.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.path for f in client.list_artifacts(out["run_id"], "feature_transform")] == [
        names.TRANSFORM_ARTIFACT]
    # The monitoring baseline: the training rows' bins and the holdout's predictions.
    baseline = Baseline.from_json(Path(client.download_artifacts(
        out["run_id"], names.BASELINE_ARTIFACT)).read_bytes())
    assert (baseline.rows, baseline.holdout_rows) == (6480, 800)
    inputs = {d.dataset.name: (d.dataset.digest, [t.value for t in d.tags])
              for d in run.inputs.dataset_inputs}
    # 8,000 rows: holdout max(400, 800) = 800, validation 720, training 6,480.
    p0, p1 = layout.parquet_key(0), layout.parquet_key(1)
    assert {name: roles for name, (_, roles) in inputs.items()} == {
        f"{p0}[0:4000]": ["training"], f"{p1}[0:2480]": ["training"],
        f"{p1}[2480:3200]": ["validation"], f"{p1}[3200:4000]": ["holdout"]}
    assert all(len(digest) == 16 for digest, _ in inputs.values())
    assert run.data.tags["data_holdout_rows"].startswith(f"{layout.parquet_key(1)}[3200:4000]@")
    tags = scenario.tags["v1"][1]
    assert tags["status"] == "production" and "first model" in tags["status_reason"]
    assert tags["data_window"].startswith("parquet parts 0-1, 8000 rows")
    assert tags["data_last_part"] == "1" and tags["execution"] == "exec-v1"
    assert float(tags["holdout_logloss"]) == pytest.approx(out["metrics"]["holdout_logloss"],
                                                           abs=1e-6)


def test_skips_when_no_part_is_newer_than_the_last_trained_version(scenario):
    out = scenario.results["skip"]
    assert out["status"] == "skipped" and "no new data" in out["reason"]
    assert out["version"] is None and out["run_id"] is None


def test_better_model_is_promoted_and_old_production_becomes_previous(scenario, client):
    out = scenario.results["v2"]
    assert (out["version"], out["promoted"]) == (2, True)
    assert scenario.aliases["v2"] == {"production": "2", "previous": "1"}
    assert scenario.tags["v2"][1]["status"] == "previous"
    tags = scenario.tags["v2"][2]
    assert tags["status"] == "production"
    assert tags["compared_with_version"] == "1"
    # The comparison is on the same holdout: re-score v1 on v2's holdout ourselves.
    y = scenario.holdout_v2.column("label").to_numpy()
    v1 = registry.load_predictor(client, scenario.name, 1)
    assert float(tags["production_holdout_logloss"]) == pytest.approx(
        m.logloss(y, v1.predict_table(scenario.holdout_v2)), abs=1e-6)
    assert float(tags["candidate_holdout_logloss"]) < float(tags["production_holdout_logloss"])
    assert client.get_run(out["run_id"]).data.metrics["production_holdout_logloss"] > 0


def test_worse_model_is_rejected_and_production_is_unchanged(scenario, client):
    out = scenario.results["v3"]
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 3, False)
    assert scenario.aliases["v3"] == {"production": "2", "previous": "1"}
    tags = scenario.tags["v3"][3]
    assert tags["status"] == "rejected"
    assert "worse than production v2" in tags["status_reason"]
    assert float(tags["candidate_holdout_logloss"]) > float(tags["production_holdout_logloss"])
    assert tags["compared_with_version"] == "2" and tags["promotion_tolerance"] == "0.001"
    assert float(tags["logloss_diff_upper95"]) > 0.001           # the bound decided


def test_a_version_whose_gate_never_ran_is_gated_on_the_next_call(scenario, client):
    assert scenario.pending_tags["status"] == "candidate"
    out = scenario.results["v4-resumed"]
    assert out["version"] == 4 and out["reason"].startswith("resumed gate")
    assert _tags(client, scenario.name, 4)["status"] in {"production", "rejected"}
    assert (scenario.aliases["v4-resumed"]["production"] == "4") == out["promoted"]


def test_list_versions_shows_aliases_status_and_metrics(scenario, client):
    listed = registry.snapshot(client, scenario.name).versions
    assert [v.version for v in listed] == [4, 3, 2, 1]
    by = {v.version: v for v in listed}
    assert by[3].status == "rejected" and by[3].aliases == []
    assert "holdout_logloss" in by[2].metrics and by[2].run_name.startswith("train-")
    assert by[1].data_window.startswith("parquet parts 0-1")
    # Each version's metrics name the rows they were measured on; the gate's comparison
    # (on shared rows) is listed beside them.
    assert by[2].holdout.startswith(f"{layout.parquet_key(2)}[") and by[1].holdout != by[2].holdout
    assert by[2].gate["compared_with_version"] == "1" and "logloss_diff_upper95" in by[2].gate
    assert by[1].gate["compared_with_version"] == "prior"


# --- promote / rollback on versions created directly (no training needed) -----------

@pytest.fixture
def three_versions(client, request) -> str:
    name = f"ops_{request.node.name}"
    runlog.ensure_registered_model(client, name)
    for _ in range(3):
        client.create_model_version(name, source="file:///nowhere", tags={"status": "candidate"})
    return name


def test_promote_moves_production_and_previous_and_is_idempotent(client, three_versions):
    name = three_versions
    assert registry.promote(client, name, 1).status == "promoted"
    assert _aliases(client, name) == {"production": "1"}
    registry.promote(client, name, 2)
    assert _aliases(client, name) == {"production": "2", "previous": "1"}
    assert registry.promote(client, name, 2).status == "unchanged"
    registry.promote(client, name, 3)
    assert _aliases(client, name) == {"production": "3", "previous": "2"}
    assert [_tags(client, name, v)["status"] for v in (1, 2, 3)] == [
        "archived", "previous", "production"]
    with pytest.raises(NotFoundError):
        registry.promote(client, name, 99)


def test_rollback_restores_previous_and_repeating_it_changes_nothing(client, three_versions):
    name = three_versions
    with pytest.raises(NoModelError):
        registry.rollback(client, name)
    registry.promote(client, name, 1)
    registry.promote(client, name, 2)
    out = registry.rollback(client, name)
    assert out == registry.AliasChange(status="rolled_back", production=1, rolled_back=2,
                                       previous=None)
    assert _aliases(client, name) == {"production": "1"}
    assert _tags(client, name, 1)["status"] == "production"
    assert _tags(client, name, 2)["status"] == "archived"
    assert "rolled back to v1" in _tags(client, name, 2)["status_reason"]
    again = registry.rollback(client, name)
    assert again.status == "unchanged" and _aliases(client, name) == {"production": "1"}


def test_rollback_interrupted_after_moving_production_finishes_cleanly(client, three_versions):
    name = three_versions
    registry.promote(client, name, 1)
    registry.promote(client, name, 2)
    client.set_registered_model_alias(name, "production", "1")   # crash after this step
    out = registry.rollback(client, name)
    assert out.production == 1 and _aliases(client, name) == {"production": "1"}


def test_gate_tolerance_lets_a_slightly_worse_model_through(client, scenario):
    """Same candidate, same holdout: rejected at tolerance 0, promoted at a tolerance
    larger than its gap."""
    name = scenario.name
    cand = registry.load_predictor(client, name, 3)            # the rejected 1-round model
    y = scenario.holdout_v3.column("label").to_numpy()
    prod_version = _aliases(client, name)["production"]
    prod = registry.load_predictor(client, name, prod_version)
    gap = (m.logloss(y, cand.predict_table(scenario.holdout_v3))
           - m.logloss(y, prod.predict_table(scenario.holdout_v3)))
    assert gap > 0
    runlog.ensure_registered_model(client, "tolerance_model")
    for source_version in (prod_version, "3"):
        mv = client.get_model_version(name, source_version)
        client.create_model_version(
            "tolerance_model", run_id=mv.run_id,
            source=client.get_model_version_download_uri(name, source_version))
    registry.promote(client, "tolerance_model", 1)
    strict = gating.gate(client, "tolerance_model", 2, cand, scenario.holdout_v3,
                         GatePolicy(tolerance=0.0))
    upper = strict.evidence.logloss_difference.upper
    assert upper > gap           # the bound, not the point estimate, meets the tolerance
    loose = gating.gate(client, "tolerance_model", 2, cand, scenario.holdout_v3,
                        GatePolicy(tolerance=upper * 1.01, calibration_band=1.0,
                                   auc_tolerance=1.0))
    assert (strict.promoted, loose.promoted) == (False, True)
    assert _aliases(client, "tolerance_model") == {"production": "2", "previous": "1"}
    assert strict.production_logloss == pytest.approx(loose.production_logloss)
    assert np.isfinite(strict.production_logloss)


def test_production_in_an_unreadable_transform_format_is_replaced(client, scenario,
                                                                  monkeypatch):
    """After a code upgrade that changes the transform format, the gate cannot score the
    old production model; the new version replaces it instead of being rejected forever.
    Other load failures (e.g. MLflow down) propagate, so the step is retried."""
    from ctr.errors import TransientError, ValidationError

    cand = registry.load_predictor(client, scenario.name, 3)
    runlog.ensure_registered_model(client, "format_model")
    mv = client.get_model_version(scenario.name, "3")
    for _ in range(2):
        client.create_model_version("format_model", run_id=mv.run_id,
                                    source=client.get_model_version_download_uri(
                                        scenario.name, "3"))
    registry.promote(client, "format_model", 1)

    def unreadable(*_args, **_kwargs):
        raise ValidationError("feature transform format_version 0 is not supported")

    monkeypatch.setattr(versions, "load_predictor", unreadable)
    decision = gating.gate(client, "format_model", 2, cand, scenario.holdout_v3, GatePolicy())
    assert decision.promoted and "cannot load" in decision.reason
    assert _aliases(client, "format_model") == {"production": "2", "previous": "1"}

    def mlflow_down(*_args, **_kwargs):
        raise TransientError("MLflow unavailable")

    runlog.ensure_registered_model(client, "down_model")
    for _ in range(2):
        client.create_model_version("down_model", run_id=mv.run_id,
                                    source=client.get_model_version_download_uri(
                                        scenario.name, "3"))
    registry.promote(client, "down_model", 1)
    monkeypatch.setattr(versions, "load_predictor", mlflow_down)
    with pytest.raises(TransientError):
        gating.gate(client, "down_model", 2, cand, scenario.holdout_v3, GatePolicy())
    assert _aliases(client, "down_model") == {"production": "1"}


def test_an_unreachable_tracking_server_is_a_transient_error():
    from mlflow.exceptions import MlflowException

    class Down:
        tracking_uri = "http://127.0.0.1:9"

        def search_model_versions(self, *a, **k):
            raise MlflowException("API request to http://127.0.0.1:9 failed with exception "
                                  "ConnectionError")

    store = Store(MemoryS3(), "bucket")
    put_parts(store, 0, 1, 100)
    with pytest.raises(TransientError) as err:
        train_and_register(store, Down(), model_name="m", experiment_name="e")
    assert err.value.details["error_code"] == "INTERNAL_ERROR"


def test_too_few_new_rows_since_production_is_a_clean_skip(client, tmp_path):
    """The 200-line file after a trained model: not enough new evidence, nothing
    registered, the reason names the numbers."""
    name, experiment = "evidence_model", "evidence_exp"
    _experiment(client, experiment, tmp_path)
    store = Store(MemoryS3(), "bucket")
    put_parts(store, 0, 2, ROWS, seed=11)
    policy = TrainPolicy(window=POLICY.window, gate=POLICY.gate, min_new_rows=1000)
    first = train_and_register(store, client, model_name=name, experiment_name=experiment,
                               params=PARAMS, policy=policy)
    assert first.promoted, first.reason
    put_parts(store, 2, 1, 200, seed=11)

    out = train_and_register(store, client, model_name=name, experiment_name=experiment,
                             params=PARAMS, policy=policy)

    assert (out.status, out.version) == ("skipped", None)
    assert out.reason.startswith("not enough new data: 200 of 1000 rows (MinNewRows) "
                                 "after part 1")
    assert len(client.search_model_versions(f"name='{name}'")) == 1


def test_a_first_model_that_cannot_beat_the_prior_is_not_served(client, tmp_path):
    name, experiment = "coin_model", "coin_exp"
    _experiment(client, experiment, tmp_path)
    store = Store(MemoryS3(), "bucket")
    rng = np.random.default_rng(13)
    for i in range(2):                 # labels shuffled: nothing to learn but noise
        table, _ = synth.generate_table(ROWS, seed=13, start_row=i * ROWS)
        shuffled = rng.permutation(table.column("label").to_numpy())
        table = table.set_column(0, "label", pa.array(shuffled, type=pa.int8()))
        store.put(layout.parquet_key(i), parquet_bytes(table))
    out = train_and_register(store, client, model_name=name, experiment_name=experiment,
                             params=PARAMS, policy=POLICY)
    assert out.status == "trained" and not out.promoted
    assert "does not beat the constant prior" in out.reason
    assert client.get_registered_model(name).aliases == {}
    assert _tags(client, name, out.version)["status"] == "rejected"
