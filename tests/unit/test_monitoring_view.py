"""GET /monitoring and `ctr monitor` over an in-memory bucket holding a summary written
from the typed contract, with a fake CloudWatch for the live alarm states."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ctr.monitoring.view import AlarmReader, monitoring_view
from ctr.registry import audit
from ctr.serving.app import ServingSettings, create_app
from ctr.storage import Store
from ctr_infra import cli
from ctr_infra.commands import monitor
from ctr_infra.memory_s3 import MemoryS3
from tests.monitoring_support import QUALITY_ALARM, put_summary, sample_summary

MODEL = "criteo_ctr_model"


class FakeCloudWatch:
    def __init__(self, alarms: list[dict[str, Any]], fail: bool = False) -> None:
        self.alarms, self.fail, self.prefixes = alarms, fail, []

    def get_paginator(self, name: str) -> Any:
        assert name == "describe_alarms"
        outer = self

        class Pages:
            def paginate(self, AlarmNamePrefix: str, AlarmTypes: list[str]) -> Any:
                outer.prefixes.append(AlarmNamePrefix)
                if outer.fail:
                    raise PermissionError("AccessDenied")
                return [{"MetricAlarms": [a for a in outer.alarms
                                          if a["AlarmName"].startswith(AlarmNamePrefix)],
                         "CompositeAlarms": []}]
        return Pages()


def live_alarm(name: str, state: str) -> dict[str, Any]:
    return {"AlarmName": name, "StateValue": state, "StateReason": f"{state} now",
            "StateUpdatedTimestamp": datetime(2026, 12, 2, 7, 0, tzinfo=UTC)}


class Events:
    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"} for _ in Entries]}


@pytest.fixture
def store() -> Store:
    return Store(MemoryS3(), "bucket")


def api(store: Store, reader: AlarmReader | None = None) -> TestClient:
    settings = ServingSettings(bucket_name="bucket", web_dir=None)
    return TestClient(create_app(settings, store_factory=lambda: store, alarm_reader=reader))


def test_before_the_first_summary_the_answer_says_not_yet(store):
    body = api(store).get("/monitoring").json()
    assert body["available"] is False and "no monitoring summary yet" in body["message"]
    assert body["summary"] is None and body["alarms"] == [] and body["alarms_source"] == "none"


def test_the_summary_is_served_with_its_alarms_and_the_audit_timeline(store):
    put_summary(store, sample_summary(parts=12, flagged=("I3", "C7")))
    recorder = audit.AuditRecorder(store, Events(), actor="exec-1")
    audit.record_registered(recorder, model_name=MODEL, version=1)

    response = api(store).get("/monitoring")

    assert response.status_code == 200 and response.headers["x-request-id"]
    body = response.json()
    assert body["available"] is True and body["message"] is None
    assert len(body["summary"]["quality"]) == 12
    assert body["summary"]["drift"]["flagged"] == ["I3", "C7"]
    assert body["alarms_source"] == "summary"
    assert (body["alarms"][0]["name"], body["alarms"][0]["state"]) == (QUALITY_ALARM, "ALARM")
    assert [e["kind"] for e in body["timeline"]] == ["registered"]


def test_live_alarm_states_replace_the_recorded_ones(store):
    put_summary(store, sample_summary(alarm="OK"))
    cloudwatch = FakeCloudWatch([live_alarm("ctr-test-monitor-quality-logloss", "ALARM"),
                                 live_alarm("other-stack-monitor-x", "ALARM")])
    reader = AlarmReader(lambda: cloudwatch, "ctr-test-monitor-")

    body = api(store, reader).get("/monitoring").json()

    assert body["alarms_source"] == "cloudwatch" and cloudwatch.prefixes == ["ctr-test-monitor-"]
    assert [(a["name"], a["state"]) for a in body["alarms"]] == [
        ("ctr-test-monitor-quality-logloss", "ALARM")]
    assert body["summary"]["alarms"] == body["alarms"]
    assert body["alarms"][0]["updated_at"].startswith("2026-12-02T07:00")


def test_unreadable_alarms_fall_back_to_the_summary_and_say_why(store):
    put_summary(store, sample_summary())
    reader = AlarmReader(lambda: FakeCloudWatch([], fail=True), "ctr-test-monitor-")
    body = api(store, reader).get("/monitoring").json()
    assert body["alarms_source"] == "summary" and "PermissionError" in body["alarms_error"]
    assert body["alarms"][0]["state"] == "ALARM"


def test_the_route_is_typed_in_the_openapi_document(store):
    spec = api(store).get("/openapi.json").json()
    schema = spec["paths"]["/monitoring"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/MonitoringView"}
    assert "MonitoringSummary" in spec["components"]["schemas"]


# --------------------------------------------------------------------------- ctr monitor

def test_ctr_monitor_prints_parts_drift_skew_alarms_and_a_sparkline(store):
    put_summary(store, sample_summary(parts=14, flagged=("I3",)))
    view = monitoring_view(store, MODEL, None)

    text = monitor.format_view(view, parts=12, terminal=True)

    assert "production v3, previous v2" in text
    assert "newest 12 of 14" in text and "000013" in text and "000001" not in text
    assert "flagged I3" in text and "DRIFT" in text
    assert "Serving skew (1,500 logged predictions" in text and "flagged C7" in text
    assert QUALITY_ALARM in text and "ALARM" in text
    spark = next(line for line in text.splitlines() if line.startswith("production logloss"))
    assert "▁" in spark and "█" in spark
    plain = monitor.format_view(view, parts=12, terminal=False)
    assert "production logloss over" not in plain


def test_sparkline_scales_between_the_extremes():
    assert monitor.sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert monitor.sparkline([2.0, None, 2.0]) == "▄ ▄"
    assert monitor.sparkline([]) == ""


def test_ctr_monitor_json_and_not_yet(store, monkeypatch, capsys):
    monkeypatch.setattr(monitor, "targets", lambda args: (store, None))
    assert cli.main(["monitor"]) == 0
    assert "no monitoring summary yet" in capsys.readouterr().out
    put_summary(store, sample_summary(parts=10))
    assert cli.main(["monitor", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["available"] and len(body["summary"]["quality"]) == 10
