"""The guard, chunk and aggregate Lambda handlers: event parsing, overrides, metrics,
faults, and a clear ValidationError for a malformed event."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from ctr import chunking, layout
from ctr.errors import ValidationError
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.conftest import FakeLambdaContext

Loaded = tuple[ModuleType, Store]


@pytest.fixture
def handler(load_handler: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch
            ) -> Callable[..., Loaded]:
    """handler(name, **env): the function's module, its bucket an empty in-memory S3."""
    def load(name: str, **env: str) -> Loaded:
        module = load_handler(name, monkeypatch, **env)
        store = Store(MemoryS3(), "bucket")
        monkeypatch.setattr(module, "store", store)
        return module, store
    return load


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
        handler: Callable[..., Loaded], lambda_context: FakeLambdaContext,
        capsys: pytest.CaptureFixture[str]) -> None:
    app, store = handler("chunk")
    store.put("raw/s/a.txt", b"".join(f"{i}\n".encode() for i in range(25)))
    result = app.lambda_handler({"chunk_lines": 10, "detail-type": "Scheduled Event"},
                                lambda_context)
    assert result["status"] == "chunked" and result["lines"] == 10
    metrics = _metrics(capsys.readouterr().out)
    assert metrics["LinesChunked"] == 10 and metrics["BytesChunked"] == result["bytes"]
    assert app.settings.chunk_lines == chunking.DEFAULT_CHUNK_LINES
    results = [app.lambda_handler({"chunk_lines": 10}, lambda_context) for _ in range(3)]
    assert [r["status"] for r in results] == ["chunked", "chunked", "exhausted"]


@pytest.mark.filterwarnings("ignore:No application metrics")   # plan and finish add none
def test_chunk_handler_backfill_actions_as_the_state_machine_calls_them(
        handler: Callable[..., Loaded], lambda_context: FakeLambdaContext) -> None:
    """plan_backfill -> one cut_range per item of the plan's JSON array (what the S3
    ItemReader hands each Map child) -> finish_backfill with the plan -> the cut step
    finds the source consumed."""
    app, store = handler("chunk", BACKFILL_CONCURRENCY="3")
    data = b"".join(f"{i}\n".encode() for i in range(95))
    store.put("raw/s/a.txt", data)
    planned = app.lambda_handler({"action": "plan_backfill", "chunk_lines": 10,
                                  "execution": "x"}, lambda_context)
    assert (planned["status"], planned["chunks"], planned["max_concurrency"]) == (
        "planned", 10, 3)
    items = json.loads(store.get(planned["plan_key"]).body)
    cuts = [app.lambda_handler({"action": "cut_range", "item": item}, lambda_context)
            for item in items]
    assert [c["lines"] for c in cuts] == [10] * 9 + [5]
    finished = app.lambda_handler({"action": "finish_backfill", "plan": planned},
                                  lambda_context)
    assert (finished["status"], finished["next_chunk"]) == ("finished", 10)
    assert app.lambda_handler({"chunk_lines": 10}, lambda_context)["status"] == "exhausted"
    assert b"".join(store.get(layout.chunk_key(i)).body for i in range(10)) == data
    off = app.lambda_handler({"action": "plan_backfill", "backfill_concurrency": 0},
                             lambda_context)
    assert off["status"] == "none"
    for action in ("cut_range", "finish_backfill"):
        with pytest.raises(ValidationError, match="missing"):
            app.lambda_handler({"action": action}, lambda_context)


@pytest.mark.filterwarnings("ignore:No application metrics")   # the faulted run adds none
def test_chunk_fault_point_is_off_unless_configured(
        handler: Callable[..., Loaded], lambda_context: FakeLambdaContext,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    app, store = handler("chunk")
    store.put("raw/s/a.txt", b"a\nb\nc\n")
    monkeypatch.delenv("CTR_FAULTS", raising=False)
    assert app.lambda_handler({"chunk_lines": 1}, lambda_context)["status"] == "chunked"
    monkeypatch.setenv("CTR_FAULTS", "chunk.after_write=Killed*1")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"injected fault at chunk\.after_write"):
        app.lambda_handler({"chunk_lines": 1}, lambda_context)
    retry = app.lambda_handler({"chunk_lines": 1}, lambda_context)
    assert retry["reused_existing_chunk"] is True and retry["chunk_index"] == 1


def test_aggregate_handler_plan_convert_and_failure(
        handler: Callable[..., Loaded], lambda_context: FakeLambdaContext,
        capsys: pytest.CaptureFixture[str]) -> None:
    app, store = handler("aggregate")
    good = b"0" + b"\t" * 39 + b"\n"
    store.put(layout.chunk_key(0), good * 10)
    store.put(layout.chunk_key(1), good * 5 + b"junk\n" * 5)
    assert app.lambda_handler({"action": "plan"}, lambda_context) == {"pending": [0, 1],
                                                                 "pending_count": 2}
    result = app.lambda_handler({"action": "aggregate", "key": layout.chunk_key(0)}, lambda_context)
    assert result["converted"] == [0] and result["rows_out"] == 10
    capsys.readouterr()
    held = app.lambda_handler({"action": "aggregate"}, lambda_context)
    assert held["quarantined"] == [1] and held["converted"] == []
    out = capsys.readouterr().out
    metrics = _metrics(out)
    assert metrics["RowsRejected"] == 0                     # quarantined chunks are not counted
    assert metrics["ChunksQuarantined"] == 1
    assert app.lambda_handler({"action": "plan"}, lambda_context)["pending_count"] == 0
    ok = app.lambda_handler({"max_reject_share": 0.6, "indices": [1],
                             "include_quarantined": True}, lambda_context)
    assert ok["converted"] == [1] and ok["rows_rejected"] == 5
    assert _metrics(capsys.readouterr().out)["RowsRejected"] == 5


def test_guard_handler_acquires_reports_busy_and_releases(
        handler: Callable[..., Loaded], lambda_context: FakeLambdaContext,
        capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = handler("guard", LEASE_SECONDS="120")
    taken = app.lambda_handler({"action": "acquire", "holder": "exec-a"}, lambda_context)
    assert (taken["acquired"], taken["holder"], taken["generation"]) == (True, "exec-a", 1)
    assert _metrics(capsys.readouterr().out) == {"LeaseAcquired": 1}
    busy = app.lambda_handler({"action": "acquire", "holder": "exec-b",
                               "ttl_seconds": 5}, lambda_context)
    assert set(busy) == {"acquired", "holder", "expires_at", "reason"}
    assert (busy["acquired"], busy["holder"]) == (False, "exec-a")
    assert _metrics(capsys.readouterr().out) == {"LeaseBusy": 1}
    with pytest.warns(UserWarning, match="No application metrics"):   # release adds none
        released = app.lambda_handler({"action": "release", "holder": "exec-a"},
                                      lambda_context)
    assert released == {"released": True, "reason": "released"}


@pytest.mark.parametrize(("name", "event", "field"), [
    ("guard", {"holder": "exec-a"}, "action"),
    ("guard", {"action": "acquire"}, "holder"),
    ("guard", {"action": "acquire", "holder": ""}, "holder"),
    ("guard", {"action": "steal", "holder": "exec-a"}, "action"),
    ("guard", {"action": "acquire", "holder": "exec-a", "ttl_seconds": "soon"}, "ttl_seconds"),
    ("chunk", {"chunk_lines": "many"}, "chunk_lines"),
    ("chunk", ["not", "an", "object"], None),
    ("aggregate", {"action": "convert"}, "action"),
    ("aggregate", {"indices": ["x"]}, "indices"),
    ("aggregate", {"max_reject_share": "high"}, "max_reject_share"),
    ("aggregate", {"Items": [{"Size": 3}]}, None),
])
@pytest.mark.filterwarnings("ignore:No application metrics")   # the failed run adds none
def test_a_malformed_event_is_a_validation_error_naming_the_field(
        handler: Callable[..., Loaded], lambda_context: FakeLambdaContext,
        name: str, event: Any, field: str | None) -> None:
    app, store = handler(name)
    with pytest.raises(ValidationError) as caught:
        app.lambda_handler(event, lambda_context)
    errors = caught.value.details["errors"]
    assert errors and all(e["msg"] for e in errors)
    if field is not None:
        assert field in [e["loc"][0] for e in errors if e["loc"]]
    assert store.s3.calls == []                         # rejected before touching S3
