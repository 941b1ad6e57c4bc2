"""Aggregate function: pending chunks -> Parquet parts, bad lines -> rejects/ (ctr.aggregate).

Event: `ctr.steps.AggregateEvent`. {"action": "plan"} only lists the pending chunks
(`PlanResult`); otherwise the chunks the event names (every pending one by default) are
converted (`AggregateResult`), and a chunk with too many rejects fails the run with a
DataError after the metrics are out. {"max_reject_share": x} overrides MAX_REJECT_SHARE
for this run.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr.aggregate import DEFAULT_MAX_REJECT_SHARE, aggregate, plan, raise_for_failures
from ctr.function import FunctionSettings, bucket_store, observability
from ctr.steps import AggregateEvent, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    request = parse_event(AggregateEvent, event)
    if request.action == "plan":
        planned = plan(store)
        metrics.add_metric(name="ChunksPending", unit=MetricUnit.Count,
                           value=planned.pending_count)
        return planned.to_payload()
    share = (settings.max_reject_share if request.max_reject_share is None
             else request.max_reject_share)
    result = aggregate(store, request.indices, share, raise_on_failure=False)
    logger.info("aggregate run", extra=result.model_dump(mode="json", exclude={"chunks"}))
    metrics.add_metric(name="RowsIn", unit=MetricUnit.Count, value=result.rows_in)
    metrics.add_metric(name="RowsOut", unit=MetricUnit.Count, value=result.rows_out)
    metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count, value=result.rows_rejected)
    metrics.add_metric(name="AggregateSeconds", unit=MetricUnit.Seconds, value=result.seconds)
    if result.bytes_per_second:
        metrics.add_metric(name="AggregateBytesPerSecond", unit=MetricUnit.BytesPerSecond,
                           value=result.bytes_per_second)
    raise_for_failures(result)     # DataError: the state machine stops, metrics are out
    return result.to_payload()
