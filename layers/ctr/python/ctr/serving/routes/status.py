"""Which model this instance serves: /health (GET, and POST as the seed had it) and
/model-info (GET; POST /model_info is the seed's form of the same answer)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from ctr.bundle import load_registry_snapshot
from ctr.registry.versions import RegistrySnapshot
from ctr.serving import schemas
from ctr.serving.dependencies import Cache, Settings
from ctr.serving.model_cache import LoadedModel

log = logging.getLogger(__name__)
router = APIRouter()


def registry_view(model: LoadedModel | None,
                  snapshot: RegistrySnapshot | None) -> dict[str, Any]:
    """The registry's production version (from `serving/registry.json`, which reload and
    the train step write; never from MLflow) next to the served one: `serving_behind`
    when the registry names another version, e.g. after a reload that failed; the next
    execution's sync publishes it."""
    registry = snapshot.production_version if snapshot else None
    served = model.ref["version"] if model else None
    newest = snapshot.versions[0] if snapshot and snapshot.versions else None
    why_none = (f"v{newest.version} {newest.status}: {newest.status_reason}"
                if model is None and registry is None and newest is not None else None)
    return {"registry_production_version": registry,
            "serving_behind": registry is not None and registry != served,
            "no_model_reason": why_none}


def health(cache: Cache, settings: Settings) -> dict[str, Any]:
    """Liveness, which model is loaded (checks the pointer if its TTL passed) and
    whether it is the registry's production version."""
    cache.refresh()
    model = cache.current
    age = cache.pointer_age()
    try:
        snapshot = load_registry_snapshot(cache.store)
    except Exception as err:  # liveness must not depend on the snapshot being readable
        log.warning("registry snapshot unreadable: %s", err, exc_info=True)
        snapshot = None
    return {
        **registry_view(model, snapshot),
        "registry_snapshot_at": snapshot.generated_at if snapshot else None,
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
    """Registered versions with aliases, status, run and metrics, the provenance of the
    served version and whether it is the registry's production version (from S3
    snapshots written by reload and train, not from MLflow)."""
    cache.refresh()
    model = cache.current
    snapshot = load_registry_snapshot(cache.store)
    return {
        "model_name": snapshot.model_name if snapshot else settings.model_name,
        "production_version": model.ref["version"] if model else None,
        **registry_view(model, snapshot),
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
