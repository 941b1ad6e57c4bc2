"""The pipeline's overlap guard: a lease in S3, taken and released with conditional writes.

The schedule fires every 10 minutes whether or not the previous execution finished.
An execution first acquires the lease; if another live execution holds it, this one ends
at once as a clean no-op with the reason (it does not wait: the next tick comes soon and
waiting executions would pile up). Every failure path of the state machine releases the
lease; if the holder died without releasing (stopped execution, crashed service) the
lease expires after `ttl_seconds` and the next execution takes it over.

Re-acquiring with the same holder (a retried guard task) succeeds and extends the lease,
so retries are safe.
"""

from __future__ import annotations

import time

from ctr import layout
from ctr.clock import iso_from_epoch
from ctr.errors import ConflictError
from ctr.steps import AcquireResult, LeaseAcquired, LeaseBusy, LeaseReleased
from ctr.storage import Store

LEASE_KEY = layout.state_key("pipeline-lease.json")
MAX_RACE_RETRIES = 5


def acquire(store: Store, holder: str, ttl_seconds: float,
            now: float | None = None) -> AcquireResult:
    """Try to take the lease for `holder`: `LeaseAcquired`, or `LeaseBusy` when another
    live execution holds it."""
    for _ in range(MAX_RACE_RETRIES):
        t = time.time() if now is None else now
        current = store.get_json(LEASE_KEY)
        doc, etag = current if current else ({}, None)
        other = doc.get("holder")
        expired = float(doc.get("expires_at", 0)) <= t
        if other and other != holder and not expired:
            until = iso_from_epoch(float(doc["expires_at"]))
            return LeaseBusy(holder=other, expires_at=until,
                             reason=f"execution {other} holds the pipeline lease until "
                                    f"{until}; this run is a no-op")
        if other == holder:
            reason = "lease re-acquired by its holder (retry)"
        elif other:
            reason = f"took over the expired lease of {other}"
        else:
            reason = "lease was free"
        expires_at = t + ttl_seconds
        generation = int(doc.get("generation", 0)) + 1
        new = {"holder": holder, "acquired_at": t, "expires_at": expires_at,
               "generation": generation}
        try:
            store.put_json_if_match(LEASE_KEY, new, etag)
        except ConflictError:
            continue  # someone else wrote in between: look again
        return LeaseAcquired(holder=holder, expires_at=iso_from_epoch(expires_at),
                             reason=reason, generation=generation)
    raise ConflictError("the pipeline lease kept changing while acquiring it")


def release(store: Store, holder: str, now: float | None = None) -> LeaseReleased:
    """Give the lease back if `holder` still has it; otherwise change nothing."""
    for _ in range(MAX_RACE_RETRIES):
        current = store.get_json(LEASE_KEY)
        if not current or current[0].get("holder") != holder:
            owner = current[0].get("holder") if current else None
            return LeaseReleased(released=False,
                                 reason=f"lease not held by {holder} (holder: {owner})")
        doc, etag = current
        t = time.time() if now is None else now
        freed = {"holder": None, "released_by": holder, "released_at": t,
                 "expires_at": 0, "generation": int(doc.get("generation", 0)) + 1}
        try:
            store.put_json_if_match(LEASE_KEY, freed, etag)
        except ConflictError:
            continue
        return LeaseReleased(released=True, reason="released")
    raise ConflictError("the pipeline lease kept changing while releasing it")
