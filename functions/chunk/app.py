"""Chunk function: cut the next CHUNK_LINES lines of raw/ into chunks/ (ctr.chunking).

Event: `ctr.steps.ChunkEvent` (the state machine passes its execution name; an optional
{"chunk_lines": N} overrides CHUNK_LINES for this run, tests use small chunks). Result:
`ChunkCut` or `ChunkExhausted`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr.chunking import DEFAULT_CHUNK_LINES, cut_chunk
from ctr.function import FunctionSettings, bucket_store, observability
from ctr.steps import ChunkCut, ChunkEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    chunk_lines: int = DEFAULT_CHUNK_LINES
    source_url: str = ""


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(ChunkEvent, event)
    result = cut_chunk(store, request.chunk_lines or settings.chunk_lines,
                       source_url=settings.source_url or None)
    payload = result.to_payload()
    logger.info("chunk run", extra={"result": payload})
    if isinstance(result, ChunkCut):
        metrics.add_metric(name="LinesChunked", unit=MetricUnit.Count, value=result.lines)
        metrics.add_metric(name="BytesChunked", unit=MetricUnit.Bytes, value=result.bytes)
        metrics.add_metric(name="ChunkSeconds", unit=MetricUnit.Seconds, value=result.seconds)
        if result.bytes_per_second:
            metrics.add_metric(name="ChunkBytesPerSecond", unit=MetricUnit.BytesPerSecond,
                               value=result.bytes_per_second)
    else:
        metrics.add_metric(name="ChunkSourceExhausted", unit=MetricUnit.Count, value=1)
    return payload
