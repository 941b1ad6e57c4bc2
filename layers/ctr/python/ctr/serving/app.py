"""The predict API (FastAPI; Mangum turns API Gateway events into ASGI calls).

`create_app` only assembles: the routers of `ctr.serving.routes` (POST /predict,
GET|POST /health, GET /model-info and POST /model_info, GET /samples, GET / and
/static/*, plus /docs), the error mapping of `ctr.serving.errors`, the 413 limit of
`ctr.serving.body_limit`, and one `ModelCache` (`ctr.serving.model_cache`: the model
comes from S3 only, never from MLflow) and one `SampleSource` that the routes get
through `Depends` (`ctr.serving.dependencies`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from ctr.function import bucket_store
from ctr.serving import schemas
from ctr.serving.body_limit import BodyLimit
from ctr.serving.errors import install_error_handlers
from ctr.serving.model_cache import LoadedModel, ModelCache
from ctr.serving.routes import history, predict, samples, status, web
from ctr.serving.samples import SampleSource
from ctr.serving.settings import ServingSettings
from ctr.storage import Store

__all__ = ["LoadedModel", "ModelCache", "ServingSettings", "create_app"]


def create_app(settings: ServingSettings,
               store_factory: Callable[[], Store] | None = None) -> FastAPI:
    """Build the API. `store_factory` defaults to the settings' bucket through boto3;
    tests pass a Store over a fake S3. No I/O happens until the first request."""
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
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for module in (predict, status, samples, history):
        app.include_router(module.router)
    web.install(app, web.find_web_dir(settings.web_dir))
    return app
