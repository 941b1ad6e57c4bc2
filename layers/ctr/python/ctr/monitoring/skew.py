"""Training-serving skew: served rows, read from the prediction logs the predict function
writes through its delivery stream (`predictions/YYYY/MM/DD/HH/...`, one
`ctr.predlog.PredictionRecord` per line), scored against the served version's training
baseline with the same drift measure as new parts (`ctr.monitoring.drift`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pydantic

from ctr import layout
from ctr.clock import iso_now
from ctr.criteo import lines_to_table
from ctr.features import FeatureTransform
from ctr.monitoring.baseline import Baseline
from ctr.monitoring.drift import (
    METHOD,
    DriftPolicy,
    feature_drift,
    flagged_names,
    prediction_drift,
)
from ctr.monitoring.reports import SkewReport
from ctr.predlog import PredictionRecord
from ctr.storage import Store

log = logging.getLogger(__name__)



def prediction_keys(store: Store, hours: int, now: datetime | None = None) -> Iterator[str]:
    """Keys of the delivery stream's objects of the last `hours` hours
    (`predictions/YYYY/MM/DD/HH/...`), one listing per hour partition."""
    now = now or datetime.now(tz=UTC)
    for h in range(hours - 1, -1, -1):
        at = now - timedelta(hours=h)
        yield from store.list_keys(f"{layout.PREDICTIONS_PREFIX}{at:%Y/%m/%d/%H}/")


def read_records(store: Store, keys: Iterator[str]) -> tuple[list[PredictionRecord], int]:
    """Every well-formed record (one JSON object per line), and how many lines were not."""
    records, bad = [], 0
    for key in keys:
        for line in store.get(key).body.splitlines():
            if not line.strip():
                continue
            try:
                records.append(PredictionRecord.model_validate_json(line))
            except pydantic.ValidationError:
                bad += 1
    return records, bad


def skew_report(store: Store, keys: list[str], baseline: Baseline, version: int,
                transform: FeatureTransform | None, policy: DriftPolicy
                ) -> tuple[SkewReport | None, int]:
    """Served rows (the prediction-log objects `keys`) against a version's baseline."""
    records, bad = read_records(store, iter(keys))
    if bad:
        log.warning("skew: %d malformed prediction-log lines skipped", bad)
    if not records:
        return None, 0
    table, errors = lines_to_table(["\t".join(r.fields) for r in records])
    features = feature_drift(table, baseline, policy, transform)
    times = sorted(r.time for r in records)
    small = table.num_rows < policy.min_rows
    report = SkewReport(
        evaluated_at=iso_now(), since=times[0], until=times[-1], records=len(records),
        baseline_version=version, method=METHOD, features=features,
        prediction=prediction_drift(np.array([r.probability for r in records]),
                                    baseline, policy),
        flagged=flagged_names(features), min_rows=policy.min_rows,
        note="; ".join(filter(None, [
            f"{len(errors)} logged rows did not parse" if errors else None,
            f"{table.num_rows} served rows: fewer than MonitorMinRows "
            f"{policy.min_rows}, nothing flagged" if small else None])) or None)
    return report, len(records)
