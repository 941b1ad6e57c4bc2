"""Loopback ports and HTTP readiness, for everything this project starts locally (the
local cloud, the bench's servers, the tests' servers). Nothing listens on anything but
127.0.0.1."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

LOCALHOST = "127.0.0.1"


class NotReady(RuntimeError):
    """A server did not answer 200 in time, or its process ended first (`exited`)."""

    def __init__(self, message: str, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOCALHOST, port)) == 0


def wait_http(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True,
              what: str = "the server") -> None:
    """Poll `url` until it answers 200. Raises NotReady after `timeout_s`, or as soon as
    `alive()` says the process that should answer has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            # Only loopback URLs of servers this project started.
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310  # nosec B310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if not alive():
            raise NotReady(f"{what} exited before it answered", exited=True)
        time.sleep(0.3)
    raise NotReady(f"{what} did not answer {url} within {timeout_s:.0f}s", exited=False)
