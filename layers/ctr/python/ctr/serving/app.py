"""The predict API (FastAPI; Mangum turns API Gateway events into ASGI calls).

`create_app` only assembles: the routers of `ctr.serving.routes` (POST /predict,
GET|POST /health, GET /model-info and POST /model_info, GET /samples, GET
/model-history, GET /monitoring, GET / and /static/*, plus /docs), X-Request-Id on every
answer (`ctr.serving.request_id`), the prediction log (`ctr.serving.prediction_log`),
the error mapping of `ctr.serving.errors`, the 413 limit of
`ctr.serving.body_limit`, and one `ModelCache` (`ctr.serving.model_cache`: the model
comes from S3 only, never from MLflow) and one `SampleSource` that the routes get
through `Depends` (`ctr.serving.dependencies`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from ctr.function import bucket_store
from ctr.monitoring.view import AlarmReader
from ctr.serving import schemas
from ctr.serving.body_limit import BodyLimit
from ctr.serving.errors import install_error_handlers
from ctr.serving.model_cache import LoadedModel, ModelCache
from ctr.serving.prediction_log import PredictionLog
from ctr.serving.request_id import RequestId
from ctr.serving.routes import history, monitoring, predict, samples, status, web
from ctr.serving.samples import SampleSource
from ctr.serving.settings import ServingSettings
from ctr.storage import Store

__all__ = ["LoadedModel", "ModelCache", "ServingSettings", "create_app"]


def create_app(settings: ServingSettings,
               store_factory: Callable[[], Store] | None = None, *,
               prediction_log: PredictionLog | None = None,
               alarm_reader: AlarmReader | None = None) -> FastAPI:
    """Build the API. `store_factory` defaults to the settings' bucket through boto3;
    tests pass a Store over a fake S3. The prediction log and the alarm reader default
    to the settings' (PREDICTION_LOG_STREAM, MONITOR_ALARM_PREFIX; off when empty).
    No I/O happens until the first request."""
    cache = ModelCache(store_factory or (lambda: bucket_store(settings)),
                       settings.pointer_ttl_seconds)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.ErrorResponse} for code in (404, 413, 422, 503)}
    app = FastAPI(
        title="ctr-pipeline predict API",
        version="1",
        description="Click-through-rate predictions from the production model, with the "
                    "exact model version and run that produced them.",
        responses=errors,
        # FastAPI's native OpenTelemetry looks up global providers (environment
        # variables) on every request; this function reports through Powertools instead.
        telemetry={"tracing": False, "metrics": False, "logs": False,
                   "operation_spans": False},
    )
    app.state.settings = settings
    app.state.model_cache = cache
    app.state.samples = SampleSource(cache, settings.pointer_ttl_seconds)
    app.state.prediction_log = prediction_log or default_prediction_log(settings)
    app.state.alarm_reader = alarm_reader or default_alarm_reader(settings)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestId)   # outermost: every answer carries X-Request-Id
    for module in (predict, status, samples, history, monitoring):
        app.include_router(module.router)
    web.install(app, web.find_web_dir(settings.web_dir))
    _document_request_id(app)
    return app


def _document_request_id(app: FastAPI) -> None:
    """Every documented answer carries X-Request-Id (added by the middleware, which
    FastAPI's schema cannot see)."""
    build = app.openapi
    header = {"description": "the request's id: the caller's X-Request-Id when valid, else "
                             "API Gateway's or Lambda's request id, else a uuid; also the "
                             "prediction log's request_id",
              "schema": {"type": "string"}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for answer in operation.get("responses", {}).values():
                        answer.setdefault("headers", {})["X-Request-Id"] = header
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def default_prediction_log(settings: ServingSettings) -> PredictionLog | None:
    if not settings.prediction_log_stream or settings.prediction_log_sample_rate <= 0:
        return None
    return PredictionLog(lambda: _client("firehose"), settings.prediction_log_stream,
                         settings.prediction_log_sample_rate)


def default_alarm_reader(settings: ServingSettings) -> AlarmReader | None:
    if not settings.monitor_alarm_prefix:
        return None
    return AlarmReader(lambda: _client("cloudwatch"), settings.monitor_alarm_prefix)


def _client(service: str) -> Any:
    """A client of its own session (boto3's default session is not safe to share with
    the request threads that create S3 clients), with short timeouts and few retries:
    the prediction log's thread and /monitoring must not hang on a slow endpoint."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2})
    return boto3.session.Session().client(service, config=config)
