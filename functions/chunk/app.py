"""Chunk function: cut the next CHUNK_LINES lines of raw/ into chunks/ (ctr.chunking).

Event: `ctr.steps.ChunkEvent` (the state machine passes its execution name; an optional
{"chunk_lines": N} overrides CHUNK_LINES for this run, tests use small chunks). Result:
`ChunkCut` or `ChunkExhausted`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr.chunking import DEFAULT_CHUNK_LINES, cut_chunk
from ctr.function import FunctionSettings, add_metrics, bucket_store, entry_point, observability
from ctr.steps import ChunkCut, ChunkEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    chunk_lines: int = DEFAULT_CHUNK_LINES
    source_url: str = ""


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(ChunkEvent, event)
    result = cut_chunk(store, request.chunk_lines or settings.chunk_lines,
                       source_url=settings.source_url or None)
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
