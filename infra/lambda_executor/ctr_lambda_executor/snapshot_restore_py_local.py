"""Lambda SnapStart runtime hooks for the local process executor.

The same API as AWS's `snapshot_restore_py` module, which Lambda's Python 3.12+ managed
runtimes provide: register a callable (with its arguments) to run before the snapshot
is taken or after each restore; also usable as a decorator. The executor's bootstrap
loads this file as `snapshot_restore_py` in a snapshot template only (and its restored
copies), when no such module is installed; functions without SnapStart see no such
module, as before. Standard library only. Before-snapshot hooks run in the reverse order
of their registration, after-restore hooks in their order, as AWS's runtime does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_before_snapshot: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
_after_restore: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []


def register_before_snapshot(func: Callable[..., Any], *args: Any,
                             **kwargs: Any) -> Callable[..., Any]:
    _before_snapshot.append((func, args, kwargs))
    return func


def register_after_restore(func: Callable[..., Any], *args: Any,
                           **kwargs: Any) -> Callable[..., Any]:
    _after_restore.append((func, args, kwargs))
    return func


def get_before_snapshot() -> list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    return _before_snapshot


def get_after_restore() -> list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    return _after_restore
