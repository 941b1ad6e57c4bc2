"""POST /predict: click probabilities for rows, TSV lines or 39-value feature lists."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ctr.serving import schemas
from ctr.serving.dependencies import Cache, PredLog, RequestIdentifier, Settings
from ctr.serving.fast_json import FastJSONRoute

router = APIRouter(route_class=FastJSONRoute)   # bodies parsed by pydantic-core


@router.post("/predict", response_model=schemas.PredictResponse)
async def predict(request: schemas.PredictRequest, cache: Cache, settings: Settings,
                  query: Annotated[schemas.PredictQuery, Query()],
                  prediction_log: PredLog, request_id: RequestIdentifier) -> dict[str, Any]:
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
    body: dict[str, Any] = {"model": model.ref}
    if explain == "true":
        why = model.predictor.explain_table(table)
        predictions = why.probabilities
        body["explanations"] = schemas.explanations(why.base, why.contributions)
    else:
        predictions = model.predict(table)
    if prediction_log is not None:     # sampled; queued for a background thread
        prediction_log.record(request_id, model.ref, table, predictions)
    return {"predictions": predictions.tolist(), "num_samples": len(predictions), **body}
