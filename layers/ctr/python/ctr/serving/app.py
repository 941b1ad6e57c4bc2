"""The predict API (FastAPI; Mangum turns API Gateway events into ASGI calls).

Models come from S3 only: `serving/production.json` names a bundle that reload wrote
(see `ctr.bundle`). `ModelCache` reads the pointer at most every
`pointer_ttl_seconds`; when it moves, the new Predictor is built completely and then
one reference is swapped, so requests in flight finish on the old model and none
fails during a reload. Nothing here (or below it) imports MLflow: a cold start stays
small and the API keeps answering while the registry is down.

Routes: POST /predict, GET|POST /health, GET /model-info and POST /model_info (the
seed's verb), GET /samples, GET / and /static/* (the page in `web/`), /docs (OpenAPI).
Errors are mapped to JSON in `ctr.serving.errors`.
"""

from __future__ import annotations

import io
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import FastAPI, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from ctr import criteo, layout
from ctr.bundle import PRODUCTION_ALIAS, Pointer, load_bundle, load_pointer, load_registry_snapshot
from ctr.errors import DomainError, NoModelError, NotFoundError
from ctr.predictor import Predictor
from ctr.schema import FEATURE_COLUMNS, LABEL
from ctr.serving import schemas
from ctr.serving.body_limit import BodyLimit
from ctr.serving.errors import install_error_handlers
from ctr.storage import Store, make_s3_client

log = logging.getLogger(__name__)

SAMPLE_POOL_ROWS = 1024
PREDICT_THREADS = 1


class ServingSettings(BaseSettings):
    """Settings of the predict function (environment variables of the same name)."""

    model_config = SettingsConfigDict(protected_namespaces=())

    bucket_name: str
    model_name: str = "criteo_ctr_model"
    pointer_ttl_seconds: float = 5.0
    max_rows: int = 10_000
    # Lambda's synchronous payload limit; larger bodies get a 413 before parsing.
    max_body_bytes: int = 6 * 1024 * 1024
    web_dir: Path | None = None


# --------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class LoadedModel:
    """Everything a request needs from one bundle; replaced whole, never mutated."""

    predictor: Predictor
    provenance: dict[str, Any]
    pointer: Pointer
    loaded_at: str
    ref: dict[str, Any]            # the response's "model" block, built once

    @classmethod
    def build(cls, predictor: Predictor, provenance: dict[str, Any],
              pointer: Pointer) -> LoadedModel:
        # One thread per prediction: a Lambda below 1,769 MB has less than one vCPU, and
        # on a busy host OpenMP threads waiting for each other cost milliseconds of p99
        # (measured in ctr_infra.bench_serve). Concurrency comes from more requests.
        predictor.booster.set_param({"nthread": PREDICT_THREADS})
        # Validated here, once: a bundle whose provenance does not fit the response is
        # not loaded (the current model stays), instead of failing every request.
        ref = schemas.ModelRef(
            name=provenance["model_name"], version=int(provenance["version"]),
            alias=PRODUCTION_ALIAS, run_id=provenance["run_id"],
            run_name=provenance.get("run_name"), artifact_uri=provenance["artifact_uri"],
            trained_at=provenance.get("trained_at")).model_dump()
        return cls(predictor, provenance, pointer, _iso_now(), ref)

    def predict(self, table: pa.Table) -> np.ndarray:
        """Click probabilities for the rows of `table` (39 feature columns): the same
        `Predictor.predict_table` that training and the promotion gate use."""
        return self.predictor.predict_table(table)


class ModelCache:
    """The live model, refreshed from the pointer at most every `ttl` seconds.

    Only one thread checks the pointer at a time; while it loads a new bundle, other
    requests keep using the current model. Before the first model exists, a request
    waits for an ongoing check instead of failing. A failed check or load (S3 down, a
    broken bundle) is logged and retried after the TTL; the current model stays. A
    deleted pointer is an answer, not a failure: there is no model to serve (503).
    """

    def __init__(self, store_factory: Callable[[], Store], ttl: float) -> None:
        self._store_factory = store_factory
        self._store: Store | None = None
        self._ttl = ttl
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._checked_at: float | None = None
        self.last_error: str | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def pointer_age(self) -> float | None:
        return None if self._checked_at is None else time.monotonic() - self._checked_at

    def get(self) -> LoadedModel:
        """The model to answer with, or NoModelError (503) if none is published."""
        self.refresh()
        model = self._current
        if model is None:
            hint = f" (last error: {self.last_error})" if self.last_error else ""
            raise NoModelError("no model is published yet: train one and run reload, "
                               f"or retry in a few seconds{hint}")
        return model

    def refresh(self, force: bool = False) -> None:
        if not force and not self.due():
            return
        # With a model, never queue behind a check: the current model is good enough.
        if not self._lock.acquire(blocking=self._current is None):
            return
        try:
            if force or self.due():
                self._check()
        finally:
            self._lock.release()

    def due(self) -> bool:
        """Whether the next request should read the pointer again."""
        return self._checked_at is None or time.monotonic() - self._checked_at >= self._ttl

    def _check(self) -> None:
        try:
            pointer = load_pointer(self.store)
            serving = None if self._current is None else self._current.pointer.prefix
            if pointer is None:
                if self._current is not None:
                    log.warning("%s was deleted: no model to serve",
                                layout.PRODUCTION_POINTER_KEY)
                self._current = None
            elif pointer.prefix != serving:
                predictor, provenance = load_bundle(self.store, pointer)
                self._current = LoadedModel.build(predictor, provenance, pointer)
                log.info("serving %s version %s from %s", provenance.get("model_name"),
                         provenance.get("version"), pointer.prefix)
            self.last_error = None
        except Exception as err:  # keep serving what we have; the next check retries
            # Our own messages are fit for clients; a library's may name endpoints or keys.
            detail = err.message if isinstance(err, DomainError) else "details in the logs"
            self.last_error = f"{type(err).__name__}: {detail}"
            log.warning("model refresh failed: %s", err, exc_info=True)
        finally:
            self._checked_at = time.monotonic()


# --------------------------------------------------------------------------- samples

class SampleSource:
    """A pool of real rows from the newest Parquet part, re-read when a newer part
    appears (checked at most every `ttl` seconds)."""

    def __init__(self, cache: ModelCache, ttl: float) -> None:
        self._cache = cache
        self._ttl = ttl
        self._pool: tuple[str, pa.Table] | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def sample(self, n: int) -> tuple[str, pa.Table]:
        with self._lock:
            now = time.monotonic()
            stale = self._checked_at is None or now - self._checked_at >= self._ttl
            if self._pool is None or stale:
                self._pool = self._read_newest()
                self._checked_at = now
            key, pool = self._pool
        picks = sorted(random.sample(range(pool.num_rows), min(n, pool.num_rows)))
        return key, pool.take(pa.array(picks, pa.int64()))

    def _read_newest(self) -> tuple[str, pa.Table]:
        store = self._cache.store
        keys = [k for k in store.list_keys(layout.PARQUET_PREFIX) if k.endswith(".parquet")]
        if not keys:
            raise NotFoundError("no Parquet data yet: ingest and aggregate some data first")
        key = max(keys, key=layout.index_of)
        if self._pool is not None and self._pool[0] == key:
            return self._pool
        parquet = pq.ParquetFile(io.BytesIO(store.get(key).body))
        batch = next(parquet.iter_batches(batch_size=SAMPLE_POOL_ROWS), None)
        if batch is None:
            raise NotFoundError(f"{key} has no rows")
        return key, pa.Table.from_batches([batch])


# --------------------------------------------------------------------------- the app

def find_web_dir(configured: Path | None = None) -> Path | None:
    """The static page: WEB_DIR if set, else a `web/` directory next to the function
    code (Lambda task root / working directory) or in the repository above this file."""
    if configured is not None:
        return configured if (configured / "index.html").is_file() else None
    roots = [Path(os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())), Path.cwd(),
             *Path(__file__).resolve().parents]
    for root in roots:
        if (root / "web" / "index.html").is_file():
            return root / "web"
    return None


def create_app(settings: ServingSettings,
               store_factory: Callable[[], Store] | None = None) -> FastAPI:
    """Build the API. `store_factory` defaults to the settings' bucket through boto3;
    tests pass a Store over a fake S3. No I/O happens until the first request."""
    factory = store_factory or (lambda: Store(make_s3_client(), settings.bucket_name))
    cache = ModelCache(factory, settings.pointer_ttl_seconds)
    samples = SampleSource(cache, settings.pointer_ttl_seconds)
    web_dir = find_web_dir(settings.web_dir)

    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": schemas.ErrorResponse} for status in (404, 413, 422, 503)}
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
    app.state.model_cache = cache
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.post("/predict", response_model=schemas.PredictResponse)
    async def predict(request: schemas.PredictRequest) -> dict[str, Any]:
        """Predict click probabilities for rows, TSV lines or 39-value feature lists."""
        # Async on purpose: the CPU work (about a millisecond for one row) runs inline
        # instead of paying thread hand-offs; only the occasional S3 pointer check,
        # which can block, goes to the thread pool.
        table = schemas.request_to_table(request, settings.max_rows)
        if cache.due():
            await run_in_threadpool(cache.refresh)
        model = cache.get()
        predictions = model.predict(table)
        return {"predictions": predictions.tolist(), "num_samples": len(predictions),
                "model": model.ref}

    def health() -> dict[str, Any]:
        """Liveness and which model is loaded (checks the pointer if its TTL passed)."""
        cache.refresh()
        model = cache.current
        age = cache.pointer_age()
        return {
            "status": "ok" if model else "no_model",
            "model_loaded": model is not None,
            "version": model.ref["version"] if model else None,
            "pointer_age_seconds": None if age is None else round(age, 3),
            "pointer_ttl_seconds": settings.pointer_ttl_seconds,
            "published_at": model.pointer.published_at if model else None,
            "loaded_at": model.loaded_at if model else None,
            "model_name": settings.model_name,
            "last_error": cache.last_error,
        }

    for method in ("GET", "POST"):   # POST is the seed's verb
        app.add_api_route("/health", health, methods=[method], summary="Health",
                          response_model=schemas.HealthResponse,
                          operation_id=f"health_{method.lower()}")

    def model_info() -> dict[str, Any]:
        """Registered versions with aliases, status, run and metrics, and the provenance
        of the served version (from S3 snapshots written by reload, not from MLflow)."""
        cache.refresh()
        model = cache.current
        snapshot = load_registry_snapshot(cache.store) or {}
        return {
            "model_name": snapshot.get("model_name", settings.model_name),
            "production_version": model.ref["version"] if model else None,
            "production": model.provenance if model else None,
            "versions": snapshot.get("versions", []),
            "snapshot_generated_at": snapshot.get("generated_at"),
        }

    app.add_api_route("/model-info", model_info, methods=["GET"],
                      response_model=schemas.ModelInfoResponse, summary="Model info")
    app.add_api_route("/model_info", model_info, methods=["POST"],   # the seed's form
                      response_model=schemas.ModelInfoResponse, summary="Model info (POST)")

    @app.get("/samples", response_model=schemas.SamplesResponse)
    def sample_rows(n: int = Query(5, ge=1, le=100)) -> dict[str, Any]:
        """A few real rows of the newest Parquet part, as JSON rows and as TSV lines."""
        key, table = samples.sample(n)
        features = table.select(list(FEATURE_COLUMNS))
        return {"rows": features.to_pylist(),
                "lines": criteo.table_to_lines(features, with_label=False),
                "labels": table.column(LABEL).to_pylist(),
                "source": key}

    if web_dir is not None:
        index = web_dir / "index.html"

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(index, media_type="text/html")

        app.mount("/static", StaticFiles(directory=web_dir), name="static")
    else:
        log.warning("no web/ directory found: / and /static are not served")

    return app


def _iso_now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")
