"""Moving aliases and tags: `promote`, `rollback`, and applying a gate decision.

Tags are written before the alias that they describe moves, and the production alias
moves last, so a call interrupted at any point and repeated ends in the same state.
MLflow-free at import time (the client is passed in).

Each function takes an optional `recorder` (`ctr.registry.audit`): the event (promoted,
manual_promote, rejected, rollback, with the aliases before and after) is recorded
before anything moves, so no change is made without its record and a retry after a
failed publish repeats the change with the same record. `None` records nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import pydantic

from ctr.clock import iso_now
from ctr.errors import NoModelError
from ctr.registry import names
from ctr.registry.audit import Recorder
from ctr.registry.decision import Decision
from ctr.registry.versions import aliases, get_version

log = logging.getLogger(__name__)


class AliasChange(pydantic.BaseModel):
    """What `promote` or `rollback` did to the aliases."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    status: Literal["promoted", "rolled_back", "unchanged"]
    production: int
    previous: int | None
    rolled_back: int | None = None
    reason: str | None = None


def set_tags(client: Any, model_name: str, version: int | str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)


def _status(client: Any, model_name: str, version: int | str, status: names.Status,
            reason: str | None = None) -> None:
    tags = {names.TAG_STATUS: str(status)}
    if reason is not None:
        tags[names.TAG_STATUS_REASON] = reason
    set_tags(client, model_name, version, tags)


def promote(client: Any, model_name: str, version: int | str,
            reason: str = "manual promotion", *, recorder: Recorder | None = None,
            kind: Literal["promoted", "manual_promote"] = "manual_promote",
            numbers: dict[str, float | str] | None = None) -> AliasChange:
    """Give `version` the alias `production`; the former production becomes
    `previous`; the former previous is archived. Idempotent (an unchanged production
    records nothing). `kind` is `promoted` when the gate decided."""
    number = int(get_version(client, model_name, version).version)
    current_aliases = aliases(client, model_name)
    current, prev = current_aliases.get(names.PRODUCTION), current_aliases.get(names.PREVIOUS)
    if current == number:
        _status(client, model_name, number, names.Status.PRODUCTION)
        return AliasChange(status="unchanged", production=number, previous=prev)
    if recorder is not None:
        recorder.record(kind, model_name=model_name, version=number, reason=reason,
                        production_before=current, production_after=number,
                        previous_before=prev,
                        previous_after=current if current is not None else None,
                        numbers=numbers)
    if prev is not None and prev not in (current, number):
        _status(client, model_name, prev, names.Status.ARCHIVED,
                f"replaced as previous by v{current} at {iso_now()}")
    if current is not None:
        _status(client, model_name, current, names.Status.PREVIOUS,
                f"replaced in production by v{number} at {iso_now()}")
        client.set_registered_model_alias(model_name, names.PREVIOUS, str(current))
    elif prev == number:
        client.delete_registered_model_alias(model_name, names.PREVIOUS)
    _status(client, model_name, number, names.Status.PRODUCTION, reason)
    client.set_registered_model_alias(model_name, names.PRODUCTION, str(number))
    log.info("%s v%s promoted to production (%s)", model_name, number, reason)
    return AliasChange(status="promoted", production=number, previous=current)


def rollback(client: Any, model_name: str, reason: str = "operator rollback", *,
             recorder: Recorder | None = None,
             numbers: dict[str, float | str] | None = None) -> AliasChange:
    """production <- previous. The rolled-back version is archived with the reason and
    `previous` is cleared (there is no older `previous` to fall back to). Repeating it
    is a no-op that says so. The record names the version restored, the one replaced,
    and why, with `numbers` (the evidence of an automatic rollback) added."""
    current_aliases = aliases(client, model_name)
    current, prev = current_aliases.get(names.PRODUCTION), current_aliases.get(names.PREVIOUS)
    if current is None:
        raise NoModelError(f"{model_name} has no production version", model_name=model_name)
    if prev is None:
        return AliasChange(status="unchanged", production=current, previous=None,
                           reason=f"no version holds alias {names.PREVIOUS!r}: "
                                  "nothing to roll back to")
    if prev != current:       # (equal only when an earlier call stopped half-way)
        if recorder is not None:
            recorder.record("rollback", model_name=model_name, version=prev,
                            reason=f"restores v{prev} in place of v{current}: {reason}",
                            production_before=current, production_after=prev,
                            previous_before=prev, previous_after=None,
                            numbers={**(numbers or {}), "restored_version": prev,
                                     "rolled_back_version": current})
        _status(client, model_name, current, names.Status.ARCHIVED,
                f"rolled back to v{prev} at {iso_now()}: {reason}")
        _status(client, model_name, prev, names.Status.PRODUCTION,
                f"restored by rollback from v{current} at {iso_now()}: {reason}")
        client.set_registered_model_alias(model_name, names.PRODUCTION, str(prev))
    client.delete_registered_model_alias(model_name, names.PREVIOUS)
    log.info("%s rolled back: production v%s -> v%s", model_name, current, prev)
    return AliasChange(status="rolled_back", production=prev, rolled_back=current,
                       previous=None)


def apply_decision(client: Any, model_name: str, version: int, decision: Decision, *,
                   recorder: Recorder | None = None) -> None:
    """Record the comparison on the version, then promote it or tag it rejected.
    Production is untouched on rejection. The audit record carries the comparison's
    numbers (`Decision.numbers`)."""
    tags = decision.numbers()
    set_tags(client, model_name, version, tags)
    numbers = {key: _number(value) for key, value in tags.items()}
    if decision.promoted:
        promote(client, model_name, version, reason=decision.reason, recorder=recorder,
                kind="promoted", numbers=numbers)
    else:
        if recorder is not None:
            current_aliases = aliases(client, model_name)
            production = current_aliases.get(names.PRODUCTION)
            prev = current_aliases.get(names.PREVIOUS)
            recorder.record("rejected", model_name=model_name, version=version,
                            reason=decision.reason, production_before=production,
                            production_after=production, previous_before=prev,
                            previous_after=prev, numbers=numbers)
        _status(client, model_name, version, names.Status.REJECTED, decision.reason)


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value
