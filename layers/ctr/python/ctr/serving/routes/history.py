"""GET /model-history: the registry's audit trail (`ctr.registry.audit`), newest first,
read from the bucket's `audit/` prefix (never from MLflow)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ctr.registry.audit import list_events
from ctr.serving import schemas
from ctr.serving.dependencies import Cache, Settings

router = APIRouter()


@router.get("/model-history", response_model=schemas.ModelHistoryResponse,
            summary="Model history")
def model_history(cache: Cache, settings: Settings,
                  limit: int = Query(50, ge=1, le=500,
                                     description="at most this many events, newest first")
                  ) -> dict[str, Any]:
    """Every registry event (registered, promoted, rejected, manual promote, rollback)
    with its time, actor, versions before and after, reason and numbers."""
    events = list_events(cache.store, settings.model_name, newest_first=True, limit=limit)
    return {"model_name": settings.model_name,
            "events": [e.model_dump(mode="json") for e in events]}
