"""Overlapping runs of one step, as two executions or retries would make them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run_until_done_in_threads(step: Callable[[], Any], done: Callable[[Any], bool], *,
                              threads: int, attempts: int, join_timeout: float | None = None
                              ) -> tuple[list[Any], list[BaseException]]:
    """`threads` threads each call `step` up to `attempts` times, stopping after a result
    `done` accepts. Returns every result (in completion order) and every exception."""
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(attempts):
                result = step()
                results.append(result)
                if done(result):
                    return
        except BaseException as err:  # returned to the test
            errors.append(err)

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=join_timeout)
    return results, errors
