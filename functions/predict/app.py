"""Predict function: the FastAPI app of `ctr.serving.app` behind API Gateway (Mangum).

Settings (environment): BUCKET_NAME (required), MODEL_NAME, POINTER_TTL_SECONDS,
MAX_ROWS, MAX_BODY_BYTES, WEB_DIR (default: a `web/` directory next to this file or
the repository's). The app is built at cold start, but reads S3 only on the first
request -- except under SnapStart, where the model is loaded and warmed before the
snapshot and each restored copy refreshes its randomness, S3 connections and pointer
clock (`ctr.serving.snapstart`). Every response is counted by status class (Http2xx,
Http4xx, Http5xx).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from mangum import Mangum

from ctr.function import entry_point, observability
from ctr.serving import snapstart
from ctr.serving.app import ServingSettings, create_app

logger, tracer, metrics = observability()

settings = ServingSettings()  # type: ignore[call-arg]  # values come from the environment
app = create_app(settings)
asgi = Mangum(app, lifespan="off")
snapstart.register(app.state.model_cache)


@entry_point(logger, tracer, metrics, capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = asgi(event, context)
    status = int(response.get("statusCode", 500))
    metrics.add_metric(name=f"Http{status // 100}xx", unit=MetricUnit.Count, value=1)
    return response
