"""Train function: newest Parquet window -> MLflow run + registered version + gated
promotion (ctr.registry.train_step). Event `ctr.steps.TrainEvent`, result
`ctr.steps.TrainResult`.

The same file is the entry point of a managed training job (TrainBackend=sagemaker):
`python3 app.py train` runs the same `_train` under SageMaker's container contract
(ctr.managed_train: event from the job's hyperparameters, result to S3).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import replace
from typing import Any

# MLflow draws tqdm progress bars for artifact transfers; in Lambda logs they are noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Lambda's home directory is read-only: matplotlib keeps its font cache in /tmp instead
# (built once per execution environment, not once per plot).
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))

from aws_lambda_powertools.metrics import MetricUnit
from mlflow import MlflowClient

from ctr import faults, managed_train
from ctr.bundle import refresh_registry_snapshot
from ctr.function import (
    FunctionSettings,
    add_metrics,
    bucket_store,
    entry_point,
    observability,
    release_memory,
)
from ctr.registry.audit import AuditRecorder, events_client
from ctr.registry.decision import GatePolicy
from ctr.registry.train_step import TrainPolicy, train_and_register
from ctr.steps import TrainEvent, parse_event
from ctr.training import DEFAULT_MAX_TRAIN_ROWS, TrainParams, WindowSpec

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    mlflow_tracking_uri: str
    model_name: str
    experiment_name: str
    max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS
    num_boost_round: int = TrainParams.num_boost_round
    holdout_min_rows: int = WindowSpec.holdout_min_rows
    holdout_share: float = WindowSpec.holdout_share
    validation_share: float = WindowSpec.validation_share
    min_new_rows: int = TrainPolicy.min_new_rows
    promotion_tolerance: float = GatePolicy.tolerance
    calibration_band: float = GatePolicy.calibration_band
    auc_tolerance: float = GatePolicy.auc_tolerance
    event_bus_name: str = "default"

    def policy(self, max_rows: int | None = None) -> TrainPolicy:
        return TrainPolicy(
            window=WindowSpec(max_rows=max_rows or self.max_train_rows,
                              holdout_min_rows=self.holdout_min_rows,
                              holdout_share=self.holdout_share,
                              validation_share=self.validation_share),
            gate=GatePolicy(tolerance=self.promotion_tolerance,
                            calibration_band=self.calibration_band,
                            auc_tolerance=self.auc_tolerance),
            min_new_rows=self.min_new_rows)


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)
client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
events = events_client()


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    try:
        return _train(event)
    finally:
        # A warm environment must not keep a training run's peak while idle.
        logger.info("memory released", extra={"rss_mb_after": release_memory()})


def _train(event: dict[str, Any] | None) -> dict[str, Any]:
    request = parse_event(TrainEvent, event)
    faults.inject("train.start")  # test-only, inert unless CTR_FAULTS names it
    params = replace(TrainParams(),
                     num_boost_round=request.num_boost_round or settings.num_boost_round)
    result = train_and_register(
        store, client, model_name=settings.model_name,
        experiment_name=settings.experiment_name, params=params,
        policy=settings.policy(request.max_train_rows), execution=request.execution,
        force=request.force,
        recorder=AuditRecorder(store, events, actor=request.execution,
                               bus_name=settings.event_bus_name))
    logger.info("train run", extra={"result": result.to_payload()})
    if result.status == "trained":
        # The registry's answer reaches S3 now, so /health can say when serving lags it
        # (a reload that fails after this promotion is healed by the next run's sync).
        refresh_registry_snapshot(client, store, settings.model_name)
        m = result.metrics
        add_metrics(metrics, {
            "ModelsTrained": (MetricUnit.Count, 1),
            "ModelsPromoted": (MetricUnit.Count, int(result.promoted)),
            "TrainingSeconds": (MetricUnit.Seconds, m.get("training_seconds")),
            "TrainRows": (MetricUnit.Count, m.get("train_rows")),
            "PeakRssMb": (MetricUnit.Megabytes, m.get("peak_rss_mb")),
            "HoldoutLogloss": (MetricUnit.NoUnit, m.get("holdout_logloss")),
        })
    else:
        metrics.add_metric(name="TrainingSkipped", unit=MetricUnit.Count, value=1)
    return result.to_payload()


def main(argv: list[str]) -> int:
    """SageMaker runs the image with `train`: the same step as the Lambda, one run per
    process; the metrics go to the job's log as one EMF document, as a Lambda's would."""
    try:
        return managed_train.run(argv, _train, store)
    finally:
        metrics.flush_metrics()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
