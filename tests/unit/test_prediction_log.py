"""The prediction log (`ctr.serving.prediction_log`) and X-Request-Id: sampling, records
that match the request, packing into Firehose batches, failures that are retried,
dropped and counted but never fail a prediction, and the request id's sources."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ctr import bundle
from ctr.predlog import PredictionRecord
from ctr.schema import FEATURE_COLUMNS
from ctr.serving.app import ServingSettings, create_app
from ctr.serving.prediction_log import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    PredictionLog,
    batches,
    pack,
)
from ctr.serving.request_id import choose
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import (
    MODEL_NAME,
    FakeMlflowClient,
    copy_downloader,
    sample_table,
    tiny_predictor,
)

TABLE = sample_table().slice(0, 12)


class FakeFirehose:
    """PutRecordBatch into a list; `fail_next` calls raise, `reject` entries fail."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_next = 0
        self.reject_first_entry = 0
        self.lock = threading.Lock()

    def put_record_batch(self, DeliveryStreamName: str,
                         Records: list[dict[str, bytes]]) -> dict[str, Any]:
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("firehose unreachable")
            responses: list[dict[str, Any]] = [{"RecordId": str(i)} for i in range(len(Records))]
            delivered = Records
            if self.reject_first_entry:
                self.reject_first_entry -= 1
                responses[0] = {"ErrorCode": "ServiceUnavailableException",
                                "ErrorMessage": "slow down"}
                delivered = Records[1:]
            self.calls.append({"stream": DeliveryStreamName, "records": delivered})
            return {"FailedPutCount": len(Records) - len(delivered),
                    "RequestResponses": responses}

    def lines(self) -> list[dict[str, Any]]:
        data = b"".join(r["Data"] for call in self.calls for r in call["records"])
        assert data == b"" or data.endswith(b"\n")
        return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(MemoryS3(), "bucket")
    registry = FakeMlflowClient(tmp_path / "mlflow")
    registry.set_alias("production", registry.add_version(tiny_predictor(0)))
    bundle.publish_production(registry, s, MODEL_NAME, downloader=copy_downloader)
    return s


def app_with(store: Store, plog: PredictionLog | None) -> TestClient:
    settings = ServingSettings(bucket_name="bucket", web_dir=None)
    return TestClient(create_app(settings, store_factory=lambda: store, prediction_log=plog))


def rows(table: Any) -> list[dict[str, Any]]:
    return table.select(list(FEATURE_COLUMNS)).to_pylist()


def test_every_row_of_a_sampled_request_is_logged_as_served(store):
    firehose = FakeFirehose()
    plog = PredictionLog(lambda: firehose, "s-predictions", 1.0, flush_interval_s=60)
    api = app_with(store, plog)

    answer = api.post("/predict", json={"rows": rows(TABLE)},
                      headers={"x-request-id": "caller-42"})
    plog.flush()

    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "caller-42"
    body = answer.json()
    logged = [PredictionRecord.model_validate(line) for line in firehose.lines()]
    assert {c["stream"] for c in firehose.calls} == {"s-predictions"}
    assert [r.row for r in logged] == list(range(TABLE.num_rows))
    assert {r.request_id for r in logged} == {"caller-42"}
    assert {(r.model_version, r.run_id) for r in logged} == {
        (body["model"]["version"], body["model"]["run_id"])}
    assert [r.probability for r in logged] == pytest.approx(body["predictions"])
    for record, row in zip(logged, rows(TABLE), strict=True):
        assert len(record.fields) == 39
        assert record.fields == ["" if row[c] is None else str(row[c]) for c in FEATURE_COLUMNS]
    assert plog.counters.sent_rows == TABLE.num_rows and plog.counters.dropped_rows == 0


def test_sampling_draws_once_per_request():
    draws = iter([0.05, 0.5, 0.09, 0.99])
    plog = PredictionLog(lambda: FakeFirehose(), "s", 0.1, rng=lambda: next(draws))
    assert [plog.sampled() for _ in range(4)] == [True, False, True, False]
    assert PredictionLog(lambda: None, "s", 0.0).sampled() is False
    with pytest.raises(ValueError):
        PredictionLog(lambda: None, "s", 1.5)


def test_the_sample_rate_holds_over_many_requests():
    """10,000 requests at rate 0.1: the logged share is within 4 standard deviations
    (sd = sqrt(0.1 * 0.9 / 10,000) = 0.003) of 0.1."""
    plog = PredictionLog(lambda: FakeFirehose(), "s", 0.1)
    share = sum(plog.sampled() for _ in range(10_000)) / 10_000
    assert abs(share - 0.1) < 4 * 0.003


def test_the_background_thread_delivers_without_an_explicit_flush(store):
    firehose = FakeFirehose()
    plog = PredictionLog(lambda: firehose, "s", 1.0, flush_interval_s=0.05)
    api = app_with(store, plog)
    for i in range(5):
        assert api.post("/predict", json={"rows": rows(TABLE.slice(i, 1))}).status_code == 200
    deadline = time.monotonic() + 5
    while plog.counters.sent_rows < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(firehose.lines()) == 5
    plog.close()


def test_a_failing_stream_never_fails_a_prediction_and_drops_are_counted(store):
    firehose = FakeFirehose()
    firehose.fail_next = 100
    plog = PredictionLog(lambda: firehose, "s", 1.0, flush_interval_s=60, retries=1)
    api = app_with(store, plog)

    assert api.post("/predict", json={"rows": rows(TABLE.slice(0, 3))}).status_code == 200
    plog.flush()

    assert plog.counters.dropped_rows == 3 and plog.counters.sent_rows == 0
    assert plog.take_new_drops() == 3 and plog.take_new_drops() == 0


def test_failed_entries_are_retried_alone():
    firehose = FakeFirehose()
    firehose.reject_first_entry = 1
    plog = PredictionLog(lambda: firehose, "s", 1.0, retries=2)
    for i in range(3):
        plog.record(f"r{i}", {"version": 1, "run_id": "x"}, TABLE.slice(i, 1),
                    np.array([0.5]))
    plog.flush()
    assert sorted(line["request_id"] for line in firehose.lines()) == ["r0", "r1", "r2"]
    assert plog.counters.sent_rows == 3 and plog.counters.dropped_rows == 0


def test_a_full_buffer_drops_new_rows_instead_of_growing():
    plog = PredictionLog(lambda: FakeFirehose(), "s", 1.0, flush_interval_s=60,
                         max_buffered_rows=5)
    plog._thread = threading.current_thread()   # no background thread: nothing drains
    for i in range(4):
        plog.record(f"r{i}", {"version": 1, "run_id": "x"}, TABLE.slice(0, 2),
                    np.array([0.1, 0.2]))
    assert plog.counters.sampled_rows == 8 and plog.counters.dropped_rows == 4


def test_records_are_packed_into_firehose_sized_batches():
    lines = [b"x" * 999 + b"\n"] * 3000                  # 3 MB
    records = pack(lines, record_bytes=10_000)
    assert all(len(r) <= 10_000 for r in records) and b"".join(records) == b"".join(lines)
    groups = list(batches(records))
    assert all(len(g) <= MAX_BATCH_RECORDS and sum(map(len, g)) <= MAX_BATCH_BYTES
               for g in groups)
    assert [r for g in groups for r in g] == records
    assert pack([b"y" * 50 + b"\n"], record_bytes=10) == [b"y" * 50 + b"\n"]


def test_logging_off_costs_nothing_and_the_id_is_still_returned(store):
    api = app_with(store, None)
    answer = api.post("/predict", json={"rows": rows(TABLE.slice(0, 1))})
    assert answer.status_code == 200 and len(answer.headers["x-request-id"]) == 36
    bad = api.post("/predict", json={"rows": []})
    assert bad.status_code == 422 and bad.headers["x-request-id"]


def test_the_request_id_comes_from_the_caller_api_gateway_lambda_or_a_uuid():
    class Context:
        aws_request_id = "lambda-7"

    event = {"requestContext": {"requestId": "gw-1"}}
    assert choose({"headers": [(b"x-request-id", b"mine.1")], "aws.event": event}) == "mine.1"
    assert choose({"headers": [(b"x-request-id", b"bad id<script>")],
                   "aws.event": event}) == "gw-1"
    assert choose({"headers": [], "aws.context": Context()}) == "lambda-7"
    assert len(choose({"headers": [(b"x-request-id", b"x" * 200)]})) == 36


def test_through_the_lambda_handler_the_id_is_api_gateways_and_is_logged(store):
    """Mangum puts the API Gateway event in the scope: its requestId is the answer's
    X-Request-Id and the logged records' request_id."""
    from mangum import Mangum

    from ctr_infra.bench.serve import _LambdaContext, api_gateway_event, off_running_loop

    firehose = FakeFirehose()
    plog = PredictionLog(lambda: firehose, "s", 1.0, flush_interval_s=60)
    settings = ServingSettings(bucket_name="bucket", web_dir=None)
    handler = Mangum(create_app(settings, store_factory=lambda: store, prediction_log=plog),
                     lifespan="off")
    event = api_gateway_event("POST", "/predict", {"rows": rows(TABLE.slice(0, 2))})
    event["requestContext"]["requestId"] = "gw-4f2a"

    answer = off_running_loop(lambda: handler(event, _LambdaContext()))
    plog.flush()

    assert answer["statusCode"] == 200
    headers = {k.lower(): v for k, v in answer.get("multiValueHeaders", {}).items()}
    assert headers.get("x-request-id") == ["gw-4f2a"] or answer["headers"].get(
        "x-request-id") == "gw-4f2a"
    assert [line["request_id"] for line in firehose.lines()] == ["gw-4f2a", "gw-4f2a"]


def test_every_documented_answer_names_the_request_id_header(store):
    spec = app_with(store, None).get("/openapi.json").json()
    answers = [answer for operations in spec["paths"].values()
               for operation in operations.values()
               for answer in operation["responses"].values()]
    assert answers and all("X-Request-Id" in a.get("headers", {}) for a in answers)
