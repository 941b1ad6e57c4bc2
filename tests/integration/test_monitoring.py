"""Monitoring on the local cloud (issue 14's acceptance): the deployed train, reload and
monitor functions, real MLflow, CloudWatch metrics and alarms evaluated by the
emulator, the alarms' SNS messages on an SQS queue, and the state machine's rollback path.

    parts 0-2 (20,000 rows)            -> v1 (with its training baseline), served
    parts 3-12 (10 x 5,000, stationary) -> no drift flag, every alarm OK
    part 13: I5 and C2 shifted          -> exactly those two flagged, drift alarm + SNS
    part 14: concept shift (C14 effect) -> no feature flagged, fresh-logloss alarm
    parts 15-17 concept-shifted         -> v2 trained on them, promoted over v1
    part 18 back to the old concept     -> an execution rolls back to v1 once, audited,
                                           and serving follows in the same execution

Tests run in file order and share the stack's state.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from mlflow import MlflowClient

from ctr import layout, synth
from ctr.bundle import load_pointer
from ctr.monitoring.reports import DriftReport, MonitoringSummary, QualityReport
from ctr.registry import audit
from tests.synth_parts import parquet_bytes, put_parts

MODEL = os.environ.get("MODEL_NAME", "criteo_ctr_model")
SEED = 31
BIG, SMALL = 20_000, 5_000
CONCEPT = {"drift": 3.0, "start_row": synth.DRIFT_PERIOD_ROWS // 4}   # sin(phase) = 1
MONITOR_ENV = {"ROLLBACK_MIN_ROWS": "10000"}


def put_part(cloud, index: int, rows: int, **kwargs: Any) -> None:
    start = kwargs.pop("start_row", 0) + index * rows
    table, _ = synth.generate_table(rows, seed=SEED, start_row=start, **kwargs)
    cloud.store.put(layout.parquet_key(index), parquet_bytes(table))


@pytest.fixture(scope="module")
def stack(cloud):
    cloud.reset_data()
    before = cloud.function_env("MonitorFunction")
    cloud.set_env("MonitorFunction", **MONITOR_ENV)
    yield cloud
    cloud.set_env("MonitorFunction", **{k: before.get(k) for k in MONITOR_ENV})


@pytest.fixture(scope="module")
def client(stack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.mlflow_uri)


@pytest.fixture(scope="module")
def queue(stack) -> str:
    """An SQS queue subscribed (raw delivery) to the model events topic, where the
    monitoring alarms send their state changes."""
    sqs, sns = stack.client("sqs"), stack.client("sns")
    topic = stack.outputs["ModelEventsTopicArn"]
    url = sqs.create_queue(QueueName="ctr-monitor-alarms-test")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"})
    return str(url)


def alarm_name(cloud, short: str) -> str:
    return f"{cloud.cfg.stack_name}-monitor-{short}"


def alarm_states(cloud) -> dict[str, str]:
    alarms = cloud.client("cloudwatch").describe_alarms(
        AlarmNamePrefix=f"{cloud.cfg.stack_name}-monitor-")["MetricAlarms"]
    return {a["AlarmName"]: a["StateValue"] for a in alarms}


def alarm_messages(cloud, url: str, name: str, state: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def poll() -> bool:
        resp = cloud.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1)
        for message in resp.get("Messages", []):
            try:
                body = json.loads(message["Body"])
            except ValueError:
                body = {}
            if body.get("AlarmName") == name and body.get("NewStateValue") == state:
                got.append(body)
        return bool(got)

    cloud.wait_for(f"SNS message: {name} -> {state}", poll, timeout_s=90, every_s=0.5)
    return got


def report(cloud, model, key: str):
    return model.model_validate_json(cloud.store.get(key).body)


@pytest.fixture(scope="module")
def v1(stack, client) -> dict[str, Any]:
    put_parts(stack.store, 0, 3, BIG, seed=SEED)
    out = stack.invoke("TrainFunction", {"execution": "it-monitor-1"})
    assert (out["status"], out["version"], out["promoted"]) == ("trained", 1, True), out
    assert stack.invoke("ReloadFunction")["version"] == 1
    return out


def test_the_served_bundle_carries_the_training_baseline(stack, client, v1):
    baseline = json.loads(stack.store.get("serving/v1/baseline.json").body)
    assert [b["feature"] for b in baseline["ints"]][:2] == ["I1", "I2"]
    assert len(baseline["cats"]) == 26 and baseline["prediction"]["freqs"]
    arts = {f.path for f in client.list_artifacts(v1["run_id"], "monitoring")}
    assert arts == {"monitoring/baseline.json"}


def test_stationary_parts_flag_nothing_and_raise_no_alarm(stack, client, v1, queue):
    for index in range(3, 13):
        put_part(stack, index, SMALL)
    out = stack.invoke("MonitorFunction", {"execution": "it-monitor-stationary"})
    assert out["evaluated"] == list(range(3, 13)), out
    assert out["rolled_back"] is False and out["metrics_published"] > 0
    scores = []
    for index in range(3, 13):
        drift = report(stack, DriftReport, layout.drift_key(index))
        assert drift.flagged == [] and drift.rows == SMALL, (index, drift.flagged)
        scores += [f.score for f in drift.features]
        quality = report(stack, QualityReport, layout.quality_key(index))
        assert [m.version for m in quality.models] == [1]
    print(f"\nstationary: 10 parts x {SMALL} rows, 39 features: 0 flags, max JS distance "
          f"{max(scores):.3f} (threshold 0.1)")
    names = [alarm_name(stack, s) for s in ("fresh-logloss", "calibration", "drift")]
    stack.wait_for("every monitoring alarm OK", lambda: all(
        alarm_states(stack).get(n) == "OK" for n in names), timeout_s=90, every_s=2)
    # A second run finds nothing new: idempotent, nothing written twice.
    again = stack.invoke("MonitorFunction", {"execution": "it-monitor-again"})
    assert (again["status"], again["evaluated"]) == ("nothing_new", []), again
    history = client.get_metric_history(v1["run_id"], "fresh_logloss")
    assert sorted(m.step for m in history) == list(range(3, 13))


def test_a_covariate_shift_flags_those_features_only_and_alarms(stack, v1, queue):
    put_part(stack, 13, SMALL, shift={"I5": 1.0, "C2": 50})
    out = stack.invoke("MonitorFunction", {"execution": "it-monitor-covariate"})
    assert out["evaluated"] == [13] and out["drift_flagged"] == {"13": ["I5", "C2"]}, out
    drift = report(stack, DriftReport, layout.drift_key(13))
    shifted = {f.feature: round(f.score, 3) for f in drift.features if f.flagged}
    print(f"\ncovariate shift: flagged {shifted}")
    name = alarm_name(stack, "drift")
    assert alarm_messages(stack, queue, name, "ALARM")
    assert alarm_states(stack)[name] == "ALARM"


def test_a_concept_shift_raises_the_quality_alarm(stack, v1, queue):
    put_part(stack, 14, SMALL, **CONCEPT)
    out = stack.invoke("MonitorFunction", {"execution": "it-monitor-concept"})
    assert out["evaluated"] == [14] and out["drift_flagged"] == {"14": []}, out
    quality = report(stack, QualityReport, layout.quality_key(14)).models[0]
    ratio = quality.figures.logloss / (quality.holdout_logloss or 1)
    print(f"\nconcept shift: fresh logloss {quality.figures.logloss:.4f} = {ratio:.2f} x the "
          f"holdout's {quality.holdout_logloss:.4f}")
    assert ratio > 1.1
    name = alarm_name(stack, "fresh-logloss")
    assert alarm_messages(stack, queue, name, "ALARM")
    summary = MonitoringSummary.model_validate_json(
        stack.store.get(layout.MONITORING_SUMMARY_KEY).body)
    assert summary.production_version == 1 and summary.quality[-1].part == 14
    assert {a.name for a in summary.alarms} >= {name, alarm_name(stack, "drift")}


def test_when_previous_is_better_on_fresh_rows_it_is_restored_once_and_served(
        stack, client, v1):
    for index in range(15, 18):
        put_part(stack, index, BIG, **CONCEPT)
    stack.invoke("MonitorFunction", {"execution": "it-monitor-before-v2"})
    v2 = stack.invoke("TrainFunction", {"execution": "it-monitor-2",
                                        "max_train_rows": 3 * BIG})
    assert (v2["version"], v2["promoted"]) == (2, True), v2
    put_part(stack, 18, BIG)                  # the old concept is back
    arn = stack.start_execution("it-monitor-rollback")
    done = stack.wait_execution(arn)
    assert done["status"] == "SUCCEEDED", done
    states = stack.states_entered(arn)
    assert states.index("Sync serving model") < states.index("Evaluate served model") < \
        states.index("Publish rolled-back model")
    result = json.loads(done["output"])["monitor"]["value"]
    assert result["rolled_back"] is True and result["evaluated"] == [18], result
    # 0-2 (v1's own data) never get a report; 15-17 were evaluated with v1 before v2.
    assert result["not_fresh"] == [0, 1, 2], result
    assert (result["rollback"]["restored"], result["rollback"]["rolled_back"]) == (1, 2)
    print(f"\nauto-rollback: {result['rollback']['reason']}")
    assert load_pointer(stack.store).version == 1                 # serving followed
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"
    assert client.get_model_version(MODEL, "2").tags["demoted_by_auto_rollback"] == "true"
    rollbacks = [e for e in audit.list_events(stack.store, MODEL) if e.kind == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0].actor == "it-monitor-rollback"
    assert float(rollbacks[0].numbers["logloss_diff_upper95"]) < -0.001
    # Once: the next execution neither rolls back nor flips back.
    arn = stack.start_execution("it-monitor-after")
    assert stack.wait_execution(arn)["status"] == "SUCCEEDED"
    assert "Publish rolled-back model" not in stack.states_entered(arn)
    assert len([e for e in audit.list_events(stack.store, MODEL)
                if e.kind == "rollback"]) == 1
    assert load_pointer(stack.store).version == 1
