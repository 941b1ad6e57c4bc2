"""What every Lambda handler sets up once per execution environment (cold start).

    from ctr.function import FunctionSettings, observability, bucket_store

    logger, tracer, metrics = observability()

    class Settings(FunctionSettings):       # BUCKET_NAME plus the function's own
        chunk_lines: int = 1_000_000

    settings = Settings()
    store = bucket_store(settings)

    @entry_point(logger, tracer, metrics)
    def lambda_handler(event, context): ...

Service name, metrics namespace and log level come from the template's Globals
(POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_LOG_LEVEL), so every
function reports under the same names; without them (unit tests, ad-hoc runs) metrics
still go to the `CtrPipeline` namespace. Powertools' loggers are copied onto the `ctr`
package's loggers so domain code logs as structured JSON too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctr.storage import Store, make_s3_client

METRICS_NAMESPACE = "CtrPipeline"   # the template sets the same through the environment


class FunctionSettings(BaseSettings):
    """Environment variables of the same name (case-insensitive); BUCKET_NAME is required."""

    model_config = SettingsConfigDict(protected_namespaces=())

    bucket_name: str


def observability() -> tuple[Logger, Tracer, Metrics]:
    logger = Logger()
    copy_config_to_registered_loggers(source_logger=logger, include={"ctr"})
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE)
    return logger, Tracer(), Metrics(namespace=namespace)


Handler = Callable[[Any, Any], Any]


def entry_point(logger: Logger, tracer: Tracer, metrics: Metrics, *,
                capture_response: bool = True) -> Callable[[Handler], Handler]:
    """Powertools' three handler decorators in the order of its own examples: the
    request's Lambda context in every log line, an X-Ray segment for the invocation,
    and the metrics flushed as one EMF document when it returns. `capture_response`
    False keeps a large response (the predict API's) out of the trace."""
    def decorate(handler: Handler) -> Handler:
        traced = tracer.capture_lambda_handler(metrics.log_metrics(handler),
                                               capture_response=capture_response)
        return logger.inject_lambda_context(traced)
    return decorate


def add_metrics(metrics: Metrics, values: dict[str, tuple[MetricUnit, float | None]]) -> None:
    """Add each named metric (unit, value) whose value is not None."""
    for name, (unit, value) in values.items():
        if value is not None:
            metrics.add_metric(name=name, unit=unit, value=value)


def bucket_store(settings: FunctionSettings) -> Store:
    """The data bucket through boto3 (AWS_ENDPOINT_URL, when set, points at the emulator)."""
    return Store(make_s3_client(), settings.bucket_name)


def release_memory() -> int | None:
    """Give the memory a finished run freed back to the system: collect cycles, then ask
    glibc's allocator to return its free arenas (`malloc_trim`). Without this a warm
    train environment keeps its peak (5.1 GB seen after a few runs) while idle, since
    glibc keeps freed blocks for reuse. The process's RSS in MB afterwards (None where
    /proc or glibc are missing: other platforms just skip the trim)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    except (OSError, ValueError):
        return None
