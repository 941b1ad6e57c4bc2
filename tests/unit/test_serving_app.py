"""The predict API in-process (FastAPI TestClient) over a fake S3 holding bundles that
went through the real reload export (`ctr.bundle.publish_production`)."""

from __future__ import annotations

import importlib
import io
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from ctr import bundle, criteo, layout
from ctr.schema import FEATURE_COLUMNS
from ctr.serving import dependencies, schemas
from ctr.serving.app import ServingSettings, create_app
from ctr.storage import Store
from ctr_infra.bench.serve import off_running_loop
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import (
    MODEL_NAME,
    FakeMlflowClient,
    copy_downloader,
    features_of,
    sample_table,
    tiny_predictor,
)

TABLE = sample_table().slice(0, 40)


class Cloud:
    """A fake bucket plus a fake registry, and a way to promote + reload."""

    def __init__(self, root: Path) -> None:
        self.s3 = MemoryS3()
        self.store = Store(self.s3, "bucket")
        self.registry = FakeMlflowClient(root)

    def release(self, variant: int) -> int:
        version = self.registry.add_version(tiny_predictor(variant))
        self.registry.set_alias("production", version)
        bundle.publish_production(self.registry, self.store, MODEL_NAME,
                                  downloader=copy_downloader)
        return version

    def point_at(self, version: int) -> None:
        """Move the production pointer to `serving/v{version}/`, whatever is there."""
        pointer = bundle.load_pointer(self.store)
        self.store.put_json_if_match(
            layout.PRODUCTION_POINTER_KEY,
            {"version": version, "prefix": f"serving/v{version}/", "published_at": "x"},
            None if pointer is None else pointer.etag)


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    return Cloud(tmp_path / "mlflow")


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>ctr</title>")
    (web / "app.js").write_text("console.log('ctr');")
    (web / "js").mkdir()
    (web / "js" / "format.js").write_text("export const x = 1;")
    return web


def make_client(cloud: Cloud, web_dir: Path | None = None, **settings: Any) -> TestClient:
    config = ServingSettings(bucket_name="bucket", web_dir=web_dir,
                             **{"pointer_ttl_seconds": 0.2, **settings})
    return TestClient(create_app(config, store_factory=lambda: cloud.store))


def rows_of(table) -> list[dict[str, Any]]:
    return table.select(list(FEATURE_COLUMNS)).to_pylist()


def post_rows(api: TestClient, table) -> Any:
    return api.post("/predict", json={"rows": rows_of(table)})


# --------------------------------------------------------------------------- no model

def test_before_any_model_predict_is_503_and_health_says_no_model(cloud):
    api = make_client(cloud)

    response = post_rows(api, TABLE.slice(0, 1))

    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "NoModelError" and "no model" in body["message"]
    assert body["errors"] == []
    health = api.get("/health").json()
    assert (health["status"], health["model_loaded"], health["version"]) == ("no_model", False,
                                                                            None)


def test_health_says_why_no_model_is_served(cloud):
    """A first model that the gate rejected (say, no better than the prior) is not
    served; /health names it and the reason, from the registry snapshot."""
    api = make_client(cloud)
    assert api.get("/health").json()["no_model_reason"] is None        # nothing registered
    cloud.registry.add_version(tiny_predictor(0), status="rejected")
    bundle.refresh_registry_snapshot(cloud.registry, cloud.store, MODEL_NAME)

    health = api.get("/health").json()

    assert (health["status"], health["no_model_reason"]) == ("no_model", "v1 rejected: why 1")


def test_model_published_after_start_is_picked_up_after_the_ttl(cloud):
    api = make_client(cloud)
    assert post_rows(api, TABLE.slice(0, 1)).status_code == 503

    cloud.release(0)
    time.sleep(0.25)

    assert post_rows(api, TABLE.slice(0, 1)).status_code == 200


# --------------------------------------------------------------------------- predictions

def test_three_input_forms_agree_with_the_predictor(cloud):
    cloud.release(0)
    api = make_client(cloud)
    expected = tiny_predictor(0).predict_table(TABLE)
    with_label = criteo.table_to_lines(TABLE.slice(0, 20), with_label=True)
    without_label = criteo.table_to_lines(TABLE.slice(20), with_label=False)

    answers = {
        "rows": api.post("/predict", json={"rows": rows_of(TABLE)}),
        "lines": api.post("/predict", json={"lines": with_label + without_label}),
        "features": api.post("/predict", json={"features": features_of(TABLE)}),
    }

    for form, response in answers.items():
        assert response.status_code == 200, (form, response.text)
        body = response.json()
        assert body["num_samples"] == TABLE.num_rows
        np.testing.assert_allclose(body["predictions"], expected, atol=1e-6, rtol=0,
                                   err_msg=form)
    assert len(set(np.round(expected, 6))) > 5        # a model that says something


def test_the_documented_examples_are_valid_and_agree(cloud):
    cloud.release(0)
    api = make_client(cloud)

    answers = [api.post("/predict", json=example) for example in schemas.EXAMPLES]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({round(a.json()["predictions"][0], 12) for a in answers}) == 1


def test_missing_keys_empty_strings_and_numeric_strings(cloud):
    cloud.release(0)
    api = make_client(cloud)
    row = rows_of(TABLE.slice(0, 1))[0]
    as_strings = {k: ("" if v is None else str(v)) for k, v in row.items()}
    sparse = {k: v for k, v in row.items() if v is not None}

    answers = [api.post("/predict", json={"rows": [r]}).json()["predictions"][0]
               for r in (row, as_strings, sparse)]

    assert answers[0] == pytest.approx(answers[1], abs=1e-12) == answers[2]


def test_predict_response_carries_provenance(cloud):
    cloud.release(0)
    api = make_client(cloud)

    model = post_rows(api, TABLE.slice(0, 2)).json()["model"]

    provenance = cloud.store.get_json("serving/v1/provenance.json")[0]
    assert model == {"name": MODEL_NAME, "version": 1, "alias": "production",
                     "run_id": provenance["run_id"], "run_name": "train-manual-1",
                     "artifact_uri": provenance["artifact_uri"],
                     "trained_at": provenance["trained_at"]}


def test_predict_answers_json_of_its_documented_schema(cloud):
    cloud.release(0)
    api = make_client(cloud)

    response = post_rows(api, TABLE.slice(0, 3))

    assert response.headers["content-type"] == "application/json"
    body = schemas.PredictResponse.model_validate_json(response.content)
    assert body.num_samples == len(body.predictions) == 3
    documented = api.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]
    assert documented["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictResponse"}


def test_a_bundle_whose_provenance_does_not_fit_the_response_is_not_loaded(cloud):
    cloud.release(0)
    api = make_client(cloud, pointer_ttl_seconds=0.05)
    assert post_rows(api, TABLE.slice(0, 1)).status_code == 200
    for name in ("model.ubj", "feature_transform.json"):        # v1's files, bad provenance
        cloud.store.put(f"serving/v2/{name}", cloud.store.get(f"serving/v1/{name}").body)
    provenance = cloud.store.get_json("serving/v1/provenance.json")[0]
    cloud.store.put("serving/v2/provenance.json",
                    json.dumps({**provenance, "version": 2, "run_id": None}).encode())
    cloud.point_at(2)
    time.sleep(0.06)

    response = post_rows(api, TABLE.slice(0, 1))
    health = api.get("/health").json()

    assert response.status_code == 200 and response.json()["model"]["version"] == 1
    assert health["version"] == 1 and health["last_error"].startswith("ValidationError")


def test_health_and_model_info_after_publishing(cloud):
    cloud.release(0)
    cloud.release(1)
    api = make_client(cloud)

    health = api.post("/health").json()
    info_get = api.get("/model-info").json()
    info_post = api.post("/model_info").json()

    assert (health["status"], health["model_loaded"], health["version"]) == ("ok", True, 2)
    assert (health["registry_production_version"], health["serving_behind"]) == (2, False)
    assert 0 <= health["pointer_age_seconds"] < 1
    assert info_get == info_post
    assert info_get["production_version"] == 2
    assert info_get["production"]["run_id"] == "run0002"
    assert [(v["version"], v["status"], v["aliases"]) for v in info_get["versions"]] == [
        (2, "production", ["production"]), (1, "candidate", [])]
    assert info_get["versions"][0]["metrics"]["holdout_logloss"] == pytest.approx(0.48)


def test_health_and_model_info_say_when_serving_is_behind_the_registry(cloud):
    """A promotion whose reload failed: the train step's snapshot names v2, the pointer
    still v1. Both answers show both versions until a publish catches up."""
    cloud.release(0)
    api = make_client(cloud, pointer_ttl_seconds=0.05)
    before = api.get("/health").json()
    assert (before["version"], before["registry_production_version"],
            before["serving_behind"]) == (1, 1, False)
    assert before["registry_snapshot_at"]

    version = cloud.registry.add_version(tiny_predictor(1))
    cloud.registry.set_alias("production", version)
    bundle.refresh_registry_snapshot(cloud.registry, cloud.store, MODEL_NAME)
    time.sleep(0.06)
    health = api.get("/health").json()
    info = api.get("/model-info").json()

    assert (health["status"], health["version"], health["registry_production_version"],
            health["serving_behind"]) == ("ok", 1, 2, True)
    assert (info["production_version"], info["registry_production_version"],
            info["serving_behind"]) == (1, 2, True)
    bundle.sync_production(cloud.registry, cloud.store, MODEL_NAME,
                           downloader=copy_downloader)
    time.sleep(0.06)
    after = api.get("/health").json()
    assert (after["version"], after["registry_production_version"],
            after["serving_behind"]) == (2, 2, False)


def test_health_without_a_registry_snapshot_or_with_an_unreadable_one(cloud):
    api = make_client(cloud)
    health = api.get("/health").json()
    assert (health["registry_production_version"], health["serving_behind"],
            health["registry_snapshot_at"]) == (None, False, None)

    cloud.store.put(layout.REGISTRY_SNAPSHOT_KEY, b'{"not": "a snapshot"}')
    response = api.get("/health")

    assert response.status_code == 200 and response.json()["serving_behind"] is False


# --------------------------------------------------------------------------- validation

def assert_422(response, *fragments: str) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError"
    assert "Traceback" not in response.text
    assert body["errors"], body
    text = str(body["errors"])
    for fragment in fragments:
        assert fragment in text, (fragment, body["errors"])
    return body["errors"]


@pytest.fixture
def live(cloud) -> TestClient:
    cloud.release(0)
    return make_client(cloud, max_rows=5)


def test_wrong_types_are_field_level_422(live):
    row = {"I1": "abc", "I2": 1.5, "I3": True, "C1": 12345678}
    errors = assert_422(live.post("/predict", json={"rows": [row]}),
                        "must be an integer", "hex")
    assert {tuple(e["loc"]) for e in errors} == {("body", "rows", 0, "I1"),
                                                 ("body", "rows", 0, "I2"),
                                                 ("body", "rows", 0, "I3"),
                                                 ("body", "rows", 0, "C1")}


def test_non_hex_and_unknown_fields(live):
    errors = assert_422(live.post("/predict", json={"rows": [{"C3": "zzzzzzzz", "I99": 1}]}))
    assert {"loc": ["body", "rows", 0, "C3"],
            "msg": "must be 8 lowercase hex characters (or empty for missing)"} in errors
    assert {"loc": ["body", "rows", 0, "I99"], "msg": "unknown field"} in errors


def test_wrong_field_counts(live):
    short = [1] * 38
    errors = assert_422(live.post("/predict", json={"features": [features_of(TABLE)[0], short]}),
                        "expected 39 values")
    assert errors[0]["loc"] == ["body", "features", 1]
    assert_422(live.post("/predict", json={"lines": ["1\t2\t3"]}),
               "expected 39 (features) or 40")


def test_features_errors_name_the_column(live):
    vector = features_of(TABLE)[0]
    vector[13] = "NOT-HEX!"
    errors = assert_422(live.post("/predict", json={"features": [vector]}))
    assert errors == [{"loc": ["body", "features", 0, 13],
                       "msg": "C1: must be 8 lowercase hex characters (or empty for missing)"}]


def test_bad_lines_point_at_the_field(live):
    line = criteo.table_to_lines(TABLE.slice(0, 1), with_label=False)[0].split("\t")
    line[0] = "x1"
    errors = assert_422(live.post("/predict", json={"lines": ["\t".join(line)]}))
    assert errors[0]["loc"] == ["body", "lines", 0, "I1"]


def test_too_many_rows(live):
    errors = assert_422(post_rows(live, TABLE.slice(0, 6)), "at most 5 rows")
    assert errors[0]["loc"] == ["body", "rows"]


@pytest.mark.parametrize("body", [
    {},
    {"rows": [{}], "lines": ["x"]},
    {"rows": []},
    {"rows": "not a list"},
    {"vectors": [[1]]},
])
def test_request_shape_errors(live, body):
    assert_422(live.post("/predict", json=body))


def test_malformed_json(live):
    assert_422(live.post("/predict", content=b"{not json",
                         headers={"content-type": "application/json"}))


def test_unexpected_errors_are_500_without_internals(cloud, monkeypatch):
    cloud.release(0)
    api = make_client(cloud)
    post_rows(api, TABLE.slice(0, 1))
    model = api.app.state.model_cache.current

    def explode(table):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(type(model), "predict", lambda self, table: explode(table))

    response = post_rows(api, TABLE.slice(0, 1))

    assert response.status_code == 500
    assert response.json()["error"] == "InternalError"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_unknown_path_is_json_404(live):
    response = live.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


def test_routes_get_their_settings_through_depends(cloud):
    cloud.release(0)
    api = make_client(cloud, max_rows=5)
    api.app.dependency_overrides[dependencies.get_settings] = lambda: ServingSettings(
        bucket_name="bucket", max_rows=1)

    assert_422(post_rows(api, TABLE.slice(0, 2)), "at most 1 rows")


# --------------------------------------------------------------------------- hot swap

def test_hot_swap_under_load_has_no_failures(cloud):
    cloud.release(0)
    api = make_client(cloud, pointer_ttl_seconds=0.2)
    one = TABLE.slice(0, 3)
    expected_v2 = tiny_predictor(1).predict_table(one)
    seen: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = post_rows(api, one)
            if response.status_code != 200:
                failures.append(response.text)
            else:
                seen.append(response.json()["model"]["version"])

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.1)
        cloud.release(1)
        published = time.monotonic()
        switched = None
        while time.monotonic() - published < 5:
            body = post_rows(api, one).json()
            if body["model"]["version"] == 2:
                switched = time.monotonic() - published
                break
            time.sleep(0.02)
        time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join()

    assert failures == []
    assert switched is not None and switched < 1.0
    np.testing.assert_allclose(body["predictions"], expected_v2, atol=1e-6)
    first_v2 = seen.index(2)
    assert set(seen[:first_v2]) == {1} and len(seen) > first_v2 + 1


def test_pointer_is_not_re_read_within_the_ttl(cloud):
    cloud.release(0)
    api = make_client(cloud, pointer_ttl_seconds=60)
    assert post_rows(api, TABLE.slice(0, 1)).json()["model"]["version"] == 1

    cloud.release(1)

    assert post_rows(api, TABLE.slice(0, 1)).json()["model"]["version"] == 1


def test_a_broken_bundle_or_s3_outage_keeps_the_current_model(cloud):
    cloud.release(0)
    api = make_client(cloud, pointer_ttl_seconds=0.05)
    assert post_rows(api, TABLE.slice(0, 1)).status_code == 200
    cloud.point_at(9)
    time.sleep(0.06)

    response = post_rows(api, TABLE.slice(0, 1))
    health = api.get("/health").json()
    time.sleep(0.06)
    cloud.s3.fail_next = [("get_object", "ServiceUnavailable")]
    after_outage = post_rows(api, TABLE.slice(0, 1))

    assert response.status_code == 200 and response.json()["model"]["version"] == 1
    assert "incomplete" in health["last_error"]
    assert after_outage.status_code == 200


def test_a_deleted_pointer_means_no_model(cloud):
    cloud.release(0)
    api = make_client(cloud, pointer_ttl_seconds=0.05)
    assert post_rows(api, TABLE.slice(0, 1)).status_code == 200

    cloud.store.delete(layout.PRODUCTION_POINTER_KEY)
    time.sleep(0.06)

    assert post_rows(api, TABLE.slice(0, 1)).status_code == 503
    assert api.get("/health").json()["status"] == "no_model"


# --------------------------------------------------------------------------- samples, page, docs

def put_part(store: Store, index: int, table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.put(layout.parquet_key(index), sink.getvalue())


def test_samples_come_from_the_newest_part_and_predict_the_same(cloud):
    cloud.release(0)
    put_part(cloud.store, 0, sample_table().slice(1000, 50))
    put_part(cloud.store, 1, TABLE)
    api = make_client(cloud)

    sample = api.get("/samples", params={"n": 4}).json()

    assert sample["source"] == "parquet/part_000001.parquet"
    assert len(sample["rows"]) == len(sample["lines"]) == len(sample["labels"]) == 4
    known = rows_of(TABLE)
    assert all(row in known for row in sample["rows"])
    by_rows = api.post("/predict", json={"rows": sample["rows"]}).json()["predictions"]
    by_lines = api.post("/predict", json={"lines": sample["lines"]}).json()["predictions"]
    np.testing.assert_allclose(by_rows, by_lines, atol=1e-12)


def test_samples_without_data_is_404_and_n_is_bounded(cloud):
    api = make_client(cloud)
    response = api.get("/samples")
    assert response.status_code == 404 and response.json()["error"] == "NotFoundError"
    assert_422(api.get("/samples", params={"n": 0}))


def test_page_static_files_and_docs(cloud, web_dir):
    api = make_client(cloud, web_dir=web_dir)

    page = api.get("/")
    script = api.get("/static/app.js")

    assert page.status_code == 200 and "<title>ctr</title>" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200 and "console.log" in script.text
    # ES modules run only with a JavaScript content type (whatever the host's mime.types).
    assert script.headers["content-type"].startswith("text/javascript")
    module = api.get("/static/js/format.js")
    assert module.status_code == 200 and module.headers["content-type"].startswith(
        "text/javascript")
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/predict", "/health", "/model-info", "/model_info", "/samples"} <= set(paths)


class _BlockMlflow:
    """A meta-path finder that makes `import mlflow` fail."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(f"the serving app must not import {name}")


def test_the_serving_app_never_imports_mlflow(monkeypatch):
    """Re-import the serving modules (and every ctr module they pull in) with mlflow
    blocked; the originals are put back afterwards so other tests keep their classes."""
    originals = {k: v for k, v in sys.modules.items() if k == "ctr" or k.startswith("ctr.")}
    for name in list(sys.modules):
        if name in originals or name == "mlflow" or name.startswith("mlflow."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BlockMlflow(), *sys.meta_path])

    importlib.import_module("ctr.serving.app")

    assert not [m for m in sys.modules if m.split(".")[0] == "mlflow"]


# --------------------------------------------------------------------------- the Lambda handler

def api_gateway_event(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    """What API Gateway (REST API, proxy integration) hands the predict function."""
    return {"resource": "/{proxy+}", "path": path, "httpMethod": method,
            "headers": {"Host": "api.local", "Content-Type": "application/json"},
            "multiValueHeaders": {}, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": None,
            "stageVariables": None, "body": body, "isBase64Encoded": False,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method,
                               "path": path, "stage": "v1", "requestId": "req-1",
                               "identity": {"sourceIp": "127.0.0.1"}}}


def test_the_predict_handler_counts_every_response_by_status_class(
        load_handler, lambda_context, monkeypatch, capsys):
    handler = load_handler("predict", monkeypatch)
    requests = [("GET", "/openapi.json"), ("GET", "/nope"), ("POST", "/predict", "{}")]

    # Mangum drives the app on this thread's event loop; when the suite's browser tests
    # already run one here (Playwright), the bench's helper gives the calls a thread and
    # a loop of their own, as a fresh Lambda process would have.
    statuses = off_running_loop(lambda: [
        handler.lambda_handler(api_gateway_event(*r), lambda_context)["statusCode"]
        for r in requests])

    emitted = [json.loads(line)["_aws"]["CloudWatchMetrics"][0]
               for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert statuses == [200, 404, 422]
    assert [(m["Namespace"], [x["Name"] for x in m["Metrics"]]) for m in emitted] == [
        ("CtrPipeline", ["Http2xx"]), ("CtrPipeline", ["Http4xx"]), ("CtrPipeline", ["Http4xx"])]
