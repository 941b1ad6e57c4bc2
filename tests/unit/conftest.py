"""Unit tests run with sockets disabled: anything that tries the network fails loudly."""

import pytest
from pytest_socket import disable_socket, enable_socket


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/unit" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _no_network():
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
