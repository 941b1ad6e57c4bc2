"""Prediction logs on the local cloud (issue 14, item 3): the deployed predict function,
behind API Gateway, sends sampled served predictions through the stack's Firehose
delivery stream into predictions/YYYY/MM/DD/HH/ of the bucket, one PredictionRecord per
line; every answer carries X-Request-Id; /monitoring reads the live (emulated)
CloudWatch alarms of the stack."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ctr.predlog import PredictionRecord
from ctr.schema import FEATURE_COLUMNS
from ctr_infra.bench.serve import newest_rows
from tests.synth_parts import put_parts

DELIVERY_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def served(cloud) -> str:
    """A production model behind API Gateway, logging every request."""
    cloud.reset_data()
    put_parts(cloud.store, 0, 2, 3000, seed=7)
    trained = cloud.invoke("TrainFunction", {"num_boost_round": 10, "execution": "it-plog"})
    assert trained["promoted"] is True, trained
    assert cloud.invoke("ReloadFunction")["status"] == "published"
    return cloud.api_url.rstrip("/")


@pytest.fixture
def log_everything(cloud) -> Iterator[None]:
    before = cloud.function_env("PredictFunction").get("PREDICTION_LOG_SAMPLE_RATE")
    cloud.set_env("PredictFunction", PREDICTION_LOG_SAMPLE_RATE="1.0")
    yield
    cloud.set_env("PredictFunction", PREDICTION_LOG_SAMPLE_RATE=before)


def records_for(cloud, request_id: str) -> list[tuple[str, PredictionRecord]]:
    found = []
    for key in cloud.store.list_keys("predictions/"):
        for line in cloud.store.get(key).body.decode().splitlines():
            record = PredictionRecord.model_validate_json(line)
            if record.request_id == request_id:
                found.append((key, record))
    return found


def test_served_rows_are_logged_through_firehose_with_the_request_id(
        cloud, served, log_everything):
    rows: list[dict[str, Any]] = newest_rows(cloud.store, 3)
    request_id = f"it-plog-{uuid.uuid4().hex[:8]}"

    answer = httpx.post(f"{served}/predict", json={"rows": rows},
                        headers={"x-request-id": request_id}, timeout=120)

    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == request_id
    body = answer.json()
    found = cloud.wait_for("3 records in predictions/", lambda: (
        r if len(r := records_for(cloud, request_id)) >= 3 else None),
        timeout_s=DELIVERY_TIMEOUT_S, every_s=1)
    assert len(found) == 3
    for key, _ in found:
        assert re.fullmatch(r"predictions/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+", key), key
    records = sorted((r for _, r in found), key=lambda r: r.row)
    assert [r.row for r in records] == [0, 1, 2]
    assert {(r.model_version, r.run_id) for r in records} == {
        (body["model"]["version"], body["model"]["run_id"])}
    assert [r.probability for r in records] == pytest.approx(body["predictions"])
    for record, row in zip(records, rows, strict=True):
        assert record.fields == ["" if row[c] is None else str(row[c]) for c in FEATURE_COLUMNS]


def test_an_invalid_caller_id_is_replaced_by_api_gateways(cloud, served):
    answer = httpx.get(f"{served}/health", headers={"x-request-id": "not valid!"},
                       timeout=60)
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] not in ("", "not valid!")


def test_monitoring_reads_the_stack_alarms_live(cloud, served):
    cloudwatch = cloud.client("cloudwatch")
    name = f"{cloud.cfg.stack_name}-monitor-it-{uuid.uuid4().hex[:6]}"
    cloudwatch.put_metric_alarm(
        AlarmName=name, Namespace="CtrPipeline", MetricName="ItLogloss", Statistic="Average",
        Period=60, EvaluationPeriods=1, Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold")
    cloudwatch.put_metric_data(Namespace="CtrPipeline",
                               MetricData=[{"MetricName": "ItLogloss", "Value": 3.0}])
    cloudwatch.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="it test")
    try:
        def alarm_state() -> str | None:
            view = httpx.get(f"{served}/monitoring", timeout=60).json()
            assert view["alarms_source"] == "cloudwatch", view
            return next((a["state"] for a in view["alarms"] if a["name"] == name), None)

        # The function caches the states for 15 s.
        assert cloud.wait_for(f"{name} in /monitoring", alarm_state, timeout_s=60,
                              every_s=2) == "ALARM"
    finally:
        cloudwatch.delete_alarms(AlarmNames=[name])
