"""Aggregate function: pending chunks -> Parquet parts, bad lines -> rejects/ (ctr.aggregate).

Event: {} or {"action": "aggregate"} converts every pending chunk; {"action": "plan"}
only lists them ({"pending": [...], "pending_count": n}); {"indices": [...]},
{"index": n}, a Distributed Map item {"Key": "chunks/..."} / {"key": "chunks/..."} or
batch {"Items": [{"Key": ...}, ...]} convert those chunks. {"max_reject_share": x}
overrides MAX_REJECT_SHARE for this run.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from ctr.aggregate import (
    DEFAULT_MAX_REJECT_SHARE,
    aggregate,
    indices_from_event,
    plan,
    raise_for_failures,
)
from ctr.function import FunctionSettings, bucket_store, observability

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    event = event if isinstance(event, dict) else {}
    if event.get("action") == "plan":
        pending = plan(store)
        metrics.add_metric(name="ChunksPending", unit=MetricUnit.Count, value=len(pending))
        return {"pending": pending, "pending_count": len(pending)}
    share = float(event.get("max_reject_share", settings.max_reject_share))
    result = aggregate(store, indices_from_event(event), share, raise_on_failure=False)
    logger.info("aggregate run", extra={key: value for key, value in result.items()
                                        if key != "chunks"})
    metrics.add_metric(name="RowsIn", unit=MetricUnit.Count, value=result["rows_in"])
    metrics.add_metric(name="RowsOut", unit=MetricUnit.Count, value=result["rows_out"])
    metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count, value=result["rows_rejected"])
    metrics.add_metric(name="AggregateSeconds", unit=MetricUnit.Seconds, value=result["seconds"])
    if result["bytes_per_second"]:
        metrics.add_metric(name="AggregateBytesPerSecond", unit=MetricUnit.BytesPerSecond,
                           value=result["bytes_per_second"])
    raise_for_failures(result)     # DataError: the state machine stops, metrics are out
    return result
