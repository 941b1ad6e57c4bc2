"""Served-prediction records: what the predict function logs (sampled, through a
delivery stream into `predictions/YYYY/MM/DD/HH/...`) and monitoring's skew check reads.
One JSON object per line; an object may hold many records."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PredictionRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    request_id: str = Field(description="also returned to the caller as X-Request-Id")
    time: str = Field(description="ISO 8601 UTC")
    model_version: int
    run_id: str
    row: int = Field(description="the row's index within the request")
    fields: list[str] = Field(
        description="the 39 raw values I1..I13, C1..C26 as text; '' = missing")
    probability: float
