"""Reload function: publish the registry's `production` version as the serving bundle.
Event `ctr.steps.ReloadEvent`:

* `{"action": "publish"}` (default; the state after a promotion, `ctr reload`):
  ctr.bundle.publish_production, result `ctr.steps.ReloadResult`; raises NoModelError
  when no version has the alias yet;
* `{"action": "sync"}` (the first step of every execution): ctr.bundle.sync_production,
  the same publish when serving and the registry differ (nothing written when they
  agree), result `ctr.steps.SyncResult`: a `ReloadResult`, or `NoModelYet` instead of
  the error.

The registry snapshot for /model-info and /health is refreshed first either way.
Settings (environment): BUCKET_NAME, MLFLOW_TRACKING_URI (required), MODEL_NAME.
"""

from __future__ import annotations

import os
from typing import Any

# MLflow draws tqdm progress bars for artifact downloads; in Lambda logs they are noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from aws_lambda_powertools.metrics import MetricUnit
from mlflow import MlflowClient

from ctr import faults
from ctr.bundle import publish_production, sync_production
from ctr.function import FunctionSettings, bucket_store, entry_point, observability
from ctr.steps import ReloadEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    mlflow_tracking_uri: str
    model_name: str = "criteo_ctr_model"


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)
client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(ReloadEvent, event)
    if request.action == "sync":
        result = sync_production(client, store, settings.model_name)
    else:
        faults.inject("reload.publish")  # test-only, inert unless CTR_FAULTS names it
        result = publish_production(client, store, settings.model_name)
    logger.info("reload", extra=result.to_payload())
    metrics.add_metric(name="ModelPublished", unit=MetricUnit.Count,
                       value=1 if result.status == "published" else 0)
    return result.to_payload()
