"""Integration tests run against the session's local cloud (`cloud`, tests/cloud.py).

The short soak (test_soak.py) is the exception: it needs its own private cloud with the
schedule on, and spends most of its minutes waiting for the schedule, so it is started
in a child process as soon as the session knows it will run and checked at the end
(`background_soak`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SOAK_ARGS = ("--minutes", "3", "--seed", "11", "--faults", "refuse,train_crash",
             "--max-lines", "20000", "--feed-every", "25,45")
_SOAK = pytest.StashKey["BackgroundSoak"]()


@dataclass
class BackgroundSoak:
    """`ctr soak` in a child process: its log file and report directory."""

    proc: subprocess.Popen[bytes]
    out_dir: Path
    log_path: Path

    def wait(self, timeout_s: float) -> tuple[int | None, str]:
        try:
            code: int | None = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        return code, self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGINT, so the harness stops its private cloud by PID; then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start_soak() -> BackgroundSoak:
    out_dir = Path(tempfile.mkdtemp(prefix="ctr-test-soak-"))
    log_path = out_dir / "soak.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ctr_infra.cli", "soak", *SOAK_ARGS,
                                 "--out", str(out_dir)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=os.environ.copy())
    return BackgroundSoak(proc=proc, out_dir=out_dir, log_path=log_path)


def background_soak(config: pytest.Config) -> BackgroundSoak:
    """The session's soak (started at collection; started now if it was not)."""
    if _SOAK not in config.stash:
        config.stash[_SOAK] = _start_soak()
    return config.stash[_SOAK]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(
            Path(str(item.fspath)).name == "test_soak.py" for item in session.items):
        background_soak(session.config)      # the session goes on with the other modules


def pytest_sessionfinish(session: pytest.Session) -> None:
    soak = session.config.stash.get(_SOAK, None)
    if soak is not None:
        soak.stop()
