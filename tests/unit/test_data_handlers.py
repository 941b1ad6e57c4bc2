"""The chunk and aggregate Lambda handlers: event parsing, overrides, metrics, faults."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pytest_socket import disable_socket, enable_socket

from ctr import chunking, layout
from ctr.errors import DataError
from ctr.storage import Store
from tests.fakes import FakeS3

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Context:
    function_name: str = "test-fn"
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:test-fn"
    aws_request_id: str = "req-1"


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Store]:
    monkeypatch.setenv("BUCKET_NAME", "bucket")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"{name}_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Powertools' Tracer imports the X-Ray SDK, which creates (and never uses, with
    # tracing disabled) a UDP socket at import time.
    enable_socket()
    try:
        spec.loader.exec_module(module)
    finally:
        disable_socket(allow_unix_socket=True)
    store = Store(FakeS3(), "bucket")
    monkeypatch.setattr(module, "store", store)
    return module, store


def _metrics(output: str) -> dict[str, float]:
    """Metric values from the EMF lines Powertools printed."""
    values: dict[str, float] = {}
    for line in output.splitlines():
        if '"_aws"' in line:
            doc = json.loads(line)
            for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = doc[metric["Name"]]
                values[metric["Name"]] = sum(value) if isinstance(value, list) else value
    return values


def test_chunk_handler_uses_the_event_override_and_reports_metrics(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    app, store = _load("chunk", monkeypatch)
    store.put("raw/s/a.txt", b"".join(f"{i}\n".encode() for i in range(25)))
    result = app.lambda_handler({"chunk_lines": 10, "detail-type": "Scheduled Event"}, Context())
    assert result["status"] == "chunked" and result["lines"] == 10
    metrics = _metrics(capsys.readouterr().out)
    assert metrics["LinesChunked"] == 10 and metrics["BytesChunked"] == result["bytes"]
    assert app.settings.chunk_lines == chunking.DEFAULT_CHUNK_LINES
    results = [app.lambda_handler({"chunk_lines": 10}, Context()) for _ in range(3)]
    assert [r["status"] for r in results] == ["chunked", "chunked", "exhausted"]


@pytest.mark.filterwarnings("ignore:No application metrics")   # the faulted run adds none
def test_chunk_fault_point_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    app, store = _load("chunk", monkeypatch)
    store.put("raw/s/a.txt", b"a\nb\nc\n")
    monkeypatch.delenv("CTR_FAULTS", raising=False)
    assert app.lambda_handler({"chunk_lines": 1}, Context())["status"] == "chunked"
    monkeypatch.setenv("CTR_FAULTS", "chunk.after_write=Killed*1")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"injected fault at chunk\.after_write"):
        app.lambda_handler({"chunk_lines": 1}, Context())
    retry = app.lambda_handler({"chunk_lines": 1}, Context())
    assert retry["reused_existing_chunk"] is True and retry["chunk_index"] == 1


def test_aggregate_handler_plan_convert_and_failure(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    app, store = _load("aggregate", monkeypatch)
    good = b"0" + b"\t" * 39 + b"\n"
    store.put(layout.chunk_key(0), good * 10)
    store.put(layout.chunk_key(1), good * 5 + b"junk\n" * 5)
    assert app.lambda_handler({"action": "plan"}, Context()) == {"pending": [0, 1],
                                                                 "pending_count": 2}
    result = app.lambda_handler({"action": "aggregate", "key": layout.chunk_key(0)}, Context())
    assert result["converted"] == [0] and result["rows_out"] == 10
    capsys.readouterr()
    with pytest.raises(DataError):
        app.lambda_handler({"action": "aggregate"}, Context())
    metrics = _metrics(capsys.readouterr().out)
    assert metrics["RowsRejected"] == 0                     # failed chunks are not counted
    ok = app.lambda_handler({"max_reject_share": 0.6}, Context())
    assert ok["converted"] == [1] and ok["rows_rejected"] == 5
    assert _metrics(capsys.readouterr().out)["RowsRejected"] == 5
