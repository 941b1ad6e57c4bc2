"""Which model this instance serves: /health (GET, and POST as the seed had it) and
/model-info (GET; POST /model_info is the seed's form of the same answer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ctr.bundle import load_registry_snapshot
from ctr.serving import schemas
from ctr.serving.dependencies import Cache, Settings

router = APIRouter()


def health(cache: Cache, settings: Settings) -> dict[str, Any]:
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


def model_info(cache: Cache, settings: Settings) -> dict[str, Any]:
    """Registered versions with aliases, status, run and metrics, and the provenance
    of the served version (from S3 snapshots written by reload, not from MLflow)."""
    cache.refresh()
    model = cache.current
    snapshot = load_registry_snapshot(cache.store)
    return {
        "model_name": snapshot.model_name if snapshot else settings.model_name,
        "production_version": model.ref["version"] if model else None,
        "production": model.provenance.model_dump(mode="json") if model else None,
        "versions": [v.model_dump(mode="json") for v in snapshot.versions] if snapshot else [],
        "snapshot_generated_at": snapshot.generated_at if snapshot else None,
    }


for _method in ("GET", "POST"):   # POST is the seed's verb
    router.add_api_route("/health", health, methods=[_method], summary="Health",
                         response_model=schemas.HealthResponse,
                         operation_id=f"health_{_method.lower()}")
router.add_api_route("/model-info", model_info, methods=["GET"],
                     response_model=schemas.ModelInfoResponse, summary="Model info")
router.add_api_route("/model_info", model_info, methods=["POST"],   # the seed's form
                     response_model=schemas.ModelInfoResponse, summary="Model info (POST)")
