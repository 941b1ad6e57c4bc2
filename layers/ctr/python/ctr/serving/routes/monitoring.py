"""GET /monitoring: the served model's fresh-data quality, drift, serving skew, alarm
states and the registry's audit timeline (`ctr.monitoring.view`), from the bucket's
`monitoring/` and `audit/` prefixes and, when the function may call it, CloudWatch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from ctr.monitoring.view import AlarmReader, MonitoringView, monitoring_view
from ctr.serving.dependencies import Cache, Settings, get_alarm_reader

router = APIRouter()


@router.get("/monitoring", response_model=MonitoringView, summary="Monitoring")
def monitoring(cache: Cache, settings: Settings,
               alarms: Annotated[AlarmReader | None, Depends(get_alarm_reader)],
               timeline: int = Query(50, ge=0, le=500,
                                     description="at most this many audit events")
               ) -> MonitoringView:
    """The monitor step's summary (`monitoring/summary.json`): per new part, production's
    and previous's logloss, AUC and calibration on rows neither was trained on; the
    newest part's feature drift; the served-traffic skew; automatic rollbacks. `alarms`
    are CloudWatch's live states (alarms named `<stack>-monitor-...`) when
    MONITOR_ALARM_PREFIX is set, else the states the summary recorded. Before the first
    summary the answer is still 200, with `available: false` and a `message`."""
    return monitoring_view(cache.store, settings.model_name, alarms, timeline)
