"""The page's Monitoring panel in a real browser: the serving app (under uvicorn, as the
predict function is configured) reads a bucket holding a monitoring summary of 12 parts
with two flagged features, and CloudWatch on the local cloud holds one of the stack's
monitor alarms in ALARM (the summary itself recorded OK: the page must show the live
state). Screenshots go to test-artifacts/e2e/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from ctr.registry import audit
from ctr.storage import Store
from tests.cloud import Cloud
from tests.e2e.conftest import screenshot, serving
from tests.monitoring_support import put_summary, sample_summary

PARTS = 12
FLAGGED = ("I3", "C7")


@pytest.fixture(scope="module")
def monitored_api(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run = uuid.uuid4().hex[:8]
    bucket, prefix = f"e2e-monitor-{run}", f"e2e-{run}-monitor-"
    cloud.s3.create_bucket(Bucket=bucket)
    store = Store(cloud.s3, bucket)
    put_summary(store, sample_summary(parts=PARTS, flagged=FLAGGED, alarm="OK"))
    recorder = audit.AuditRecorder(store, cloud.client("events"), actor="e2e")
    audit.record_registered(recorder, model_name="criteo_ctr_model", version=3)
    cloudwatch = cloud.client("cloudwatch")
    alarms = [f"{prefix}quality-logloss", f"{prefix}drift"]
    for name in alarms:
        cloudwatch.put_metric_alarm(
            AlarmName=name, Namespace="CtrPipeline", MetricName=name.rsplit("-", 1)[-1],
            Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=1.0,
            ComparisonOperator="GreaterThanThreshold")
    # Data behind each state, so that the emulator's own evaluation keeps them.
    cloudwatch.put_metric_data(Namespace="CtrPipeline", MetricData=[
        {"MetricName": "logloss", "Value": 2.0}, {"MetricName": "drift", "Value": 0.0}])
    cloudwatch.set_alarm_state(AlarmName=alarms[0], StateValue="ALARM",
                               StateReason="fresh-data logloss above 1.05 x holdout")
    cloudwatch.set_alarm_state(AlarmName=alarms[1], StateValue="OK", StateReason="no drift")
    try:
        with serving(cloud, bucket, tmp_path_factory.mktemp("uvicorn-monitor"),
                     MONITOR_ALARM_PREFIX=prefix) as base_url:
            yield base_url
    finally:
        cloudwatch.delete_alarms(AlarmNames=alarms)
        for key in list(store.list_keys("")):
            cloud.s3.delete_object(Bucket=bucket, Key=key)
        cloud.s3.delete_bucket(Bucket=bucket)


def test_monitoring_panel_shows_quality_drift_skew_alarm_and_timeline(
        page: Page, monitored_api: str) -> None:
    view = httpx.get(f"{monitored_api}/monitoring", timeout=30).json()
    assert view["alarms_source"] == "cloudwatch"
    states = {a["name"].rsplit("-monitor-", 1)[-1]: a["state"] for a in view["alarms"]}
    assert states["quality-logloss"] == "ALARM" and states["drift"] != "ALARM", states

    page.goto(f"{monitored_api}/")
    card = page.locator("#monitoring-card")
    expect(card).to_have_attribute("data-state", "ready")
    expect(card).to_have_attribute("data-alarm", "ALARM")
    expect(page.locator("#monitoring-alarm-state")).to_have_text("ALARM")

    # Three charts (logloss, AUC, calibration), each a point per part for both versions.
    charts = page.locator("#monitoring-charts figure")
    expect(charts).to_have_count(3)
    for metric in ("logloss", "auc", "calibration_ratio"):
        chart = page.locator(f'#monitoring-charts figure[data-metric="{metric}"]')
        expect(chart.locator(".point-production")).to_have_count(PARTS)
        expect(chart.locator(".point-previous")).to_have_count(PARTS)
    expect(page.locator("#monitoring-card .legend")).to_contain_text("production v3")
    expect(page.locator("#monitoring-card .legend")).to_contain_text("previous v2")

    # Drift: the flagged features first, marked.
    flagged = page.locator('#drift-table tr[data-flagged="true"]')
    expect(flagged).to_have_count(len(FLAGGED))
    for feature in FLAGGED:
        expect(page.locator(f'#drift-table tr[data-feature="{feature}"]')).to_have_attribute(
            "data-flagged", "true")
    expect(page.locator("#monitoring-drift h3")).to_contain_text("2 flagged")
    # Skew: the served-traffic summary.
    expect(page.locator("#monitoring-skew")).to_contain_text("1,500 logged predictions")
    expect(page.locator('#skew-table tr[data-feature="C7"]')).to_have_attribute(
        "data-flagged", "true")
    # Alarms, live from CloudWatch, and the audit timeline.
    expect(page.locator('#monitoring-alarms li[data-state="ALARM"]')).to_contain_text(
        "quality-logloss")
    expect(page.locator("#monitoring-alarms")).to_contain_text("live from CloudWatch")
    expect(page.locator("#monitoring-timeline .timeline-item")).to_have_count(1)
    page.locator("#monitoring-card").scroll_into_view_if_needed()
    screenshot(page, "monitoring-panel")

    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a 390px screen"
    screenshot(page, "monitoring-panel-mobile")


def test_before_any_summary_the_panel_says_not_yet(page: Page, empty_api: str) -> None:
    page.goto(f"{empty_api}/")
    expect(page.locator("#monitoring-card")).to_have_attribute("data-state", "empty")
    expect(page.locator("#monitoring-empty")).to_contain_text("No monitoring yet")
