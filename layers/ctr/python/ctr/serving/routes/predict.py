"""POST /predict: click probabilities for rows, TSV lines or 39-value feature lists."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ctr.serving import schemas
from ctr.serving.dependencies import Cache, Settings

router = APIRouter()


@router.post("/predict", response_model=schemas.PredictResponse)
async def predict(request: schemas.PredictRequest, cache: Cache, settings: Settings,
                  query: Annotated[schemas.PredictQuery, Query()]) -> dict[str, Any]:
    """Predict click probabilities for rows, TSV lines or 39-value feature lists;
    `?explain=true` adds each row's per-field contributions (logit units)."""
    explain = query.explain
    # Async on purpose: the CPU work (about a millisecond for one row) runs inline
    # instead of paying thread hand-offs; only the occasional S3 pointer check,
    # which can block, goes to the thread pool.
    table = schemas.request_to_table(request, settings.max_rows)
    if cache.due():
        await run_in_threadpool(cache.refresh)
    model = cache.get()
    if explain == "true":
        why = model.predictor.explain_table(table)
        return {"predictions": why.probabilities.tolist(),
                "num_samples": len(why.probabilities), "model": model.ref,
                "explanations": schemas.explanations(why.base, why.contributions)}
    predictions = model.predict(table)
    return {"predictions": predictions.tolist(), "num_samples": len(predictions),
            "model": model.ref}
