"""Guard Lambda: acquire or release the pipeline lease (see ctr.guard)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ctr import guard
from ctr.errors import ValidationError
from ctr.function import FunctionSettings, bucket_store, observability

logger, tracer, metrics = observability()


class Settings(FunctionSettings):
    lease_seconds: float = 3600.0


settings = Settings()  # type: ignore[call-arg]  # values come from the environment
store = bucket_store(settings)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    action, holder = event.get("action"), event.get("holder")
    if not holder or action not in ("acquire", "release"):
        raise ValidationError("event needs action=acquire|release and holder",
                              errors=[{"loc": ["action"], "msg": "acquire or release"}])
    if action == "acquire":
        ttl = float(event.get("ttl_seconds") or settings.lease_seconds)
        result = guard.acquire(store, holder, ttl)
        metrics.add_metric("LeaseAcquired" if result["acquired"] else "LeaseBusy",
                           MetricUnit.Count, 1)
    else:
        result = guard.release(store, holder)
    logger.info("lease", extra=result)
    return result
