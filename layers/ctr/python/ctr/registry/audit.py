"""The registry's audit trail: one immutable S3 object per registry event, and the same
event on EventBridge. MLflow-free (`ctr.serving` reads the trail; the events client is
passed in).

    recorder = AuditRecorder(store, events_client(), actor=execution_name)
    promotion.promote(client, model, 7, reason="...", recorder=recorder)
    list_events(store, model)          # oldest first

Kinds and the EventBridge detail-type each is published as (source `ctr.pipeline`):

    registered      ModelRegistered    the train step registered a version
    promoted        ModelPromoted      the gate moved `production` to a version
    manual_promote  ModelPromoted      an operator did (`ctr model promote V --reason`)
    rejected        ModelRejected      the gate kept production and rejected the version
    rollback        ModelRolledBack    `production` went back to `previous`

**Order.** `record` writes the audit object first, then publishes; a failed publish is
logged and raised as `TransientError`, so the step is retried. The promotion functions
record *before* they move any alias or tag (write-ahead): a crash or a failed publish
leaves the version a gate candidate (or the aliases untouched), the retry repeats the
change, and no registry change is ever made without its record.

**Keys and retries.** `audit/<model>/<UTC yyyymmddThhmmss.ffffff>-<kind>-v<version>-<id>.json`:
the time prefix keeps keys sorted by time, and the object is written with
`put_if_absent` (create-only; the template allows this prefix only conditional PUTs).
`<id>` is the event id, a digest of what identifies the *logical* event rather than a
random uuid:

- `registered`: (model, kind, version): a version is registered once;
- an execution's event (`AuditRecorder(..., manual=False)`): (model, kind, version,
  actor), since an execution name is unique and an execution promotes, rejects or rolls
  back a version at most once;
- an operator's event (`manual=True`, the CLI user): (model, kind, version, actor,
  production before), since the same person may legitimately repeat the same command
  later. (`production` is the alias the promotion functions move last, so it is still
  the "before" value when an interrupted command is re-run.)

Before writing, `record` looks for an existing record with the same id (for operator
events: only the newest record of the model, because a repeat after other events is a
new event) and, when there is one, publishes that record again instead of writing a
second one. So a retried step, or a CLI command re-run after a failed publish, neither
duplicates the trail nor loses the event; subscribers may see an event twice (EventBridge
delivery is at-least-once anyway) and can deduplicate on `detail.event_id`.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import pydantic

from ctr import layout
from ctr.clock import iso_now
from ctr.errors import TransientError
from ctr.storage import Store

log = logging.getLogger(__name__)

SOURCE = "ctr.pipeline"
Kind = Literal["registered", "promoted", "rejected", "manual_promote", "rollback"]
DETAIL_TYPES: dict[str, str] = {
    "registered": "ModelRegistered",
    "promoted": "ModelPromoted",
    "manual_promote": "ModelPromoted",
    "rejected": "ModelRejected",
    "rollback": "ModelRolledBack",
}


class AuditEvent(pydantic.BaseModel):
    """One registry event, as stored under `audit/` and sent as the EventBridge detail."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    event_id: str = pydantic.Field(description="digest of the logical event (see module doc)")
    time: str = pydantic.Field(description="when it was recorded, ISO 8601 UTC")
    kind: Kind
    model_name: str
    version: int | None = pydantic.Field(
        description="the version the event is about (for a rollback: the one restored)")
    production_before: int | None = None
    production_after: int | None = None
    previous_before: int | None = None
    previous_after: int | None = None
    actor: str = pydantic.Field(description="execution name, or the operator's user name")
    reason: str
    numbers: dict[str, float | str] = pydantic.Field(default_factory=dict)

    @property
    def detail_type(self) -> str:
        return DETAIL_TYPES[self.kind]


def cli_user() -> str:
    """The operator named in a CLI event: $CTR_ACTOR, else the login name."""
    name = os.environ.get("CTR_ACTOR")
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):        # no passwd entry (containers)
            name = "unknown"
    return f"cli:{name}"


def model_prefix(model_name: str) -> str:
    return f"{layout.AUDIT_PREFIX}{model_name}/"


def event_key(event: AuditEvent, at: datetime) -> str:
    """The object key of `event` recorded at `at` (microseconds, so that two events of
    one step sort in the order they happened; `event.time` is whole seconds)."""
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")
    version = "-" if event.version is None else str(event.version)
    return f"{model_prefix(event.model_name)}{stamp}-{event.kind}-v{version}-{event.event_id}.json"


def _id_of(key: str) -> str:
    return key.rsplit("-", 1)[-1].removesuffix(".json")


def list_events(store: Store, model_name: str, *, newest_first: bool = False,
                limit: int | None = None) -> list[AuditEvent]:
    """The recorded events of `model_name` in time order (keys sort by time), oldest
    first unless `newest_first`; at most `limit` of them (the newest when newest first,
    else the oldest). Reads S3 only, never MLflow."""
    keys = sorted((k for k in store.list_keys(model_prefix(model_name))
                   if k.endswith(".json")), reverse=newest_first)
    if limit is not None:
        keys = keys[:limit]
    return [AuditEvent.model_validate_json(store.get(k).body) for k in keys]


class EventsClient(Protocol):
    def put_events(self, **kwargs: Any) -> dict[str, Any]: ...


def events_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 EventBridge client (AWS_ENDPOINT_URL, when set, points at the emulator)."""
    import boto3
    from botocore.config import Config

    return boto3.client("events", endpoint_url=endpoint_url, region_name=region,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}))


class Recorder(Protocol):
    """What the promotion functions call; `AuditRecorder` or `NullRecorder`."""

    def record(self, kind: Kind, *, model_name: str, version: int | None, reason: str,
               production_before: int | None = None, production_after: int | None = None,
               previous_before: int | None = None, previous_after: int | None = None,
               numbers: dict[str, float | str] | None = None) -> AuditEvent | None: ...


class NullRecorder:
    """Records nothing (the default of every caller that passes no recorder)."""

    def record(self, kind: Kind, *, model_name: str, version: int | None, reason: str,
               production_before: int | None = None, production_after: int | None = None,
               previous_before: int | None = None, previous_after: int | None = None,
               numbers: dict[str, float | str] | None = None) -> AuditEvent | None:
        return None


class AuditRecorder:
    """Appends one object per event under `audit/<model>/`, then publishes it to the
    EventBridge bus `bus_name` (see the module docstring for keys and retries).
    `events=None` writes the trail only."""

    def __init__(self, store: Store, events: EventsClient | None, *, actor: str,
                 manual: bool = False, bus_name: str = "default") -> None:
        self.store = store
        self.events = events
        self.actor = actor
        self.manual = manual
        self.bus_name = bus_name

    def record(self, kind: Kind, *, model_name: str, version: int | None, reason: str,
               production_before: int | None = None, production_after: int | None = None,
               previous_before: int | None = None, previous_after: int | None = None,
               numbers: dict[str, float | str] | None = None) -> AuditEvent:
        event_id = self._event_id(kind, model_name, version, production_before)
        event = self._existing(model_name, event_id)
        if event is None:
            at = datetime.now(tz=UTC)
            event = AuditEvent(
                event_id=event_id, time=iso_now(), kind=kind, model_name=model_name,
                version=version, production_before=production_before,
                production_after=production_after, previous_before=previous_before,
                previous_after=previous_after, actor=self.actor, reason=reason,
                numbers=numbers or {})
            key = event_key(event, at)
            self.store.put_if_absent(key, event.model_dump_json().encode(),
                                     content_type="application/json")
            log.info("audit: %s %s v%s recorded as %s", model_name, kind, version, key)
        else:
            log.info("audit: %s %s v%s already recorded (%s); publishing it again",
                     model_name, kind, version, event_id)
        self.publish(event)
        return event

    def publish(self, event: AuditEvent) -> None:
        if self.events is None:
            return
        entry = {"Source": SOURCE, "DetailType": event.detail_type,
                 "Detail": event.model_dump_json(), "EventBusName": self.bus_name,
                 "Resources": []}
        try:
            resp = self.events.put_events(Entries=[entry])
        except Exception as err:          # botocore's ClientError, EndpointConnectionError...
            log.error("audit: publishing %s %s failed: %s", event.detail_type,
                      event.event_id, err)
            raise TransientError(f"could not publish {event.detail_type} for "
                                 f"{event.model_name} v{event.version}: {err}",
                                 event_id=event.event_id) from err
        if resp.get("FailedEntryCount"):
            failed = resp.get("Entries", [{}])[0]
            log.error("audit: EventBridge refused %s %s: %s", event.detail_type,
                      event.event_id, failed)
            raise TransientError(f"EventBridge refused {event.detail_type} for "
                                 f"{event.model_name} v{event.version}: "
                                 f"{failed.get('ErrorCode')} {failed.get('ErrorMessage')}",
                                 event_id=event.event_id)

    def _event_id(self, kind: Kind, model_name: str, version: int | None,
                  production_before: int | None) -> str:
        parts: list[object] = [model_name, kind, version]
        if kind != "registered":
            parts.append(self.actor)
            if self.manual:
                parts.append(production_before)
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        return digest[:16]

    def _existing(self, model_name: str, event_id: str) -> AuditEvent | None:
        keys = sorted(self.store.list_keys(model_prefix(model_name)))
        candidates = keys[-1:] if self.manual else keys
        for key in reversed(candidates):
            if _id_of(key) == event_id:
                return AuditEvent.model_validate_json(self.store.get(key).body)
        return None


def record_registered(recorder: Recorder | None, *, model_name: str, version: int,
                      reason: str = "registered as a gate candidate",
                      production: int | None = None, previous: int | None = None,
                      numbers: dict[str, float | str] | None = None) -> AuditEvent | None:
    """The train step's `registered` event (aliases unchanged by registering)."""
    if recorder is None:
        return None
    return recorder.record("registered", model_name=model_name, version=version,
                           reason=reason, production_before=production,
                           production_after=production, previous_before=previous,
                           previous_after=previous, numbers=numbers)
