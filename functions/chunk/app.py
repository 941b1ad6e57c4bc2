"""Chunk function: cut the next CHUNK_LINES lines of raw/ into chunks/ (ctr.chunking),
or, for a backlog of many chunks, plan, cut and finish a parallel backfill (ctr.backfill).

Event: `ctr.steps.ChunkEvent` (the state machine passes its execution name; an optional
{"chunk_lines": N} overrides CHUNK_LINES for this run, tests use small chunks). By
`action`: "cut" (default) -> `ChunkCut` or `ChunkExhausted`; "plan_backfill" ->
`BackfillPlan` (BACKFILL_CONCURRENCY is the Map's bound, 0 = never backfill);
"cut_range" (one Distributed Map item) -> `RangeCut`; "finish_backfill" ->
`BackfillFinished`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr import backfill
from ctr.chunking import DEFAULT_CHUNK_LINES, cut_chunk
from ctr.errors import ValidationError
from ctr.function import FunctionSettings, add_metrics, bucket_store, entry_point, observability
from ctr.steps import ChunkCut, ChunkEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    chunk_lines: int = DEFAULT_CHUNK_LINES
    source_url: str = ""
    backfill_concurrency: int = backfill.DEFAULT_CONCURRENCY


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


def _missing(name: str) -> ValidationError:
    return ValidationError(f"missing {name}",
                           errors=[{"loc": [name], "msg": "required for this action"}])


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(ChunkEvent, event)
    chunk_lines = request.chunk_lines or settings.chunk_lines
    if request.action == "plan_backfill":
        concurrency = (settings.backfill_concurrency if request.backfill_concurrency is None
                       else request.backfill_concurrency)
        planned = backfill.plan(store, chunk_lines, concurrency,
                                source_url=settings.source_url or None)
        logger.info("backfill plan", extra={"result": planned.to_payload()})
        return planned.to_payload()
    if request.action == "cut_range":
        if request.item is None:
            raise _missing("item")
        cut = backfill.cut_range(store, request.item)
        add_metrics(metrics, {"LinesChunked": (MetricUnit.Count, cut.lines),
                              "BytesChunked": (MetricUnit.Bytes, cut.bytes)})
        return cut.to_payload()
    if request.action == "finish_backfill":
        if request.plan is None:
            raise _missing("plan")
        finished = backfill.finish(store, request.plan)
        logger.info("backfill finished", extra={"result": finished.to_payload()})
        return finished.to_payload()
    result = cut_chunk(store, chunk_lines, source_url=settings.source_url or None)
    payload = result.to_payload()
    logger.info("chunk run", extra={"result": payload})
    if isinstance(result, ChunkCut):
        add_metrics(metrics, {
            "LinesChunked": (MetricUnit.Count, result.lines),
            "BytesChunked": (MetricUnit.Bytes, result.bytes),
            "ChunkSeconds": (MetricUnit.Seconds, result.seconds),
            "ChunkBytesPerSecond": (MetricUnit.BytesPerSecond, result.bytes_per_second or None),
        })
    else:
        metrics.add_metric(name="ChunkSourceExhausted", unit=MetricUnit.Count, value=1)
    return payload
