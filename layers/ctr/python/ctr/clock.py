"""Timestamps as the pipeline writes them: ISO 8601, UTC, whole seconds.

One place for the format, so cursors, leases, registry tags, bundles and API answers
all read alike (`2026-12-02T04:17:15+00:00`).
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_now() -> str:
    """Now, e.g. `2026-12-02T04:17:15+00:00`."""
    return datetime.now(tz=UTC).isoformat(timespec="seconds")


def iso_from_epoch(seconds: float) -> str:
    """A Unix time in seconds (time.time()) in the same format."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")


def iso_from_ms(ms: int | None) -> str | None:
    """A Unix time in milliseconds (MLflow's timestamps); None stays None."""
    return None if ms is None else iso_from_epoch(ms / 1000)
