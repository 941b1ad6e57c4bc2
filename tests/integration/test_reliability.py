"""Fault injection and overlap on the local cloud (issue #8, parts 1 and 2).

Each test injects one fault into the deployed pipeline (`ctr.faults`, switched on per
function through its environment, inert otherwise), then proves that the NEXT execution
completes and that every line is accounted for exactly (`tests.invariants`: the multiset
of source lines = Parquet rows + quarantined rejects, per chunk and overall). The data has
a malformed line every 97 lines, so every chunk has rejects. Each test ingests its own
raw file (names sort in test order, so the chunk cursor meets them in that order). The
train function reaches MLflow through a forwarding proxy that test 4 takes down.
Tests run in file order; the last one drains raw/ and checks the whole source, and
prints the figures (faults injected/survived, executions overlapped, lines checked,
lines lost/duplicated)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ctr import aggregate, chunking, faults, guard, layout
from tests.invariants import LineAccount, account, source_with_rejects

CHUNK = 500                       # CHUNK_LINES of the chunk function in this module
VALID_PER_CHUNK = 495             # + 5 malformed lines (one per 97) = 500 lines
FIGURES: Counter[str] = Counter()


# --- helpers ---------------------------------------------------------------------------

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-connection", "content-length", "host"}


class MlflowProxy:
    """A forwarder to the real MLflow server that can go down on cue: once armed with
    `down_after(path)`, after it has passed on the answer to a request whose path
    contains `path`, every request's connection is dropped without an answer (as a
    server that died) until `up()`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.trigger: str | None = None
        self.down = threading.Event()
        self.passed = self.dropped = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                if proxy.down.is_set():
                    proxy.dropped += 1
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(proxy.upstream.hostname,
                                                  proxy.upstream.port, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body,
                                 headers={**headers, "Host": proxy.upstream.netloc})
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in _HOP | {"server", "date"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                proxy.passed += 1
                if proxy.trigger and proxy.trigger in self.path and resp.status == 200:
                    proxy.down.set()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def down_after(self, path: str) -> None:
        self.trigger = path

    def up(self) -> None:
        self.trigger = None
        self.down.clear()

    def __enter__(self) -> MlflowProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mlflow_proxy(cloud):
    """The train function talks to MLflow through an `MlflowProxy` for the whole module
    (set once: every configuration change costs the function a cold start). MLflow's
    client would retry 7 times with backoff on its own: off here, so an outage reaches
    the state machine's bounded Retry. Settings restored after."""
    train = cloud.function_name("TrainFunction")
    uri = cloud.lambda_client.get_function_configuration(FunctionName=train)[
        "Environment"]["Variables"]["MLFLOW_TRACKING_URI"]
    with MlflowProxy(cloud.mlflow_uri) as proxy:
        cloud.set_env("TrainFunction", MLFLOW_TRACKING_URI=proxy.url,
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="120")
        try:
            yield proxy
        finally:
            cloud.set_env("TrainFunction", MLFLOW_TRACKING_URI=uri,
                          MLFLOW_HTTP_REQUEST_MAX_RETRIES=None,
                          MLFLOW_HTTP_REQUEST_TIMEOUT=None)


@pytest.fixture(scope="module")
def pipeline(cloud, mlflow_proxy):
    """An empty bucket and registry, small chunks; the functions' settings restored after."""
    cloud.reset_data()
    # one chunk per execution (the faults are aimed at the one-chunk cut);
    # test_backfill.py covers the parallel backfill
    cloud.set_env("ChunkFunction", CHUNK_LINES=str(CHUNK), BACKFILL_CONCURRENCY="0")
    yield cloud
    cloud.set_env("ChunkFunction", CHUNK_LINES=None, BACKFILL_CONCURRENCY=None)


def ingest(cloud, name: str, chunks: int = 1) -> None:
    """raw/it/<name>.txt: `chunks` x CHUNK lines with rejects, the next rows of the
    synthetic stream (so files do not repeat each other)."""
    rows = VALID_PER_CHUNK * chunks
    data = source_with_rejects(rows, seed=0, start_row=FIGURES["rows generated"])
    FIGURES["rows generated"] += rows
    assert len(data.split(b"\n")) - 1 == CHUNK * chunks
    cloud.store.put(f"{layout.RAW_PREFIX}it/{name}.txt", data, "text/plain")


def run(cloud, name: str, timeout_s: float = 600) -> tuple[str, dict[str, Any]]:
    arn = cloud.start_execution(name)
    desc = cloud.wait_execution(arn, timeout_s=timeout_s)
    print(f"\n{name}: {desc['status']} in "
          f"{(desc['stopDate'] - desc['startDate']).total_seconds():.1f}s "
          f"({', '.join(f'{s} {t:.1f}s' for s, t in state_seconds(cloud, arn))})")
    return arn, desc


def state_seconds(cloud, arn: str) -> list[tuple[str, float]]:
    """(state, seconds from entering it to leaving it) of an execution, in order."""
    events = cloud.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    entered: dict[str, Any] = {}
    out = []
    for e in events:
        if "stateEnteredEventDetails" in e:
            entered[e["stateEnteredEventDetails"]["name"]] = e["timestamp"]
        elif "stateExitedEventDetails" in e:
            name = e["stateExitedEventDetails"]["name"]
            if name in entered:
                out.append((name, (e["timestamp"] - entered.pop(name)).total_seconds()))
    return out


def run_with_faults(cloud, name: str, faults_dir: Path, specs: dict[str, str]
                    ) -> tuple[str, dict[str, Any], float]:
    """One execution with CTR_FAULTS set on the given functions (`{logical name: spec}`,
    each counting in its own directory under `faults_dir`), switched off again after.
    Returns (execution ARN, its description, seconds)."""
    for logical, spec in specs.items():
        cloud.set_env(logical, CTR_FAULTS=spec, CTR_FAULTS_DIR=str(faults_dir / logical))
    FIGURES["faults injected"] += 1
    try:
        t0 = time.monotonic()
        arn, desc = run(cloud, name)
        return arn, desc, time.monotonic() - t0
    finally:
        for logical in specs:
            cloud.set_env(logical, CTR_FAULTS=None, CTR_FAULTS_DIR=None)


def task_errors(cloud, arn: str) -> list[str]:
    """Errors of the failed task attempts of an execution, in order."""
    events = cloud.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return [e["taskFailedEventDetails"].get("error", "") for e in events
            if e["type"] == "TaskFailed"]


def lease(cloud) -> dict[str, Any]:
    found = cloud.store.get_json(guard.LEASE_KEY)
    return found[0] if found else {}


def check(cloud, what: str, **kwargs: Any) -> LineAccount:
    """The line invariant (tests.invariants), counted in FIGURES, then asserted."""
    result = account(cloud.store, **kwargs)
    FIGURES["invariant checks"] += 1
    FIGURES["lines lost"] += result.lost
    FIGURES["lines duplicated"] += result.duplicated
    FIGURES["lines checked (last check)"] = result.source_lines
    print(f"\n{what}: {result.summary()}")
    assert result.ok, "\n".join(result.problems)
    return result


def expect_recovery(cloud, name: str) -> dict[str, Any]:
    """The execution after a fault: it completes, releases the lease, loses nothing."""
    _, desc = run(cloud, name)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    assert out["lease"]["value"]["acquired"] is True
    assert lease(cloud).get("holder") is None
    check(cloud, f"after {name}")
    FIGURES["faults survived"] += 1
    return out


def set_timeout(cloud, logical: str, seconds: int) -> int:
    """Change a function's timeout; returns the old one."""
    name = cloud.function_name(logical)
    old = int(cloud.lambda_client.get_function_configuration(FunctionName=name)["Timeout"])
    cloud.lambda_client.update_function_configuration(FunctionName=name, Timeout=seconds)
    cloud.wait_for(f"{name} timeout update", lambda: (
        c := cloud.lambda_client.get_function_configuration(FunctionName=name))
        ["LastUpdateStatus"] == "Successful" and c["Timeout"] == seconds, timeout_s=60)
    return old


# --- 1. chunk: crash between the chunk write and the cursor move --------------------------

def test_chunk_crash_after_write_before_cursor_move(pipeline, tmp_path):
    cloud = pipeline
    ingest(cloud, "01-chunk-crash")
    before = chunking.load_cursor(cloud.store)[0].next_chunk
    arn, desc, _ = run_with_faults(cloud, "rel-chunk-crash", tmp_path, {
        "ChunkFunction": f"{chunking.FAULT_AFTER_WRITE}=crash*1"})
    # the crashed attempt wrote the chunk but not the cursor; the state machine retried
    # the (idempotent) step once, which found the chunk and moved the cursor past it
    assert task_errors(cloud, arn).count("Runtime.ExitError") == 1
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    assert out["chunk"]["value"]["chunk_index"] == before
    assert out["chunk"]["value"]["reused_existing_chunk"] is True
    assert chunking.load_cursor(cloud.store)[0].next_chunk == before + 1
    check(cloud, "after the retried crash")
    expect_recovery(cloud, "rel-after-chunk-crash")


# --- 2. aggregate: crash after the rejects are written, before the part ----------------------

def test_aggregate_crash_midway(pipeline, tmp_path):
    cloud = pipeline
    ingest(cloud, "02-aggregate-crash", chunks=2)
    index = chunking.load_cursor(cloud.store)[0].next_chunk
    arn, desc, _ = run_with_faults(cloud, "rel-aggregate-crash", tmp_path, {
        "AggregateFunction": f"{aggregate.FAULT_BEFORE_PART}=crash*1"})
    # the crashed attempt left the rejects without the part; the retry converted it
    assert task_errors(cloud, arn).count("Runtime.ExitError") == 1
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert index in json.loads(desc["output"])["aggregate"]["value"]["converted"]
    assert cloud.store.exists(layout.parquet_key(index))
    check(cloud, "after the retried crash")
    expect_recovery(cloud, "rel-after-aggregate-crash")


# --- 3. a function timeout (aggregate stalls mid-way and is killed) -------------------------

def test_function_timeout(pipeline, tmp_path):
    cloud = pipeline
    ingest(cloud, "03-timeout", chunks=2)
    index = chunking.load_cursor(cloud.store)[0].next_chunk
    old = set_timeout(cloud, "AggregateFunction", 12)
    try:
        arn, desc, seconds = run_with_faults(cloud, "rel-timeout", tmp_path, {
            "AggregateFunction": f"{aggregate.FAULT_BEFORE_PART}=sleep:300*1"})
    finally:
        set_timeout(cloud, "AggregateFunction", old)
    assert task_errors(cloud, arn).count("Sandbox.Timedout") == 1
    assert seconds < 300                          # killed at the timeout, not after the sleep
    print(f"\ntimed-out attempt retried: execution {desc['status']} after {seconds:.1f}s")
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert index in json.loads(desc["output"])["aggregate"]["value"]["converted"]
    check(cloud, "after the retried timeout")
    expect_recovery(cloud, "rel-after-timeout")


# --- 4. MLflow goes down during training -----------------------------------------------------

def train_retries() -> int:
    """MaxAttempts of the Train state's Retry for TransientError (the ASL file)."""
    asl = json.loads((Path(__file__).parents[2] / "statemachine" / "pipeline.asl.json")
                     .read_text())
    (retry,) = [r for r in asl["States"]["Train model"]["Retry"]
                if "TransientError" in r["ErrorEquals"]]
    return int(retry["MaxAttempts"])


def _registry(cloud) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cloud.mlflow_uri)


def _production(client: Any, model: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model, "production").version)
    except MlflowException:
        return None


def _pointer(cloud) -> str | None:
    found = cloud.store.get_json(layout.PRODUCTION_POINTER_KEY)
    return str(found[0]["version"]) if found else None


@pytest.mark.slow
def test_mlflow_down_during_training(pipeline, mlflow_proxy):
    """MLflow dies right after the new version is registered, before the promotion
    gate: the train step fails, is retried (bounded), the execution fails cleanly, and
    the half-registered version is not promoted; once MLflow is back the next
    execution completes and resolves the candidate."""
    cloud = pipeline
    client = _registry(cloud)
    model = cloud.lambda_client.get_function_configuration(
        FunctionName=cloud.function_name("TrainFunction"))["Environment"]["Variables"][
        "MODEL_NAME"]
    if _production(client, model) is None:       # this test alone: make a production model
        ingest(cloud, "04-mlflow-baseline")
        assert run(cloud, "rel-mlflow-baseline")[1]["status"] == "SUCCEEDED"
    production, pointer = _production(client, model), _pointer(cloud)
    assert production is not None and pointer == production
    versions = {v.version for v in client.search_model_versions(f"name='{model}'")}
    ingest(cloud, "04-mlflow-down", chunks=2)
    mlflow_proxy.down_after("/model-versions/create")
    try:
        t0 = time.monotonic()
        arn, desc = run(cloud, "rel-mlflow-down")
        seconds = time.monotonic() - t0
        went_down = mlflow_proxy.down.is_set()
        passed, dropped = mlflow_proxy.passed, mlflow_proxy.dropped
    finally:
        mlflow_proxy.up()
    FIGURES["faults injected"] += 1
    errors = task_errors(cloud, arn)
    print(f"\nMLflow down: {desc['status']} after {seconds:.1f}s, task errors {errors}, "
          f"MLflow requests passed {passed} (whole module), dropped {dropped}")
    assert went_down, "training never registered a version through the proxy"
    assert desc["status"] == "FAILED" and desc.get("error") == "TransientError"
    # the first attempt + the Train state's bounded retries, then the Catch
    assert errors == ["TransientError"] * (1 + train_retries())
    assert lease(cloud).get("holder") is None
    # half-registered: a new version exists, but nothing moved
    half = {v.version for v in client.search_model_versions(f"name='{model}'")} - versions
    assert len(half) == 1
    (new,) = half
    assert client.get_model_version(model, new).tags.get("status") == "candidate"
    assert _production(client, model) == production and _pointer(cloud) == production

    out = expect_recovery(cloud, "rel-after-mlflow-down")
    assert out["train"]["value"]["status"] == "trained"
    now = _production(client, model)
    assert client.get_model_version(model, new).tags.get("status") != "candidate"
    assert now in (production, new) and _pointer(cloud) == now


# --- 5. S3 throttles ---------------------------------------------------------------------

def test_s3_throttling_for_a_while(pipeline, tmp_path):
    """Guard and aggregate: 3 x 503 SlowDown, absorbed by botocore's retries (adaptive
    mode). Chunk: 12 x 503 ServiceUnavailable, more than botocore's 9 attempts: the
    first request fails, Store maps it to TransientError, the state machine retries."""
    cloud = pipeline
    ingest(cloud, "05-s3-throttle")
    storms = {"GuardFunction": "SlowDown*3", "ChunkFunction": "ServiceUnavailable*12",
              "AggregateFunction": "SlowDown*3"}
    arn, desc, seconds = run_with_faults(cloud, "rel-s3-throttle", tmp_path, {
        logical: f"{faults.S3_REQUEST}={spec}" for logical, spec in storms.items()})
    injected = {logical: len(list((tmp_path / logical).iterdir())) for logical in storms}
    FIGURES["S3 errors injected"] += sum(injected.values())
    print(f"\nS3 errors injected {injected}; execution {desc['status']} in {seconds:.1f}s; "
          f"task errors {task_errors(cloud, arn)}")
    assert injected == {"GuardFunction": 3, "ChunkFunction": 12, "AggregateFunction": 3}
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert task_errors(cloud, arn) == ["TransientError"]          # the chunk step, retried
    out = json.loads(desc["output"])
    assert out["chunk"]["value"]["status"] == "chunked"
    assert lease(cloud).get("holder") is None
    check(cloud, "after S3 throttling")
    FIGURES["faults survived"] += 1


# --- 6. overlap -------------------------------------------------------------------------

def start_together(cloud, names: list[str]) -> list[str]:
    """Start one execution per name from as many threads, released at once."""
    barrier = threading.Barrier(len(names))
    arns: list[str] = []

    def start(name: str) -> None:
        barrier.wait()
        arns.append(cloud.start_execution(name))

    threads = [threading.Thread(target=start, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return arns


@pytest.mark.slow
def test_overlapping_executions_rounds(pipeline):
    cloud = pipeline
    rounds, per_round = 3, 4
    for r in range(rounds):
        ingest(cloud, f"06-overlap-{r}")
        chunks_before = chunking.load_cursor(cloud.store)[0].next_chunk
        arns = start_together(cloud, [f"rel-overlap-{r}-{i}" for i in range(per_round)])
        descs = [cloud.wait_execution(a) for a in arns]
        starts = [d["startDate"].timestamp() for d in descs]
        spread = max(starts) - min(starts)
        assert len(descs) == per_round and spread < 1.0, f"started {spread:.2f}s apart"
        assert all(d["status"] == "SUCCEEDED" for d in descs), [d.get("cause") for d in descs]
        outs = [json.loads(d["output"]) for d in descs]
        ran = [o for o in outs if o["lease"]["value"]["acquired"]]
        skipped = [o for o in outs if not o["lease"]["value"]["acquired"]]
        assert ran, "nobody got the lease: a deadlock"
        for o in skipped:
            assert "holds the pipeline lease" in o["lease"]["value"]["reason"]
        cut = [o for o in ran if o["chunk"]["value"]["status"] == "chunked"]
        assert chunking.load_cursor(cloud.store)[0].next_chunk == chunks_before + len(cut)
        assert lease(cloud).get("holder") is None
        FIGURES["executions overlapped"] += per_round
        print(f"\nround {r}: {per_round} executions started within {spread:.2f}s, "
              f"{len(ran)} ran, {len(skipped)} skipped")
        check(cloud, f"after overlap round {r}")


def test_lease_of_a_dead_holder_is_taken_over_after_expiry(pipeline):
    """A holder that took the lease and died without releasing it (what a stopped or
    crashed execution leaves behind) blocks the next executions only until its lease
    expires; then the next execution takes it over and runs."""
    cloud = pipeline
    ttl = 15
    taken = guard.acquire(cloud.store, "rel-dead-holder", ttl_seconds=ttl)
    assert taken.acquired is True
    FIGURES["faults injected"] += 1
    expires_at = lease(cloud)["expires_at"]

    _, blocked = run(cloud, "rel-lease-blocked")
    assert blocked["status"] == "SUCCEEDED"
    value = json.loads(blocked["output"])["lease"]["value"]
    assert value["acquired"] is False, f"lease taken before its expiry? {value} (ttl {ttl}s)"
    assert "rel-dead-holder" in value["reason"]
    assert lease(cloud)["holder"] == "rel-dead-holder"

    time.sleep(max(0.0, expires_at - time.time()) + 0.5)
    _, took = run(cloud, "rel-lease-takeover")
    assert took["status"] == "SUCCEEDED", took.get("cause")
    value = json.loads(took["output"])["lease"]["value"]
    assert value["acquired"] is True
    assert value["reason"] == "took over the expired lease of rel-dead-holder"
    assert lease(cloud).get("holder") is None
    check(cloud, "after the lease takeover")
    FIGURES["faults survived"] += 1


# --- the whole source, and the figures -------------------------------------------------

def test_zz_whole_source_accounted_for(pipeline):
    cloud = pipeline
    for _ in range(50):
        if cloud.invoke("ChunkFunction", {})["status"] == "exhausted":
            break
    _, desc = run(cloud, "rel-final")
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    result = check(cloud, "whole source", complete=True)
    assert result.rejected_lines > 0 and result.parquet_rows > 0
    FIGURES["lines checked (whole source)"] = result.source_lines
    print("\nreliability figures: " + ", ".join(f"{k} {v}" for k, v in sorted(FIGURES.items())))
    assert FIGURES["lines lost"] == 0 and FIGURES["lines duplicated"] == 0
