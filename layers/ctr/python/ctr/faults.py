"""Test-only fault injection. Inert unless the CTR_FAULTS environment variable is set
(the template never sets it; tests set it on a deployed function's configuration).

    CTR_FAULTS="chunk.after_write=crash*1,train.start=TransientError*2"

Each entry names an injection point (`point`), what happens there (`crash` exits the
process as a killed Lambda would; any other word raises the ctr.errors class of that
name, or a plain RuntimeError), and optionally how many times (`*N`, default every
time). Counts are kept as files in CTR_FAULTS_DIR (default: <tmp>/ctr-faults), so they
hold across the processes of one function.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ctr import errors


def _spec() -> dict[str, tuple[str, int | None]]:
    raw = os.environ.get("CTR_FAULTS", "").strip()
    out: dict[str, tuple[str, int | None]] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        point, _, action = item.partition("=")
        action, _, times = action.partition("*")
        out[point.strip()] = (action.strip() or "crash", int(times) if times else None)
    return out


def _take(point: str, times: int | None) -> bool:
    """True if this hit should fire (atomically counts hits across processes)."""
    if times is None:
        return True
    d = Path(os.environ.get("CTR_FAULTS_DIR", Path(tempfile.gettempdir()) / "ctr-faults"))
    d.mkdir(parents=True, exist_ok=True)
    for i in range(times):
        try:
            fd = os.open(d / f"{point}.{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return True
    return False


def inject(point: str) -> None:
    """Fire the fault configured for `point`, if any."""
    if "CTR_FAULTS" not in os.environ:
        return
    entry = _spec().get(point)
    if entry is None or not _take(point, entry[1]):
        return
    action = entry[0]
    if action == "crash":
        os._exit(137)  # as if the sandbox was killed mid-flight
    cls = getattr(errors, action, None)
    if isinstance(cls, type) and issubclass(cls, errors.DomainError):
        raise cls(f"injected fault at {point}")
    raise RuntimeError(f"injected fault at {point}: {action}")
