"""Monitoring without a cloud: the drift math, the training baseline, the auto-rollback
rule, and the monitor step's reports, metrics, time series, skew and rollback on an
in-memory S3 and a fake registry."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ctr import layout, synth
from ctr.features import FeatureTransform
from ctr.metrics import PairedBound
from ctr.monitoring.baseline import Baseline, build_baseline, cat_counts, int_counts
from ctr.monitoring.drift import DriftPolicy, feature_drift, js_distance, prediction_drift
from ctr.monitoring.monitor import MonitorPolicy, run_monitor
from ctr.monitoring.reports import DriftReport, MonitoringSummary, QualityReport, SkewReport
from ctr.monitoring.rollback import RollbackEvidence, RollbackPolicy, decide_rollback
from ctr.predlog import PredictionRecord
from ctr.registry import audit
from ctr.registry.decision import GatePolicy
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.synth_parts import parquet_bytes
from tests.unit.serving_support import (
    MODEL_NAME,
    FakeMlflowClient,
    copy_downloader,
    sample_table,
    tiny_predictor,
)

# --------------------------------------------------------------------------- drift math


def test_js_distance_is_zero_for_equal_one_for_disjoint_symmetric_and_scale_free():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.1, 0.1, 0.4, 0.4])
    assert js_distance(p, p) == 0.0
    assert js_distance(p * 1000, p) == pytest.approx(0.0, abs=1e-12)   # counts vs shares
    assert js_distance([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)
    assert js_distance(p, q) == pytest.approx(js_distance(q, p))
    assert 0 < js_distance(p, q) < 1
    assert math.isfinite(js_distance([1, 0], [0.5, 0.5]))       # an empty bin is fine
    assert js_distance([0, 0], [1, 2]) == 0.0                     # nothing to compare
    with pytest.raises(ValueError, match="bins"):
        js_distance([1, 2], [1, 2, 3])


def test_stationary_sampling_noise_matches_theory_and_stays_below_the_threshold():
    """A sample of n rows over K bins: E[JS divergence] ~ (K-1) / (8 n ln 2) bits."""
    rng = np.random.default_rng(0)
    k, n, draws = 22, 10_000, 200
    truth = rng.dirichlet(np.ones(k))
    divs = [js_distance(truth, rng.multinomial(n, truth)) ** 2 for _ in range(draws)]
    expected = (k - 1) / (8 * n * math.log(2))
    assert np.mean(divs) == pytest.approx(expected, rel=0.15)
    assert math.sqrt(max(divs)) < DriftPolicy().threshold / 2


# --------------------------------------------------------------------------- baseline

@pytest.fixture(scope="module")
def train_table() -> pa.Table:
    return synth.generate_table(30_000, seed=5)[0]


@pytest.fixture(scope="module")
def transform(train_table) -> FeatureTransform:
    return FeatureTransform.fit(train_table)


@pytest.fixture(scope="module")
def baseline(train_table, transform) -> Baseline:
    preds = np.random.default_rng(1).beta(2, 6, 5000)
    return build_baseline(train_table, preds, transform)


def test_the_baseline_has_every_feature_with_shares_that_sum_to_one(baseline, train_table):
    assert [b.feature for b in baseline.ints] == list(INT_COLUMNS)
    assert [b.feature for b in baseline.cats] == list(CAT_COLUMNS)
    assert baseline.rows == 30_000 and baseline.holdout_rows == 5000
    for ib in baseline.ints:
        assert sum(ib.freqs) == pytest.approx(1.0)
        assert ib.edges == sorted(set(ib.edges)) and len(ib.freqs) == len(ib.edges) + 2
        nulls = train_table.column(ib.feature).null_count / train_table.num_rows
        assert ib.missing_share == pytest.approx(nulls) == pytest.approx(ib.freqs[-1])
    for cb in baseline.cats:
        assert sum(cb.freqs) == pytest.approx(1.0) and len(cb.freqs) == len(cb.values) + 2
        top = cb.freqs[:len(cb.values)]
        assert top == sorted(top, reverse=True)              # most frequent first
        assert 0 <= (cb.unseen_share or 0) <= 1
    assert baseline.prediction is not None
    assert np.allclose(baseline.prediction.freqs, 0.1, atol=0.01)   # quantile bins
    assert Baseline.from_json(baseline.to_json()) == baseline


def test_counting_uses_the_baselines_bins():
    column = pa.array([1, 5, None, 9, 10], pa.int64())
    assert int_counts(column, [5.0, 10.0]).tolist() == [1, 2, 1, 1]   # [..5) [5..10) [10..) NA
    cats = pa.array(["a", "b", None, "z", "a"])
    assert cat_counts(cats, ["a", "b"]).tolist() == [2, 1, 1, 1]      # a b other missing
    assert cat_counts(cats, []).tolist() == [4, 1]


def test_build_summarises_only_the_newest_max_rows(train_table):
    b = build_baseline(train_table, np.empty(0), max_rows=1000)
    assert (b.rows, b.holdout_rows, b.prediction) == (1000, 0, None)
    assert all(cb.unseen_share is None for cb in b.cats)            # no transform given


def test_stationary_rows_flag_nothing_and_a_shift_flags_exactly_the_shifted(
        baseline, transform):
    policy = DriftPolicy()
    same = synth.generate_table(5000, seed=5, start_row=40_000)[0]
    drift = feature_drift(same, baseline, policy, transform)
    assert [f.feature for f in drift if f.flagged] == []
    assert max(f.score for f in drift) < policy.threshold
    moved = synth.generate_table(5000, seed=5, start_row=40_000,
                                 shift={"I5": 1.0, "C2": 50})[0]
    drift = feature_drift(moved, baseline, policy, transform)
    assert [f.feature for f in drift if f.flagged] == ["I5", "C2"]
    # Too few rows: the same shift is scored but flags nothing.
    small = feature_drift(moved.slice(0, 500), baseline, replace(policy, min_rows=1000))
    assert not any(f.flagged for f in small) and max(f.score for f in small) > 0.1


def test_prediction_drift_against_the_holdout_histogram(baseline):
    policy = DriftPolicy()
    rng = np.random.default_rng(2)
    same = prediction_drift(rng.beta(2, 6, 5000), baseline, policy)
    moved = prediction_drift(rng.beta(6, 2, 5000), baseline, policy)
    assert same is not None and moved is not None
    assert (same.flagged, moved.flagged) == (False, True)


# --------------------------------------------------------------------------- rollback rule

def evidence(**kw: Any) -> RollbackEvidence:
    base = dict(part=7, rows=300_000, production_version=3, previous_version=2,
                logloss_difference=PairedBound(-0.01, -0.004, -0.016, 300_000, 50),
                previous_calibration=(1.01, 0.98, 1.04))
    return RollbackEvidence(**{**base, **kw})


@pytest.mark.parametrize(("changes", "policy", "roll_back", "why"), [
    ({}, {}, True, "beats production v3 on fresh data"),
    ({}, {"enabled": False}, False, "AutoRollback is off"),
    ({"previous_version": None}, {}, False, "no previous version"),
    ({"already_rolled_back": True}, {}, False, "already rolled back once"),
    ({"previous_demoted_by_rollback": True}, {}, False, "never restored automatically"),
    ({"rows": 1000}, {}, False, "fewer than RollbackMinRows"),
    ({"logloss_difference": PairedBound(-0.01, -0.0005, -0.02, 300_000, 50)}, {}, False,
     "not proven better"),                    # better, but not beyond the tolerance
    ({"logloss_difference": PairedBound(0.002, 0.004, 0.0, 300_000, 50)}, {}, False,
     "not proven better"),
    ({"previous_calibration": (1.3, 1.2, 1.4)}, {}, False, "miscalibrated"),
    ({"logloss_difference": PairedBound(-0.01, -0.004, -0.016, 300_000, 1)}, {}, False,
     "no paired evidence"),
])
def test_the_rollback_rule(changes, policy, roll_back, why):
    decision = decide_rollback(evidence(**changes), RollbackPolicy(**policy))
    assert decision.roll_back is roll_back and why in decision.reason, decision.reason


def test_the_rollback_rule_uses_the_gates_tolerance():
    tight = RollbackPolicy(gate=GatePolicy(tolerance=0.01))
    assert not decide_rollback(evidence(), tight).roll_back     # upper -0.004 > -0.01


# --------------------------------------------------------------------------- the step

class RegistryFake(FakeMlflowClient):
    """FakeMlflowClient plus the alias and tag writes of ctr.registry.promotion."""

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.versions[int(version)].tags[key] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)


class Sink:
    def __init__(self) -> None:
        self.data: list[dict[str, Any]] = []

    def publish(self, data: list[dict[str, Any]]) -> int:
        self.data.extend(data)
        return len(data)


PART_ROWS = 12_000


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Store, RegistryFake]:
    """Production v2 (19 rounds on 3,000 rows: overfit, with a baseline), previous v1 (4
    rounds: better on new rows); both trained on part 0's rows; parts 1-2 are fresh."""
    store = Store(MemoryS3(), "bucket")
    registry = RegistryFake(tmp_path / "mlflow")
    better, weak = tiny_predictor(0), tiny_predictor(5)
    v1 = registry.add_version(better)
    v2 = registry.add_version(weak)
    for v in (v1, v2):
        registry.versions[v].tags["data_last_part"] = "0"
    table = sample_table()
    base = build_baseline(table, weak.predict_table(table), weak.transform)
    run_dir = tmp_path / "mlflow" / registry.versions[v2].run_id / "monitoring"
    run_dir.mkdir()
    (run_dir / "baseline.json").write_bytes(base.to_json())
    registry.set_alias("production", v2)
    registry.set_alias("previous", v1)
    store.put(layout.parquet_key(0), parquet_bytes(table))
    for i in (1, 2):
        part = synth.generate_table(PART_ROWS, seed=0, start_row=i * PART_ROWS)[0]
        store.put(layout.parquet_key(i), parquet_bytes(part))
    return store, registry


POLICY = MonitorPolicy(drift=DriftPolicy(min_rows=1000),
                       rollback=RollbackPolicy(min_rows=5000))


def test_the_monitor_reports_publishes_and_rolls_back_once(setup):
    store, registry = setup
    sink, logged = Sink(), []
    recorder = audit.AuditRecorder(store, None, actor="exec-1")
    out = run_monitor(store, registry, MODEL_NAME, policy=POLICY, sink=sink,
                      log_series=lambda run, values, step: logged.append((run, step, values)),
                      recorder=recorder, downloader=copy_downloader)
    assert (out.status, out.evaluated, out.not_fresh, out.pending) == (
        "evaluated", [1], [0], [2]), out
    assert out.rolled_back and out.rollback is not None
    assert (out.rollback.restored, out.rollback.rolled_back, out.rollback.part) == (1, 2, 1)
    # The reports of part 1.
    quality = QualityReport.model_validate_json(store.get(layout.quality_key(1)).body)
    assert [(m.role, m.version) for m in quality.models] == [("production", 2), ("previous", 1)]
    assert quality.comparison is not None and quality.comparison.previous_better
    prod = quality.models[0].figures
    assert prod.rows == PART_ROWS and prod.auc is not None and prod.normalized_entropy > 0
    assert quality.models[0].holdout_logloss == pytest.approx(0.48)
    drift = DriftReport.model_validate_json(store.get(layout.drift_key(1)).body)
    assert drift.baseline_version == 2 and drift.flagged == [] and len(drift.features) == 39
    assert not store.exists(layout.quality_key(0))              # part 0 is v2's own data
    # Metrics: production's on both dimension sets (the alarms read `Model`), previous's
    # per version only; MLflow series on both runs, step = part index.
    alarm_series = [d for d in sink.data if d["Dimensions"] == [
        {"Name": "Model", "Value": MODEL_NAME}]]
    assert {d["MetricName"] for d in alarm_series} >= {
        "FreshLoglossRatio", "FreshCalibrationDeviation", "DriftedFeatures"}
    assert {d["Dimensions"][1]["Value"] for d in sink.data if len(d["Dimensions"]) == 2} == {
        "1", "2"}
    assert sorted((run, step) for run, step, _ in logged) == [("run0001", 1), ("run0002", 1)]
    # The rollback: aliases, the demoted version's tag, the audited numbers, the summary.
    assert registry.aliases == {"production": "1"}
    assert registry.versions[2].tags["demoted_by_auto_rollback"] == "true"
    events = [e for e in audit.list_events(store, MODEL_NAME) if e.kind == "rollback"]
    assert len(events) == 1 and events[0].event_id == out.rollback.audit_event_id
    numbers = events[0].numbers
    assert numbers["logloss_diff_upper95"] < -0.001 and numbers["part"] == 1
    assert numbers["restored_version"] == 1 and numbers["rows"] == PART_ROWS
    summary = MonitoringSummary.model_validate_json(store.get(layout.MONITORING_SUMMARY_KEY).body)
    assert (summary.production_version, summary.previous_version) == (1, None)
    assert [q.part for q in summary.quality] == [1] and len(summary.rollbacks) == 1
    assert summary.drift is not None and summary.drift.part == 1

    # The next run: v1 serves, without a previous; part 2 is scored, part 1 is not again.
    # v1 has no baseline: quality only, and the summary says why.
    again = run_monitor(store, registry, MODEL_NAME, policy=POLICY, sink=sink,
                        recorder=recorder, downloader=copy_downloader)
    assert (again.evaluated, again.rolled_back, again.production_version) == ([2], False, 1)
    assert not store.exists(layout.drift_key(2))
    summary = MonitoringSummary.model_validate_json(store.get(layout.MONITORING_SUMMARY_KEY).body)
    assert any("no training baseline" in n for n in summary.notes)
    keys = sorted(store.list_keys("monitoring/"))
    third = run_monitor(store, registry, MODEL_NAME, policy=POLICY, recorder=recorder,
                        downloader=copy_downloader)
    assert (third.status, third.evaluated) == ("nothing_new", [])
    assert sorted(store.list_keys("monitoring/")) == keys           # nothing new written
    assert len([e for e in audit.list_events(store, MODEL_NAME) if e.kind == "rollback"]) == 1


def test_auto_rollback_off_reports_the_evidence_and_keeps_production(setup):
    store, registry = setup
    policy = replace(POLICY, rollback=replace(POLICY.rollback, enabled=False))
    out = run_monitor(store, registry, MODEL_NAME, policy=policy, downloader=copy_downloader)
    assert (out.evaluated, out.rolled_back) == ([1, 2], False)
    assert registry.aliases == {"production": "2", "previous": "1"}
    quality = QualityReport.model_validate_json(store.get(layout.quality_key(2)).body)
    assert quality.comparison is not None and quality.comparison.previous_better


def served_lines(table: pa.Table) -> list[list[str]]:
    rows = table.to_pylist()
    return [["" if r[c] is None else str(r[c]) for c in FEATURE_COLUMNS] for r in rows]


def test_served_traffic_is_compared_with_the_baseline(setup):
    store, registry = setup
    now = datetime.now(tz=UTC)
    served = synth.generate_table(3000, seed=0, start_row=50_000, shift={"I6": 1.5})[0]
    lines = [PredictionRecord(request_id=f"r{i}", time=now.isoformat(), model_version=2,
                              run_id="run0002", row=0, fields=fields,
                              probability=0.25).model_dump_json()
             for i, fields in enumerate(served_lines(served))]
    store.put(f"predictions/{now:%Y/%m/%d/%H}/stream-1-a", "\n".join(lines[:1000]).encode())
    store.put(f"predictions/{now:%Y/%m/%d/%H}/stream-1-b",
              ("\n".join(lines[1000:]) + "\nnot json\n").encode())
    policy = replace(POLICY, rollback=replace(POLICY.rollback, enabled=False))
    out = run_monitor(store, registry, MODEL_NAME, policy=policy, downloader=copy_downloader)
    assert out.skew_records == 3000
    skew_keys = list(store.list_keys("monitoring/skew/"))
    assert len(skew_keys) == 1
    skew = SkewReport.model_validate_json(store.get(skew_keys[0]).body)
    assert skew.records == 3000 and skew.baseline_version == 2
    assert skew.flagged == ["I6"]
    assert skew.prediction is not None and skew.prediction.flagged    # constant 0.25
    summary = json.loads(store.get(layout.MONITORING_SUMMARY_KEY).body)
    assert summary["skew"]["flagged"] == ["I6"]


def test_no_production_version_is_an_answer_with_a_summary(tmp_path):
    store = Store(MemoryS3(), "bucket")
    out = run_monitor(store, RegistryFake(tmp_path), MODEL_NAME)
    assert (out.status, out.production_version, out.evaluated) == ("no_model", None, [])
    summary = MonitoringSummary.model_validate_json(store.get(layout.MONITORING_SUMMARY_KEY).body)
    assert summary.production_version is None and summary.notes


def test_the_bench_section_measures_the_step_on_real_models():
    from ctr_infra.bench import monitor as bench

    report = bench.run(rows=3000, train_rows=10_000)
    assert report["rows"] == 3000 and report["seconds_per_million"] > 0
    assert report["flagged"] == [] and "s per 1M rows" in bench.to_markdown(report)


def test_the_handler_reads_its_policy_from_the_stack_parameters(load_handler, monkeypatch):
    app = load_handler("monitor", monkeypatch, MLFLOW_TRACKING_URI="http://127.0.0.1:9",
                       DRIFT_THRESHOLD="0.2", MONITOR_MIN_ROWS="500", AUTO_ROLLBACK="false",
                       ROLLBACK_MIN_ROWS="1000", PROMOTION_TOLERANCE="0.002",
                       ALARM_PREFIX="stack-monitor-")
    policy = app.settings.policy()
    assert (policy.drift.threshold, policy.drift.min_rows) == (0.2, 500)
    assert (policy.rollback.enabled, policy.rollback.min_rows) == (False, 1000)
    assert policy.rollback.gate.tolerance == 0.002
    assert app.settings.alarm_prefix == "stack-monitor-"
