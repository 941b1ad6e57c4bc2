"""Monitor function: score the served model on every new Parquet part, drift and serving
skew against its training baseline, CloudWatch metrics, MLflow time series, and the
auto-rollback (ctr.monitoring.monitor). Event `ctr.steps.MonitorEvent`, result
`ctr.steps.MonitorResult`; `monitoring/summary.json` is rewritten every run.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

# MLflow draws tqdm progress bars for artifact downloads; in Lambda logs they are noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config
from mlflow import MlflowClient

from ctr.function import FunctionSettings, add_metrics, bucket_store, entry_point, observability
from ctr.monitoring.cloudwatch import CloudWatchAlarms, CloudWatchSink
from ctr.monitoring.drift import DriftPolicy
from ctr.monitoring.monitor import MonitorPolicy, run_monitor
from ctr.monitoring.rollback import RollbackPolicy
from ctr.registry import runlog
from ctr.registry.audit import AuditRecorder, events_client
from ctr.registry.decision import GatePolicy
from ctr.steps import MonitorEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    mlflow_tracking_uri: str
    model_name: str = "criteo_ctr_model"
    metrics_namespace: str = "CtrPipeline"
    alarm_prefix: str = ""
    drift_threshold: float = DriftPolicy.threshold
    prediction_drift_threshold: float = DriftPolicy.prediction_threshold
    monitor_min_rows: int = DriftPolicy.min_rows
    auto_rollback: bool = True
    rollback_min_rows: int = RollbackPolicy.min_rows
    promotion_tolerance: float = GatePolicy.tolerance
    calibration_band: float = GatePolicy.calibration_band
    monitor_max_parts: int = MonitorPolicy.max_parts
    skew_window_hours: int = MonitorPolicy.skew_hours
    event_bus_name: str = "default"

    def policy(self) -> MonitorPolicy:
        return MonitorPolicy(
            drift=DriftPolicy(threshold=self.drift_threshold,
                              prediction_threshold=self.prediction_drift_threshold,
                              min_rows=self.monitor_min_rows),
            rollback=RollbackPolicy(enabled=self.auto_rollback,
                                    min_rows=self.rollback_min_rows,
                                    gate=replace(GatePolicy(),
                                                 tolerance=self.promotion_tolerance,
                                                 calibration_band=self.calibration_band)),
            max_parts=self.monitor_max_parts, skew_hours=self.skew_window_hours)


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)
client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
cloudwatch = boto3.client("cloudwatch",
                          config=Config(retries={"max_attempts": 5, "mode": "standard"}))
events = events_client()


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(MonitorEvent, event)
    with runlog.mlflow_outage_is_transient():
        result = run_monitor(
            store, client, settings.model_name, policy=settings.policy(),
            sink=CloudWatchSink(cloudwatch, settings.metrics_namespace),
            alarms=CloudWatchAlarms(cloudwatch, settings.alarm_prefix)
            if settings.alarm_prefix else None,
            log_series=lambda run_id, values, step: runlog.log_fresh_metrics(
                client, run_id, values, step),
            recorder=AuditRecorder(store, events, actor=request.execution,
                                   bus_name=settings.event_bus_name),
            max_parts=request.max_parts)
    logger.info("monitor run", extra={"result": result.to_payload()})
    add_metrics(metrics, {
        "PartsEvaluated": (MetricUnit.Count, len(result.evaluated)),
        "AutoRollbacks": (MetricUnit.Count, int(result.rolled_back)),
        "MonitorSeconds": (MetricUnit.Seconds, result.seconds),
    })
    return result.to_payload()
