"""Aggregate function: pending chunks -> Parquet parts, bad lines -> rejects/ (ctr.aggregate).

Event: `ctr.steps.AggregateEvent`. {"action": "plan"} only lists the pending chunks
(`PlanResult`); otherwise the chunks the event names (every pending one by default) are
converted (`AggregateResult`); a chunk with too many rejects is quarantined (logged as a
warning, metric ChunksQuarantined) and the run goes on. {"max_reject_share": x}
overrides MAX_REJECT_SHARE for this run; {"include_quarantined": true} converts
quarantined chunks again (`ctr data release`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr.aggregate import DEFAULT_MAX_REJECT_SHARE, aggregate, plan
from ctr.function import FunctionSettings, add_metrics, bucket_store, entry_point, observability
from ctr.steps import AggregateEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(AggregateEvent, event)
    if request.action == "plan":
        planned = plan(store)
        metrics.add_metric(name="ChunksPending", unit=MetricUnit.Count,
                           value=planned.pending_count)
        return planned.to_payload()
    share = (settings.max_reject_share if request.max_reject_share is None
             else request.max_reject_share)
    result = aggregate(store, request.indices, share,
                       include_quarantined=request.include_quarantined)
    logger.info("aggregate run", extra=result.model_dump(mode="json", exclude={"chunks"}))
    for chunk in result.chunks:
        if chunk.status == "quarantined":
            logger.warning("chunk quarantined", extra=chunk.model_dump(mode="json"))
    add_metrics(metrics, {
        "RowsIn": (MetricUnit.Count, result.rows_in),
        "RowsOut": (MetricUnit.Count, result.rows_out),
        "RowsRejected": (MetricUnit.Count, result.rows_rejected),
        "AggregateSeconds": (MetricUnit.Seconds, result.seconds),
        "AggregateBytesPerSecond": (MetricUnit.BytesPerSecond, result.bytes_per_second or None),
        "ChunksQuarantined": (MetricUnit.Count, len(result.quarantined)),
    })
    return result.to_payload()
