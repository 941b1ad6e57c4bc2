"""`ctr monitor`: how the served model is doing, from the monitor step's
`monitoring/summary.json` (`ctr.monitoring.view`, the same answer as GET /monitoring).

Prints, per new part, production's and previous's rows, logloss, AUC and calibration on
rows neither was trained on (with a sparkline of production's logloss when stdout is a
terminal), the newest part's drift flags, the served-traffic skew, the alarm states and
the automatic rollbacks. `--json` prints the whole view.

The bucket is --bucket, else $CTR_BUCKET, else the running local cloud's. Alarm states
come from CloudWatch (alarms named `<stack>-monitor-...`; the stack is --stack, else
$CTR_STACK_NAME, else the local cloud's), else from the summary; --no-live-alarms skips
CloudWatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ctr_infra.commands.model import DEFAULT_MODEL_NAME, fixed_width

if TYPE_CHECKING:
    from ctr.monitoring.reports import (
        DriftReport,
        FeatureDrift,
        ModelQuality,
        QualityReport,
        SkewReport,
    )
    from ctr.monitoring.view import AlarmReader, MonitoringView
    from ctr.storage import Store

SPARKS = "▁▂▃▄▅▆▇█"
TOP_FEATURES = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="fresh-data quality, drift, skew, alarms, rollbacks")
    p.add_argument("--model-name", default=os.environ.get("MODEL_NAME", DEFAULT_MODEL_NAME))
    p.add_argument("--bucket", help="the pipeline's bucket (default: $CTR_BUCKET, else the "
                                    "local cloud's)")
    p.add_argument("--endpoint-url", help="S3 and CloudWatch endpoint (default: "
                                          "$AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--stack", help="stack name for the alarm prefix <stack>-monitor- "
                                   "(default: $CTR_STACK_NAME, else the local cloud's)")
    p.add_argument("--no-live-alarms", action="store_true",
                   help="show the alarm states the summary recorded, skip CloudWatch")
    p.add_argument("--parts", type=int, default=12, help="show the newest N parts")
    p.add_argument("--json", action="store_true", help="print the whole view as JSON")
    p.set_defaults(func=cmd_monitor)


def targets(args: argparse.Namespace) -> tuple[Store, AlarmReader | None]:
    """The bucket and the alarm reader the arguments name (see the module docstring)."""
    from ctr.errors import ConfigError
    from ctr.monitoring.view import AlarmReader
    from ctr.storage import Store, make_s3_client

    bucket = args.bucket or os.environ.get("CTR_BUCKET")
    stack = args.stack or os.environ.get("CTR_STACK_NAME")
    if bucket:
        store = Store(make_s3_client(args.endpoint_url), bucket)

        def cloudwatch() -> Any:
            import boto3

            return boto3.client("cloudwatch", endpoint_url=args.endpoint_url)
    else:
        from ctr_infra import localcloud

        cfg = localcloud.CloudConfig()
        bucket = localcloud.read_outputs(cfg).get("BucketName")
        if not bucket:
            raise ConfigError("no bucket: pass --bucket, set CTR_BUCKET, or start the local "
                              "cloud (make up)")
        store = Store(localcloud.boto3_client(cfg, "s3"), bucket)
        stack = stack or cfg.stack_name

        def cloudwatch() -> Any:
            return localcloud.boto3_client(cfg, "cloudwatch")
    if args.no_live_alarms or not stack:
        return store, None
    return store, AlarmReader(cloudwatch, f"{stack}-monitor-", ttl_s=0)


def cmd_monitor(args: argparse.Namespace) -> int:
    from ctr.monitoring.view import monitoring_view

    store, alarms = targets(args)
    view = monitoring_view(store, args.model_name, alarms)
    if args.json:
        print(json.dumps(view.model_dump(mode="json"), indent=2))
    else:
        print(format_view(view, parts=args.parts, terminal=sys.stdout.isatty()))
    return 0


# --------------------------------------------------------------------------- formatting

def sparkline(values: Sequence[float | None]) -> str:
    """One block character per value, scaled between the smallest and the largest
    (a gap for a missing value; the middle block when all are equal)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    top = len(SPARKS) - 1
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif hi - lo < 1e-12:
            out.append(SPARKS[top // 2])
        else:
            out.append(SPARKS[round((v - lo) / (hi - lo) * top)])
    return "".join(out)


def _f(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _role(report: QualityReport, role: str) -> ModelQuality | None:
    return next((m for m in report.models if m.role == role), None)


def format_quality(reports: list[QualityReport]) -> str:
    header = ("part", "rows", "prod", "logloss", "auc", "calib", "prev", "logloss", "auc",
              "calib", "prev-prod upper95")
    rows: list[Sequence[str]] = [header]
    for r in reports:
        prod, prev = _role(r, "production"), _role(r, "previous")
        cells = [f"{r.part:06d}", f"{r.rows:,}"]
        for m in (prod, prev):
            if m is None:
                cells += ["-", "-", "-", "-"]
            else:
                cells += [f"v{m.version}", _f(m.figures.logloss), _f(m.figures.auc),
                          _f(m.figures.calibration_ratio, 3)]
        c = r.comparison
        better = " previous better" if c is not None and c.previous_better else ""
        cells.append("-" if c is None else f"{c.logloss_diff_upper95:+.5f}{better}")
        rows.append(cells)
    return fixed_width(rows)


def _feature_rows(features: list[FeatureDrift]) -> list[Sequence[str]]:
    ranked = sorted(features, key=lambda f: (not f.flagged, -(f.score / f.threshold
                                                                if f.threshold else f.score)))
    rows: list[Sequence[str]] = [("feature", "kind", "score", "threshold", "unseen", "flag")]
    for f in ranked[:TOP_FEATURES]:
        rows.append((f.feature, f.kind, _f(f.score), _f(f.threshold),
                     "-" if f.unseen_share is None else f"{f.unseen_share:.1%}",
                     "DRIFT" if f.flagged else ""))
    return rows


def format_drift(drift: DriftReport) -> str:
    flagged = ", ".join(drift.flagged) or "none"
    lines = [f"Drift (part {drift.part:06d}, {drift.rows:,} rows, vs v{drift.baseline_version} "
             f"baseline, {drift.method}): flagged {flagged}"]
    features = list(drift.features) + ([drift.prediction] if drift.prediction else [])
    lines.append(fixed_width(_feature_rows(features)))
    return "\n".join(lines)


def format_skew(skew: SkewReport) -> str:
    flagged = ", ".join(skew.flagged) or "none"
    window = f"{skew.since or '?'} .. {skew.until or '?'}"
    lines = [f"Serving skew ({skew.records:,} logged predictions, {window}, vs "
             f"v{skew.baseline_version} baseline): flagged {flagged}"]
    features = list(skew.features) + ([skew.prediction] if skew.prediction else [])
    if features:
        lines.append(fixed_width(_feature_rows(features)))
    return "\n".join(lines)


def format_view(view: MonitoringView, parts: int = 12, terminal: bool = False) -> str:
    if not view.available or view.summary is None:
        out = [f"Monitoring: {view.message}"]
    else:
        s = view.summary
        prev = f"v{s.previous_version}" if s.previous_version else "-"
        prod = f"v{s.production_version}" if s.production_version else "-"
        out = [f"Monitoring {s.model_name}: production {prod}, previous {prev} "
               f"(summary of {s.generated_at})", ""]
        shown = s.quality[-parts:] if parts > 0 else []
        if shown:
            out += [f"Fresh-data quality (each part scored before training on it; newest "
                    f"{len(shown)} of {len(s.quality)}):", format_quality(shown)]
            if terminal:
                series = [(_role(r, "production").figures.logloss  # type: ignore[union-attr]
                           if _role(r, "production") else None) for r in s.quality]
                out.append(f"production logloss over {len(series)} parts: "
                           f"{sparkline(series)}  ({_f(min(v for v in series if v is not None))}"
                           f" .. {_f(max(v for v in series if v is not None))})"
                           if any(v is not None for v in series) else "")
        else:
            out.append("Fresh-data quality: no part evaluated yet")
        out += ["", format_drift(s.drift) if s.drift else "Drift: no report yet"]
        out += ["", format_skew(s.skew) if s.skew else
                "Serving skew: no report yet (prediction logs needed)"]
    out += ["", f"Alarms ({view.alarms_source}):"]
    if view.alarms:
        out.append(fixed_width([("name", "state", "since", "reason")] + [
            (a.name, a.state, a.updated_at or "-", (a.reason or "-")[:70])
            for a in view.alarms]))
    else:
        out.append("  none" + (f" ({view.alarms_error})" if view.alarms_error else ""))
    rollbacks = [e for e in view.timeline if "rollback" in e.kind]
    automatic = view.summary.rollbacks if view.summary else []
    out += ["", f"Rollbacks ({len(automatic)} automatic in the summary):"]
    if rollbacks:
        out.append(fixed_width([("time", "production", "actor", "reason")] + [
            (e.time, f"v{e.production_before}->v{e.production_after}", e.actor,
             e.reason[:70]) for e in rollbacks[:5]]))
    else:
        out.append("  none")
    return "\n".join(out).rstrip() + "\n"
