"""Predict function: the FastAPI app of `ctr.serving.app` behind API Gateway (Mangum).

Settings (environment): BUCKET_NAME (required), MODEL_NAME, POINTER_TTL_SECONDS,
MAX_ROWS, MAX_BODY_BYTES, WEB_DIR (default: a `web/` directory next to this file or
the repository's), PREDICTION_LOG_STREAM and PREDICTION_LOG_SAMPLE_RATE (the prediction
log's Firehose stream, empty = off), MONITOR_ALARM_PREFIX (GET /monitoring's live alarm
states). The app is built at cold start, but reads S3 only on the first request --
except under SnapStart, where the model is loaded and warmed before the snapshot and each
restored copy refreshes its randomness, S3 connections and pointer clock
(`ctr.serving.snapstart`). Every response is counted by status class (Http2xx, Http4xx,
Http5xx); prediction-log rows dropped since the previous invocation are counted as
PredictionLogDropped.

On SIGTERM (which Lambda sends before shutting an environment down when an extension is
registered) the prediction log flushes what it buffered, then the process exits. The
local cloud's process executor kills environments with SIGKILL, but its processes are
never frozen, so the log's thread delivers within a second of each request there.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from mangum import Mangum

from ctr.function import entry_point, observability
from ctr.serving import snapstart
from ctr.serving.app import ServingSettings, create_app

logger, tracer, metrics = observability()

settings = ServingSettings()  # type: ignore[call-arg]  # values come from the environment
app = create_app(settings)
asgi = Mangum(app, lifespan="off")
snapstart.register(app.state.model_cache)
prediction_log = app.state.prediction_log


def _flush_and_exit(signum: int, frame: FrameType | None) -> None:
    if prediction_log is not None:
        prediction_log.close(timeout_s=0.4)
    sys.exit(0)


if prediction_log is not None and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _flush_and_exit)


@entry_point(logger, tracer, metrics, capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = asgi(event, context)
    status = int(response.get("statusCode", 500))
    metrics.add_metric(name=f"Http{status // 100}xx", unit=MetricUnit.Count, value=1)
    if prediction_log is not None and (dropped := prediction_log.take_new_drops()):
        metrics.add_metric(name="PredictionLogDropped", unit=MetricUnit.Count, value=dropped)
    return response
