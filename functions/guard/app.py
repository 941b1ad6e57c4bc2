"""Guard Lambda: acquire or release the pipeline lease (ctr.guard).

Event: `ctr.steps.GuardEvent`; result: `LeaseAcquired` / `LeaseBusy` (acquire) or
`LeaseReleased` (release).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ctr import guard
from ctr.function import FunctionSettings, bucket_store, entry_point, observability
from ctr.steps import GuardEvent, GuardResult, parse_event

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    lease_seconds: float = 3600.0


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@entry_point(logger, tracer, metrics)
def lambda_handler(event: dict[str, Any] | None, context: LambdaContext) -> dict[str, Any]:
    request = parse_event(GuardEvent, event)
    result: GuardResult
    if request.action == "acquire":
        result = guard.acquire(store, request.holder,
                               request.ttl_seconds or settings.lease_seconds)
        metrics.add_metric("LeaseAcquired" if result.acquired else "LeaseBusy",
                           MetricUnit.Count, 1)
    else:
        result = guard.release(store, request.holder)
    payload = result.to_payload()
    logger.info("lease", extra=payload)
    return payload
