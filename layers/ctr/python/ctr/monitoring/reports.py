"""The typed contract of monitoring: what the monitor step writes and what `GET
/monitoring`, `ctr monitor` and the page read. Fields are only ever added, never renamed
(the page reads them by name).

Keys (`ctr.layout`): `monitoring/quality/part_NNNNNN.json` (QualityReport, create-only,
one per new part), `monitoring/drift/part_NNNNNN.json` (DriftReport, create-only),
`monitoring/skew/<UTC yyyymmddThhmmss>.json` (SkewReport), `monitoring/summary.json`
(MonitoringSummary, rewritten by every monitor step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QualityFigures(_Report):
    """One model scored on one part's rows (which it was not trained on)."""

    rows: int
    positive_rate: float = Field(description="observed click rate of the rows")
    mean_prediction: float
    logloss: float
    auc: float | None = Field(description="None when the rows hold one class only")
    normalized_entropy: float = Field(
        description="logloss / entropy of the rows' base rate (1 = no better than the prior)")
    calibration_ratio: float = Field(description="mean prediction / observed rate")


class ModelQuality(_Report):
    role: Literal["production", "previous"]
    version: int
    run_id: str | None
    figures: QualityFigures
    holdout_logloss: float | None = Field(
        description="the version's own holdout logloss at training time (the alarm's base)")


class Comparison(_Report):
    """previous - production on the same rows: per-row logloss difference with one-sided
    95% bounds (batch means over time blocks, as the promotion gate)."""

    rows: int
    blocks: int
    logloss_diff_mean: float
    logloss_diff_upper95: float
    previous_better: bool = Field(description="upper95 < -tolerance: proven better")
    tolerance: float | None = None
    previous_calibration_ratio: float | None = None
    previous_calibration_low95: float | None = None
    previous_calibration_high95: float | None = None


class QualityReport(_Report):
    part: int
    part_key: str
    evaluated_at: str
    rows: int
    models: list[ModelQuality] = Field(description="production first, then previous if any")
    comparison: Comparison | None = None
    fresh: bool = Field(True, description="no served version was trained on these rows")
    note: str | None = None


class FeatureDrift(_Report):
    feature: str = Field(description="I1..I13, C1..C26, or 'prediction'")
    kind: Literal["int", "cat", "prediction"]
    score: float = Field(description="drift score (method in the report) vs the baseline")
    threshold: float
    flagged: bool
    unseen_share: float | None = Field(
        default=None, description="categorical: share of non-missing values never seen in training")
    missing_share: float | None = None
    baseline_unseen_share: float | None = Field(
        default=None, description="categorical: the same share on the training rows")


class DriftReport(_Report):
    part: int
    part_key: str
    evaluated_at: str
    rows: int
    baseline_version: int
    method: str = Field(description="e.g. 'jensen-shannon distance (base 2)'")
    features: list[FeatureDrift]
    prediction: FeatureDrift | None = None
    flagged: list[str] = Field(description="names of flagged features, in column order")
    min_rows: int | None = Field(default=None, description="fewer rows than this flag nothing")
    note: str | None = None


class SkewReport(_Report):
    """Served traffic (prediction logs) against the training baseline."""

    evaluated_at: str
    since: str | None = Field(description="oldest record time in the window")
    until: str | None
    records: int
    baseline_version: int
    method: str
    features: list[FeatureDrift]
    prediction: FeatureDrift | None = None
    flagged: list[str]
    min_rows: int | None = None
    note: str | None = None


class AlarmState(_Report):
    name: str
    state: Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
    reason: str | None = None
    updated_at: str | None = None


class MonitoringSummary(_Report):
    """What a person looks at: written by the monitor step, served by GET /monitoring."""

    generated_at: str
    model_name: str
    production_version: int | None
    previous_version: int | None
    quality: list[QualityReport] = Field(description="newest parts last (at most ~50)")
    drift: DriftReport | None = Field(description="the newest part's drift report")
    skew: SkewReport | None
    alarms: list[AlarmState]
    rollbacks: list[str] = Field(default_factory=list,
                                 description="audit keys of automatic rollbacks")
    notes: list[str] = Field(default_factory=list,
                             description="why something is not shown (no baseline, ...)")
