"""Monitoring summaries written from the typed contract (`ctr.monitoring.reports`), for
the API, CLI and page tests: they do not need the monitor step to exist."""

from __future__ import annotations

import math

from ctr import layout
from ctr.monitoring.reports import (
    AlarmState,
    Comparison,
    DriftReport,
    FeatureDrift,
    ModelQuality,
    MonitoringSummary,
    QualityFigures,
    QualityReport,
    SkewReport,
)
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS
from ctr.storage import Store

STACK = "ctr-test"
QUALITY_ALARM = f"{STACK}-monitor-quality-logloss"
DRIFT_ALARM = f"{STACK}-monitor-drift"


def figures(rows: int, logloss: float, auc: float, calibration: float) -> QualityFigures:
    rate = 0.25
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    return QualityFigures(rows=rows, positive_rate=rate, mean_prediction=rate * calibration,
                          logloss=logloss, auc=auc, normalized_entropy=logloss / entropy,
                          calibration_ratio=calibration)


def features(flagged: tuple[str, ...], threshold: float = 0.1) -> list[FeatureDrift]:
    out = []
    for i, name in enumerate(FEATURE_COLUMNS):
        hit = name in flagged
        out.append(FeatureDrift(
            feature=name, kind="cat" if name in CAT_COLUMNS else "int",
            score=0.31 + i / 1000 if hit else 0.01 + i / 2000, threshold=threshold,
            flagged=hit, unseen_share=0.4 if hit and name in CAT_COLUMNS else
            (0.01 if name in CAT_COLUMNS else None), missing_share=0.0))
    return out


def sample_summary(parts: int = 12, flagged: tuple[str, ...] = ("I3", "C7"),
                   alarm: str = "ALARM", rows: int = 4000) -> MonitoringSummary:
    """`parts` quality reports (production v3 slowly degrading, previous v2), a drift
    report flagging `flagged`, a skew report, a quality alarm in state `alarm`."""
    reports = []
    for part in range(parts):
        prod = 0.47 + 0.004 * part
        prev = 0.475 + 0.001 * part
        reports.append(QualityReport(
            part=part, part_key=layout.parquet_key(part),
            evaluated_at=f"2026-12-01T{part % 24:02d}:00:00+00:00", rows=rows,
            models=[ModelQuality(role="production", version=3, run_id="run-3",
                                 figures=figures(rows, prod, 0.74 - 0.003 * part,
                                                 1.0 + 0.02 * part), holdout_logloss=0.468),
                    ModelQuality(role="previous", version=2, run_id="run-2",
                                 figures=figures(rows, prev, 0.735, 1.01), holdout_logloss=0.472)],
            comparison=Comparison(rows=rows, blocks=8, logloss_diff_mean=prev - prod,
                                  logloss_diff_upper95=prev - prod + 0.004,
                                  previous_better=prev - prod + 0.004 < -0.001)))
    drift = DriftReport(part=parts - 1, part_key=layout.parquet_key(parts - 1),
                        evaluated_at="2026-12-01T12:00:00+00:00", rows=rows,
                        baseline_version=3, method="jensen-shannon distance (base 2)",
                        features=features(flagged),
                        prediction=FeatureDrift(feature="prediction", kind="prediction",
                                                score=0.02, threshold=0.1, flagged=False),
                        flagged=[f for f in FEATURE_COLUMNS if f in flagged])
    skew = SkewReport(evaluated_at="2026-12-01T12:00:00+00:00",
                      since="2026-12-01T11:00:00+00:00", until="2026-12-01T12:00:00+00:00",
                      records=1500, baseline_version=3,
                      method="jensen-shannon distance (base 2)", features=features(("C7",)),
                      prediction=None, flagged=["C7"])
    alarms = [AlarmState(name=QUALITY_ALARM, state=alarm,  # type: ignore[arg-type]
                         reason="logloss 0.514 > 1.05 x holdout 0.468",
                         updated_at="2026-12-01T12:00:05+00:00"),
              AlarmState(name=DRIFT_ALARM, state="OK", reason=None, updated_at=None)]
    return MonitoringSummary(generated_at="2026-12-01T12:00:10+00:00",
                             model_name="criteo_ctr_model", production_version=3,
                             previous_version=2, quality=reports, drift=drift, skew=skew,
                             alarms=alarms, rollbacks=[])


def put_summary(store: Store, summary: MonitoringSummary) -> None:
    store.put(layout.MONITORING_SUMMARY_KEY, summary.model_dump_json().encode(),
              content_type="application/json")
