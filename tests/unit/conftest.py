"""Unit tests run with sockets disabled: anything that tries the network fails loudly.

Handler tests share two helpers: `load_handler` imports `functions/<name>/app.py` as a
fresh module (its settings read the environment at import, so every load sees the
environment its test set), and `lambda_context` is the context Lambda would pass.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pytest_socket import disable_socket, enable_socket

ROOT = Path(__file__).resolve().parents[2]

# What every handler needs to import without AWS: tracing off, a region for boto3.
HANDLER_ENV = {"BUCKET_NAME": "bucket", "POWERTOOLS_TRACE_DISABLED": "1",
               "AWS_DEFAULT_REGION": "us-east-1"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/unit" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _no_network():
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()


@dataclass
class FakeLambdaContext:
    """The attributes of a Lambda context that Powertools and the handlers read."""

    function_name: str = "test-fn"
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:test-fn"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def _load_handler(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """`functions/<name>/app.py` imported as a new module (never cached in sys.modules,
    so no test sees another's), with `HANDLER_ENV` and `env` set through `monkeypatch`
    (a test's fixture, or `pytest.MonkeyPatch.context()` for a module-scoped load)."""
    for key, value in {**HANDLER_ENV, **env}.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(f"{name}_app",
                                                  ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Powertools' Tracer imports the X-Ray SDK, which creates (and never uses, with
    # tracing disabled) a UDP socket at import time.
    enable_socket()
    try:
        spec.loader.exec_module(module)
    finally:
        disable_socket(allow_unix_socket=True)
    return module


@pytest.fixture(scope="session")
def load_handler() -> Callable[..., ModuleType]:
    """`load_handler(name, monkeypatch, **env)`: see `_load_handler`."""
    return _load_handler


@pytest.fixture(scope="module")
def sqlite_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An MlflowClient on a SQLite store of its own (one per test module, no server, no
    sockets). The fluent API points at it too while the module runs: anything that falls
    back to MLflow's default store must not write into the repository."""
    import mlflow  # heavy; only the modules that use this fixture pay for it

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield mlflow.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(before)
