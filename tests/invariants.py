"""Test helpers around the data plane's invariant (`ctr_infra.invariants`, also used by
the soak harness): a failing assertion, and test data with something to quarantine."""

from __future__ import annotations

from ctr.storage import Store
from ctr_infra.invariants import (
    MALFORMED,
    LineAccount,
    account,
    account_streamed,
    lines_of,
    source_with_rejects,
)

__all__ = ["MALFORMED", "LineAccount", "account", "account_streamed", "assert_lines_intact",
           "lines_of", "source_with_rejects"]


def assert_lines_intact(store: Store, *, complete: bool = False,
                        allow_pending: bool = False) -> LineAccount:
    """`account` that fails the test with every problem found."""
    result = account(store, complete=complete, allow_pending=allow_pending)
    assert result.ok, f"{result.summary()}\n" + "\n".join(result.problems)
    return result
