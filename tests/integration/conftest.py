"""Integration tests run against the session's local cloud (`cloud`, tests/cloud.py)."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
