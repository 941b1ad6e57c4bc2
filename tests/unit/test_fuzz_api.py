"""API fuzzing (issue #8, part 4): schemathesis generates requests from the predict
API's own OpenAPI schema and sends them in-process (ASGI, no sockets) to the app with a
real model loaded, and to the app before any model exists.

Every operation gets schema-valid ("positive") and schema-violating ("negative")
requests, and every response goes through schemathesis' default checks: no server
error, a documented status code and content type, a body that matches the response
schema, schema-valid requests accepted (2xx; 404 for /samples without data) and
schema-invalid ones rejected (4xx). Without a model, the one 5xx allowed is the
documented 503 NoModelError of POST /predict. Runs are derandomized, so a failure
reproduces; the number of generated cases is printed and asserted.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from ctr import aggregate, layout
from ctr.serving.app import ServingSettings, create_app
from tests.unit.serving_support import sample_table
from tests.unit.test_serving_app import Cloud

PREDICT = "POST /predict"
OPERATIONS = {PREDICT, "GET /health", "POST /health", "GET /model-info", "POST /model_info",
              "GET /samples", "GET /model-history", "GET /monitoring"}
NO_TRACE = ("Traceback", 'File "')


def fuzz(cloud: Cloud, examples: dict[str, int], *, excluded: list[Any] | None = None,
         additional: list[Any] | None = None) -> Counter[tuple[str, str, int]]:
    """Fuzz every operation of the app's schema in both generation modes; returns the
    number of cases per (mode, operation, status). Raises on the first failed check."""
    app = create_app(ServingSettings(bucket_name="bucket", pointer_ttl_seconds=60),
                     store_factory=lambda: cloud.store)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS
    seen: Counter[tuple[str, str, int]] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                continue                  # nothing to make invalid in GET /health
            run = _runner(operation, mode, examples.get(operation.label, examples["*"]),
                          seen, excluded or [], additional or [])
            run()
    return seen


def _has_inputs(operation: Any) -> bool:
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def _runner(operation: Any, mode: GenerationMode, max_examples: int,
            seen: Counter[tuple[str, str, int]], excluded: list[Any],
            additional: list[Any]) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example])
    def run(case: Any) -> None:
        response = case.call()
        seen[(mode.value, operation.label, response.status_code)] += 1
        for marker in NO_TRACE:
            assert marker not in response.text, response.text[:500]
        case.validate_response(response, excluded_checks=excluded,
                               additional_checks=additional)
    return run


def _report(title: str, seen: Counter[tuple[str, str, int]], seconds: float) -> None:
    print(f"\n{title}: {sum(seen.values())} fuzz cases in {seconds:.1f} s")
    for (mode, label, status), n in sorted(seen.items()):
        print(f"  {mode:8s} {label:20s} {status}  x{n}")


def test_fuzz_with_a_model_finds_no_server_error_and_no_schema_mismatch(tmp_path):
    cloud = Cloud(tmp_path)
    cloud.release(0)
    cloud.store.put(layout.parquet_key(0), aggregate.parquet_bytes(sample_table()))

    started = time.perf_counter()
    seen = fuzz(cloud, {PREDICT: 150, "*": 15})
    _report("fuzz, model loaded", seen, time.perf_counter() - started)

    statuses = Counter(status for (_, _, status) in seen.elements())
    assert not any(status >= 500 for status in statuses)
    predict = Counter({(mode, status): n for (mode, label, status), n in seen.items()
                       if label == PREDICT})
    # both modes really ran against /predict: answers with predictions and rejections
    assert predict[("positive", 200)] >= 100, predict
    assert predict[("negative", 422)] >= 100, predict
    assert seen[("positive", "GET /samples", 200)] >= 10
    # /model-history's limit: in range answers (an empty trail), out of range is a 422
    assert seen[("positive", "GET /model-history", 200)] >= 5
    assert seen[("negative", "GET /model-history", 422)] >= 1
    assert sum(seen.values()) >= 300


def only_the_documented_503(ctx: Any, response: Any, case: Any) -> bool | None:
    """Before any model: 5xx only as POST /predict's documented 503 NoModelError."""
    if response.status_code < 500:
        return True
    assert case.operation.label == PREDICT and response.status_code == 503, \
        f"{case.operation.label} answered {response.status_code}: {response.text[:300]}"
    assert response.json()["error"] == "NoModelError", response.text[:300]
    return True


def test_fuzz_without_a_model_only_predict_answers_503(tmp_path):
    cloud = Cloud(tmp_path)                          # no bundle, no pointer, no data

    started = time.perf_counter()
    seen = fuzz(cloud, {PREDICT: 60, "*": 10}, excluded=[not_a_server_error],
                additional=[only_the_documented_503])
    _report("fuzz, no model", seen, time.perf_counter() - started)

    server_errors = {key for key in seen if key[2] >= 500}
    assert server_errors == {("positive", PREDICT, 503)}
    assert seen[("negative", PREDICT, 422)] >= 40
    assert seen[("positive", "GET /samples", 404)] >= 1       # no Parquet data yet


@pytest.mark.parametrize("status", [500, 502])
def test_the_no_model_check_can_fail(status):
    """The custom check rejects any other server error (it is not assertion-free)."""
    class Op:
        label = PREDICT

    class Case:
        operation = Op()

    class Response:
        status_code = status
        text = '{"error": "InternalError"}'

        def json(self) -> dict[str, str]:
            return {"error": "InternalError"}

    with pytest.raises(AssertionError):
        only_the_documented_503(None, Response(), Case())
