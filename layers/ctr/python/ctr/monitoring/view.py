"""What a person looks at (`GET /monitoring`, `ctr monitor`, the page's panel): the
monitor step's `monitoring/summary.json`, the alarms' live CloudWatch states when they
can be read, and the registry's audit timeline. Reads only; no MLflow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ctr import layout
from ctr.monitoring.reports import AlarmState, MonitoringSummary
from ctr.registry.audit import AuditEvent, list_events
from ctr.storage import Store

log = logging.getLogger(__name__)

NOT_YET = ("no monitoring summary yet: the monitor step writes monitoring/summary.json "
           "after the first pipeline execution that finds new data and a production model")


class MonitoringView(BaseModel):
    """The answer of GET /monitoring (and `ctr monitor --json`)."""

    available: bool = Field(description="false until the monitor step wrote a summary")
    message: str | None = Field(None, description="why there is nothing to show yet")
    summary: MonitoringSummary | None = Field(
        description="monitoring/summary.json, its `alarms` replaced by the live states "
                    "when those could be read")
    alarms: list[AlarmState] = Field(description="alarm states, ALARM first")
    alarms_source: Literal["cloudwatch", "summary", "none"] = Field(
        description="cloudwatch: DescribeAlarms now; summary: as the monitor step saw them")
    alarms_error: str | None = Field(None, description="why the live states are missing")
    timeline: list[AuditEvent] = Field(description="registry events, newest first")


def load_summary(store: Store) -> MonitoringSummary | None:
    """monitoring/summary.json, or None when it does not exist yet."""
    found = store.get_json(layout.MONITORING_SUMMARY_KEY)
    if found is None:
        return None
    return MonitoringSummary.model_validate(found[0])


def _when(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def describe_alarms(cloudwatch: Any, prefix: str) -> list[AlarmState]:
    """Every metric and composite alarm whose name starts with `prefix`."""
    states: list[AlarmState] = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            states.append(AlarmState(
                name=alarm["AlarmName"], state=alarm["StateValue"],
                reason=alarm.get("StateReason"),
                updated_at=_when(alarm.get("StateUpdatedTimestamp"))))
    return sort_alarms(states)


_ORDER = {"ALARM": 0, "INSUFFICIENT_DATA": 1, "OK": 2}


def sort_alarms(alarms: list[AlarmState]) -> list[AlarmState]:
    return sorted(alarms, key=lambda a: (_ORDER.get(a.state, 3), a.name))


class AlarmReader:
    """Live alarm states by name prefix, cached for `ttl_s` (the page polls)."""

    def __init__(self, client_factory: Callable[[], Any], prefix: str,
                 ttl_s: float = 15.0) -> None:
        self.prefix = prefix
        self._client_factory = client_factory
        self._client: Any = None
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[AlarmState]] | None = None

    def states(self) -> list[AlarmState]:
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self._ttl_s:
                return self._cached[1]
            if self._client is None:
                self._client = self._client_factory()
            states = describe_alarms(self._client, self.prefix)
            self._cached = (now, states)
            return states


def monitoring_view(store: Store, model_name: str, alarms: AlarmReader | None,
                    timeline_limit: int = 50) -> MonitoringView:
    summary = load_summary(store)
    live: list[AlarmState] | None = None
    error = None
    if alarms is not None:
        try:
            live = alarms.states()
        except Exception as err:  # the summary is still worth showing
            log.warning("alarm states unreadable: %s", err, exc_info=True)
            error = f"{type(err).__name__}: the alarm states could not be read (see logs)"
    if live is not None:
        shown, source = live, "cloudwatch"
    elif summary is not None:
        shown, source = sort_alarms(summary.alarms), "summary"
    else:
        shown, source = [], "none"
    if summary is not None and live is not None:
        summary = summary.model_copy(update={"alarms": live})
    timeline = list_events(store, model_name, newest_first=True, limit=timeline_limit)
    return MonitoringView(
        available=summary is not None, message=None if summary else NOT_YET,
        summary=summary, alarms=shown, alarms_source=source,  # type: ignore[arg-type]
        alarms_error=error, timeline=timeline)
