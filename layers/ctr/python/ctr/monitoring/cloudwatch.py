"""CloudWatch for monitoring: the metrics sink the monitor step publishes to, and the
reader of the stack's monitoring alarms (for the summary). Both take a boto3 client.

`PutMetricData` rather than Powertools' EMF log lines: LocalStack 2026.3 does not turn EMF
into metrics, so its alarms would never see them; in AWS one call per part is the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from ctr.monitoring.reports import AlarmState


class MetricsSink(Protocol):
    def publish(self, data: list[dict[str, Any]]) -> int: ...


class CloudWatchSink:
    """PutMetricData (LocalStack 2026.3 does not turn Powertools' EMF log lines into
    metrics, and in AWS one call per part is cheaper than a log line per figure)."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def publish(self, data: list[dict[str, Any]]) -> int:
        for start in range(0, len(data), 20):
            self.client.put_metric_data(Namespace=self.namespace,
                                        MetricData=data[start:start + 20])
        return len(data)


class AlarmReader(Protocol):
    def alarms(self) -> list[AlarmState]: ...


class CloudWatchAlarms:
    """The stack's monitoring alarms (names start with `prefix`)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def alarms(self) -> list[AlarmState]:
        out = []
        for page in self.client.get_paginator("describe_alarms").paginate(
                AlarmNamePrefix=self.prefix, AlarmTypes=["MetricAlarm"]):
            for a in page.get("MetricAlarms", []):
                updated = a.get("StateUpdatedTimestamp")
                out.append(AlarmState(
                    name=a["AlarmName"], state=a.get("StateValue", "INSUFFICIENT_DATA"),
                    reason=a.get("StateReason"),
                    updated_at=updated.astimezone(UTC).isoformat(timespec="seconds")
                    if isinstance(updated, datetime) else None))
        return sorted(out, key=lambda a: a.name)
