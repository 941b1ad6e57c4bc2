"""`monitoring/summary.json` (`MonitoringSummary`): what a person looks at, rebuilt from
the reports in S3, the alarm states and the audit trail by every monitor run; `GET
/monitoring`, `ctr monitor` and the page read it."""

from __future__ import annotations

import pydantic

from ctr import layout
from ctr.clock import iso_now
from ctr.monitoring.cloudwatch import AlarmReader
from ctr.monitoring.reports import DriftReport, MonitoringSummary, QualityReport, SkewReport
from ctr.monitoring.rollback import AUTO_ROLLBACK_REASON
from ctr.registry import audit
from ctr.storage import Store

SUMMARY_PARTS = 50            # quality reports in the summary, the newest


def report_json(model: pydantic.BaseModel) -> bytes:
    """How every monitoring document is stored."""
    return model.model_dump_json(indent=1).encode()



def _newest(store: Store, prefix: str, n: int) -> list[str]:
    return sorted(k for k in store.list_keys(prefix) if k.endswith(".json"))[-n:]


def write_summary(store: Store, model_name: str, production: int | None,
                  previous: int | None, alarms: AlarmReader | None, notes: list[str], *,
                  parts: int = SUMMARY_PARTS) -> MonitoringSummary:
    """Rewrite `monitoring/summary.json` from the reports in S3 and the alarms."""
    quality = [QualityReport.model_validate_json(store.get(k).body)
               for k in _newest(store, f"{layout.MONITORING_PREFIX}quality/",
                                parts)]
    drift_keys = _newest(store, f"{layout.MONITORING_PREFIX}drift/", 1)
    skew_keys = _newest(store, f"{layout.MONITORING_PREFIX}skew/", 1)
    rollbacks = [k for k in sorted(store.list_keys(audit.model_prefix(model_name)))
                 if "-rollback-" in k and AUTO_ROLLBACK_REASON in
                 audit.AuditEvent.model_validate_json(store.get(k).body).reason]
    summary = MonitoringSummary(
        generated_at=iso_now(), model_name=model_name, production_version=production,
        previous_version=previous, quality=quality,
        drift=DriftReport.model_validate_json(store.get(drift_keys[0]).body)
        if drift_keys else None,
        skew=SkewReport.model_validate_json(store.get(skew_keys[0]).body)
        if skew_keys else None,
        alarms=alarms.alarms() if alarms is not None else [],
        rollbacks=rollbacks,
        notes=notes)
    store.put(layout.MONITORING_SUMMARY_KEY, report_json(summary), "application/json")
    return summary
