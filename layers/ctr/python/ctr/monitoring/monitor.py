"""The monitor step: score the served model on every new Parquet part, measure drift and
serving skew, publish the figures, roll back when `previous` is proven better, and
rewrite `monitoring/summary.json`.

In a CTR pipeline the labels arrive with the next logs, so every part that no served
version was trained on is an honest test set for the model being served. Per run:

1. Parts without a quality report (`monitoring/quality/part_NNNNNN.json`), oldest
   first, at most `max_parts`: a part is *fresh* when its index is above the production
   version's `data_last_part` tag (the last part of its training window; its holdout is
   inside that window too). Parts at or below it are listed as `not_fresh` and left
   without a report: the version saw them.
2. Each fresh part is scored by production and previous (when there is one): rows,
   logloss, AUC, normalized entropy, calibration ratio, positive rate
   (`QualityReport`), plus the paired comparison previous - production the rollback
   rule needs; drift of its features and of production's predictions against
   production's training baseline (`DriftReport`), when the version has one.
3. The figures are published as CloudWatch metrics (production under the dimension
   `Model` for the alarms and `Model, ModelVersion` for the graphs; previous under
   the latter) and as a time series on each version's MLflow run (step = part index).
   Parts with fewer than `min_rows` rows publish nothing the alarms read (too noisy).
4. Auto-rollback (`ctr.monitoring.rollback`): at most once per run; after a rollback
   the run stops evaluating (the rest is evaluated next time, with the new production)
   and its result says `rolled_back`, so the state machine publishes serving at once.
5. Served traffic (`predictions/` of the last `skew_hours` hours) against production's
   baseline (`SkewReport`), then `monitoring/summary.json`.

Writes: drift then quality reports are create-only (the quality report is written
last and marks the part done; metrics go out before it, so a crash repeats them, never
loses them); a concurrent run that wrote the report first wins and this one publishes
nothing for the part. MLflow-free at import time: the registry client and the MLflow
time-series writer (`ctr.registry.runlog.log_fresh_metrics`) are passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ctr import layout, metrics, schema
from ctr.bundle import PROVENANCE_FILE
from ctr.clock import iso_now
from ctr.errors import NotFoundError
from ctr.monitoring.baseline import BASELINE_FILE, Baseline
from ctr.monitoring.cloudwatch import AlarmReader, MetricsSink
from ctr.monitoring.drift import (
    METHOD,
    DriftPolicy,
    feature_drift,
    flagged_names,
    prediction_drift,
)
from ctr.monitoring.reports import (
    Comparison,
    DriftReport,
    ModelQuality,
    QualityFigures,
    QualityReport,
)
from ctr.monitoring.rollback import (
    AUTO_ROLLBACK_REASON,
    RollbackDecision,
    RollbackEvidence,
    RollbackPolicy,
    decide_rollback,
)
from ctr.monitoring.skew import prediction_keys, skew_report
from ctr.monitoring.summary import report_json, write_summary
from ctr.predictor import MODEL_FILE, TRANSFORM_FILE, Predictor
from ctr.registry import audit, names, promotion, versions
from ctr.schema import LABEL
from ctr.steps import MonitorResult, RollbackDone
from ctr.storage import Store
from ctr.training import list_parts

log = logging.getLogger(__name__)

_RATIO_CAP = 1e6            # a part without clicks: keep the JSON finite


@dataclass(frozen=True)
class MonitorPolicy:
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    rollback: RollbackPolicy = field(default_factory=RollbackPolicy)
    max_parts: int = 10          # 1M-row parts: ~30 s each on a loaded 2-core host
    skew_hours: int = 24
    summary_parts: int = 50


SeriesLogger = Callable[[str, dict[str, float], int], None]   # (run_id, metrics, step)


class _CapturingRecorder:
    """Passes records to `inner` and keeps the last one (its id goes in the result)."""

    def __init__(self, inner: audit.Recorder) -> None:
        self.inner = inner
        self.last: audit.AuditEvent | None = None

    def record(self, kind: audit.Kind, **kwargs: Any) -> audit.AuditEvent | None:
        self.last = self.inner.record(kind, **kwargs)
        return self.last


# --------------------------------------------------------------------------- served models

@dataclass
class ServedModel:
    role: str                      # "production" | "previous"
    version: int
    run_id: str | None
    predictor: Predictor
    baseline: Baseline | None
    holdout_logloss: float | None
    last_part: int | None
    demoted_by_rollback: bool


def load_served(client: Any, store: Store, model_name: str, version: int, role: str,
                downloader: versions.Downloader | None = None) -> ServedModel:
    """The version as serving has it: its bundle `serving/vN/` when complete (exactly the
    bytes served), else the registry's model; the baseline from the bundle or the run."""
    mv = versions.get_version(client, model_name, version)
    tags = dict(mv.tags or {})
    prefix = layout.serving_prefix(version)
    baseline_bytes: bytes | None
    if store.exists(prefix + PROVENANCE_FILE):
        predictor = Predictor.from_bytes(store.get(prefix + MODEL_FILE).body,
                                         store.get(prefix + TRANSFORM_FILE).body)
        try:
            baseline_bytes = store.get(prefix + BASELINE_FILE).body
        except NotFoundError:
            baseline_bytes = None
    else:
        fetched = versions.fetch_model(client, model_name, version, downloader)
        predictor, baseline_bytes = fetched.predictor(), fetched.baseline_bytes
    holdout = tags.get(names.TAG_HOLDOUT_LOGLOSS)
    return ServedModel(
        role=role, version=version, run_id=mv.run_id, predictor=predictor,
        baseline=Baseline.from_json(baseline_bytes) if baseline_bytes else None,
        holdout_logloss=float(holdout) if holdout else None,
        last_part=versions.last_part_of(mv),
        demoted_by_rollback=tags.get(names.TAG_AUTO_ROLLBACK_DEMOTED) == "true")


# --------------------------------------------------------------------------- figures

def quality_figures(y: np.ndarray, p: np.ndarray) -> QualityFigures:
    rate = float(y.mean()) if y.size else 0.0
    logloss = metrics.logloss(y, p)
    prior = metrics.logloss(y, np.full_like(y, min(max(rate, 1e-7), 1 - 1e-7)))
    auc = metrics.auc(y, p)
    mean_p = float(np.mean(p)) if p.size else 0.0
    return QualityFigures(
        rows=int(y.size), positive_rate=rate, mean_prediction=mean_p, logloss=logloss,
        auc=None if np.isnan(auc) else auc,
        normalized_entropy=min(logloss / prior, _RATIO_CAP) if prior > 0 else _RATIO_CAP,
        calibration_ratio=min(mean_p / rate, _RATIO_CAP) if rate > 0 else _RATIO_CAP)


def compare(y: np.ndarray, p_prod: np.ndarray, p_prev: np.ndarray,
            tolerance: float) -> tuple[Comparison, metrics.PairedBound,
                                       tuple[float, float, float]]:
    """previous - production per-row logloss on the same rows, as the gate measures it."""
    bound = metrics.paired_difference(metrics.per_row_logloss(y, p_prev)
                                      - metrics.per_row_logloss(y, p_prod))
    calibration = metrics.calibration_interval(y, p_prev)
    cap = [min(v, _RATIO_CAP) for v in calibration]
    return Comparison(rows=bound.rows, blocks=bound.blocks, logloss_diff_mean=bound.mean,
                      logloss_diff_upper95=min(bound.upper, _RATIO_CAP),
                      previous_better=bool(bound.upper < -tolerance), tolerance=tolerance,
                      previous_calibration_ratio=cap[0], previous_calibration_low95=cap[1],
                      previous_calibration_high95=cap[2]), bound, calibration


def _metric(name: str, value: float, dims: dict[str, str], now: datetime,
            unit: str = "None") -> dict[str, Any]:
    return {"MetricName": name, "Value": float(value), "Unit": unit, "Timestamp": now,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}


def part_metrics(model_name: str, quality: ModelQuality, drift: DriftReport | None,
                 *, alarm_series: bool, now: datetime) -> list[dict[str, Any]]:
    """CloudWatch datapoints of one model on one part (see the module docstring)."""
    f = quality.figures
    values = {"FreshLogloss": f.logloss, "FreshNormalizedEntropy": f.normalized_entropy,
              "FreshCalibrationRatio": f.calibration_ratio,
              "FreshCalibrationDeviation": abs(f.calibration_ratio - 1),
              "FreshRows": float(f.rows)}
    if f.auc is not None:
        values["FreshAuc"] = f.auc
    if quality.holdout_logloss:
        values["FreshLoglossRatio"] = f.logloss / quality.holdout_logloss
    if drift is not None:
        values["DriftedFeatures"] = float(len(drift.flagged))
        values["MaxFeatureDrift"] = max((x.score for x in drift.features), default=0.0)
        if drift.prediction is not None:
            values["PredictionDrift"] = drift.prediction.score
    dim_sets = [{"Model": model_name, "ModelVersion": str(quality.version)}]
    if alarm_series:
        dim_sets.append({"Model": model_name})
    return [_metric(name, value, dims, now) for dims in dim_sets
            for name, value in values.items()]


def series(quality: ModelQuality, drift: DriftReport | None) -> dict[str, float]:
    """The MLflow time series of one model on one part (step = part index)."""
    f = quality.figures
    out = {"fresh_logloss": f.logloss, "fresh_normalized_entropy": f.normalized_entropy,
           "fresh_calibration_ratio": f.calibration_ratio, "fresh_positive_rate":
           f.positive_rate, "fresh_rows": float(f.rows)}
    if f.auc is not None:
        out["fresh_auc"] = f.auc
    if quality.holdout_logloss:
        out["fresh_logloss_ratio"] = f.logloss / quality.holdout_logloss
    if drift is not None:
        out["drifted_features"] = float(len(drift.flagged))
    return out


# --------------------------------------------------------------------------- one part

@dataclass
class PartOutcome:
    quality: QualityReport
    drift: DriftReport | None
    rollback_evidence: RollbackEvidence | None


def evaluate_part(index: int, table: pa.Table, production: ServedModel,
                  previous: ServedModel | None, policy: MonitorPolicy,
                  rolled_back_already: bool = False) -> PartOutcome:
    """Score one part (pure: no I/O)."""
    now = iso_now()
    y = table.column(LABEL).to_numpy().astype(np.float64)
    p_prod = production.predictor.predict_table(table)
    models = [ModelQuality(role="production", version=production.version,
                           run_id=production.run_id, figures=quality_figures(y, p_prod),
                           holdout_logloss=production.holdout_logloss)]
    comparison, evidence = None, None
    if previous is not None:
        p_prev = previous.predictor.predict_table(table)
        models.append(ModelQuality(role="previous", version=previous.version,
                                   run_id=previous.run_id, figures=quality_figures(y, p_prev),
                                   holdout_logloss=previous.holdout_logloss))
        comparison, bound, calibration = compare(y, p_prod, p_prev,
                                                 policy.rollback.gate.tolerance)
        evidence = RollbackEvidence(
            part=index, rows=int(y.size), production_version=production.version,
            previous_version=previous.version, logloss_difference=bound,
            previous_calibration=calibration,
            previous_demoted_by_rollback=previous.demoted_by_rollback,
            already_rolled_back=rolled_back_already)
    small = table.num_rows < policy.drift.min_rows
    note = (f"{table.num_rows} rows: fewer than MonitorMinRows {policy.drift.min_rows}, "
            "so no drift flag and no alarm metric" if small else None)
    quality = QualityReport(part=index, part_key=layout.parquet_key(index), evaluated_at=now,
                            rows=table.num_rows, models=models, comparison=comparison,
                            fresh=True, note=note)
    drift = None
    if production.baseline is not None:
        features = feature_drift(table, production.baseline, policy.drift,
                                 production.predictor.transform)
        drift = DriftReport(
            part=index, part_key=layout.parquet_key(index), evaluated_at=now,
            rows=table.num_rows, baseline_version=production.version, method=METHOD,
            features=features,
            prediction=prediction_drift(p_prod, production.baseline, policy.drift),
            flagged=flagged_names(features), min_rows=policy.drift.min_rows, note=note)
    return PartOutcome(quality, drift, evidence)


# --------------------------------------------------------------------------- the step

def _ranges(indices: list[int]) -> str:
    if not indices:
        return "none"
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def read_part(store: Store, index: int) -> pa.Table:
    return schema.read_part(store.get(layout.parquet_key(index)).body)


def run_monitor(store: Store, client: Any, model_name: str, *,
                policy: MonitorPolicy | None = None, sink: MetricsSink | None = None,
                alarms: AlarmReader | None = None, log_series: SeriesLogger | None = None,
                recorder: audit.Recorder | None = None, max_parts: int | None = None,
                downloader: versions.Downloader | None = None) -> MonitorResult:
    """The whole monitor step (see the module docstring)."""
    policy = policy or MonitorPolicy()
    started = time.perf_counter()
    current = versions.aliases(client, model_name)
    prod_v, prev_v = current.get(names.PRODUCTION), current.get(names.PREVIOUS)
    notes: list[str] = []
    empty: dict[str, Any] = dict(evaluated=[], not_fresh=[], pending=[], drift_flagged={},
                                 rolled_back=False, skew_records=0, metrics_published=0)
    if prod_v is None:
        write_summary(store, model_name, None, None, alarms,
                      ["no production version yet: nothing is served, nothing monitored"])
        return MonitorResult(status="no_model", reason="no production version yet",
                             production_version=None, previous_version=prev_v,
                             seconds=time.perf_counter() - started, **empty)
    last_part = versions.last_part_of(versions.get_version(client, model_name, prod_v))
    if last_part is None:
        notes.append(f"production v{prod_v} has no {names.TAG_DATA_LAST_PART} tag: every "
                     "part is treated as fresh")
    done = {layout.index_of(k) for k in store.list_keys(f"{layout.MONITORING_PREFIX}quality/")
            if k.endswith(".json")}
    todo = [i for i in (layout.index_of(k) for k in list_parts(store)) if i not in done]
    not_fresh = [i for i in todo if last_part is not None and i <= last_part]
    if not_fresh:
        notes.append(f"parts {_ranges(not_fresh)} are in production v{prod_v}'s training "
                     f"window (up to part {last_part}): not fresh, not scored")
    fresh = [i for i in todo if i not in not_fresh]
    limit = max_parts or policy.max_parts
    batch, pending = fresh[:limit], fresh[limit:]
    served_keys = list(prediction_keys(store, policy.skew_hours))
    if not batch and not served_keys:     # nothing to score: no model is loaded
        write_summary(store, model_name, prod_v, prev_v, alarms, notes,
                      parts=policy.summary_parts)
        return MonitorResult(status="nothing_new", reason="no fresh part without a quality "
                             "report and no served traffic to compare",
                             production_version=prod_v, previous_version=prev_v,
                             seconds=time.perf_counter() - started,
                             **{**empty, "not_fresh": not_fresh})
    production = load_served(client, store, model_name, prod_v, "production", downloader)
    previous = (load_served(client, store, model_name, prev_v, "previous", downloader)
                if prev_v is not None and batch else None)
    if production.baseline is None:
        notes.append(f"production v{prod_v} has no training baseline (trained before "
                     "monitoring existed): quality only, no drift or skew")

    evaluated: list[int] = []
    flagged: dict[str, list[str]] = {}
    published = 0
    rollback_done: RollbackDone | None = None
    for index in batch:
        outcome = evaluate_part(index, read_part(store, index), production, previous, policy)
        if store.exists(layout.quality_key(index)):
            continue                                   # a concurrent run was first
        if outcome.drift is not None:
            store.put_if_absent(layout.drift_key(index), report_json(outcome.drift),
                                "application/json")
            flagged[str(index)] = outcome.drift.flagged
        published += _publish(model_name, outcome, policy, sink, log_series)
        if store.put_if_absent(layout.quality_key(index), report_json(outcome.quality),
                               "application/json") is None:
            continue
        evaluated.append(index)
        if outcome.rollback_evidence is not None:
            decision = decide_rollback(outcome.rollback_evidence, policy.rollback)
            log.info("part %d: rollback rule: %s", index, decision.reason)
            if decision.roll_back:
                rollback_done = _roll_back(client, model_name, outcome, decision, recorder)
                pending = [i for i in batch if i > index] + pending
                break
    skew, skew_records = (None, 0)
    if production.baseline is not None and rollback_done is None and served_keys:
        skew, skew_records = skew_report(store, served_keys, production.baseline,
                                         production.version, production.predictor.transform,
                                         policy.drift)
        if skew is not None:
            store.put_if_absent(layout.skew_key(datetime.now(tz=UTC).strftime(
                "%Y%m%dT%H%M%S")), report_json(skew), "application/json")
    new_aliases = versions.aliases(client, model_name) if rollback_done else current
    write_summary(store, model_name, new_aliases.get(names.PRODUCTION),
                  new_aliases.get(names.PREVIOUS), alarms, notes, parts=policy.summary_parts)
    reason = (f"evaluated parts {_ranges(evaluated)} with production v{prod_v}"
              + (f" and previous v{prev_v}" if prev_v is not None else "")
              if evaluated else "no fresh part without a quality report")
    if rollback_done is not None:
        reason += f"; rolled back to v{rollback_done.restored}"
    return MonitorResult(
        status="evaluated" if evaluated else "nothing_new", reason=reason,
        production_version=prod_v, previous_version=prev_v, evaluated=evaluated,
        not_fresh=not_fresh, pending=pending, drift_flagged=flagged,
        rolled_back=rollback_done is not None, rollback=rollback_done,
        skew_records=skew_records, metrics_published=published,
        seconds=time.perf_counter() - started)


def _publish(model_name: str, outcome: PartOutcome, policy: MonitorPolicy,
             sink: MetricsSink | None, log_series: SeriesLogger | None) -> int:
    now = datetime.now(tz=UTC)
    enough = outcome.quality.rows >= policy.drift.min_rows
    count = 0
    for quality in outcome.quality.models:
        production = quality.role == "production"
        drift = outcome.drift if production else None
        if sink is not None:
            count += sink.publish(part_metrics(model_name, quality, drift,
                                               alarm_series=production and enough, now=now))
        if log_series is not None and quality.run_id:
            log_series(quality.run_id, series(quality, drift), outcome.quality.part)
    return count


def _roll_back(client: Any, model_name: str, outcome: PartOutcome,
               decision: RollbackDecision, recorder: audit.Recorder | None) -> RollbackDone:
    e = outcome.rollback_evidence
    assert e is not None and e.previous_version is not None
    d = e.logloss_difference
    numbers: dict[str, float | str] = {"part": e.part, "rows": e.rows}
    if d is not None:
        numbers |= {"logloss_diff_mean": d.mean, "logloss_diff_upper95": d.upper,
                    "blocks": d.blocks}
    if e.previous_calibration is not None:
        numbers |= {"previous_calibration_ratio": e.previous_calibration[0]}
    for q in outcome.quality.models:
        numbers[f"{q.role}_fresh_logloss"] = q.figures.logloss
    promotion.set_tags(client, model_name, e.production_version,
                       {names.TAG_AUTO_ROLLBACK_DEMOTED: "true"})
    capturing = _CapturingRecorder(recorder) if recorder is not None else None
    change = promotion.rollback(client, model_name,
                                reason=f"{AUTO_ROLLBACK_REASON}: {decision.reason}",
                                recorder=capturing, numbers=numbers)
    log.warning("auto-rollback: %s", decision.reason)
    return RollbackDone(restored=change.production, rolled_back=e.production_version,
                        part=e.part, reason=decision.reason,
                        audit_event_id=capturing.last.event_id
                        if capturing and capturing.last else None)


