"""Settings of the predict API: environment variables of the same name, on top of
what every function reads (`ctr.function.FunctionSettings`: BUCKET_NAME)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from ctr.function import FunctionSettings


class ServingSettings(FunctionSettings):
    """BUCKET_NAME (required) plus the knobs of the predict API."""

    model_name: str = "criteo_ctr_model"
    pointer_ttl_seconds: float = 5.0
    max_rows: int = 10_000
    # Lambda's synchronous payload limit; larger bodies get a 413 before parsing.
    max_body_bytes: int = 6 * 1024 * 1024
    web_dir: Path | None = None
    # The prediction log (ctr.serving.prediction_log): a Firehose delivery stream name
    # (empty = off) and the share of requests logged.
    prediction_log_stream: str = ""
    prediction_log_sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    # GET /monitoring: live CloudWatch alarm states of alarms named with this prefix
    # (empty = the states the monitor step stored in monitoring/summary.json).
    monitor_alarm_prefix: str = ""
