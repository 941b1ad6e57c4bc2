"""Serving latency and throughput (printed figures, not a timed test).

What is measured, on the production bundle of a bucket and on real rows of its newest
Parquet part:

* in-process, for 1, 100 and 1,000 rows, p50/p99 of wall time and of the thread's CPU
  time (on a shared machine the wall p99 is mostly waiting for a core) of
  - the model alone: `transform.encode` + XGBoost in-place prediction,
  - the request path: body validation + `ctr.criteo` conversion + prediction,
  - the Lambda handler: an API Gateway event through Mangum and FastAPI, in-process,
  - the prediction log's cost on it: the same handler with the log on at sample rate
    1.0 (its background thread sending to a Firehose client that accepts and drops the
    batches) against the log off, calls alternating so that both see the same machine;
    reported as the p50 difference;
* over HTTP, for the same row counts, with one load generator (a second process on
  127.0.0.1 running a bounded loop of N requests at fixed concurrency, keep-alive
  connections, `http.client`) against
  - this API on uvicorn (same app, in a thread of the bench process, one worker),
  - API Gateway -> Lambda on the local cloud, when its base URL is given,
  - `mlflow models serve -m models:/<model>@production --env-manager local` (its
    default: one uvicorn worker) on the same registered model (MLflow's pyfunc has no
    feature transform, so it is sent the already-encoded features: less work for it
    than raw rows are for us; the answers are checked to agree).
  The targets take turns in `--rounds` slices, all warmed first. Reported per target:
  req/s, latency p50/p99, the server's CPU ms per request (for uvicorn and mlflow: the
  cost of a request whatever else the machine runs) and the CPU share of server and
  load generator (a one-worker server or the generator at ~1 core is the limit).

`--offline` builds everything it needs first (in-memory S3, a throw-away SQLite MLflow
registry, synthetic Parquet parts, the real train/register/promote code and the real
reload export), so the in-process, uvicorn and `mlflow models serve` figures need no
local cloud.

    python -m ctr_infra.bench.serve --offline
    python -m ctr_infra.bench.serve --api <LocalApiUrl> --mlflow <MlflowUrl> --bucket <b>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctr import criteo, layout
from ctr.bundle import load_bundle, load_pointer
from ctr.errors import NoModelError, NotFoundError
from ctr.schema import FEATURE_COLUMNS, read_part, to_record
from ctr.serving import schemas
from ctr.serving.app import LoadedModel, ServingSettings, create_app
from ctr.serving.prediction_log import PredictionLog
from ctr.storage import Store
from ctr_infra.bench.cloud import BenchCloud, function_env
from ctr_infra.bench.loadgen import Target, process_group_cpu, take_turns
from ctr_infra.bench.plan import Echo, Plan
from ctr_infra.bench.report import Figure, SectionResult, figure, min_max, summarize, time_calls
from ctr_infra.localcloud import CloudError
from ctr_infra.net import LOCALHOST, free_port, wait_http

IN_PROCESS_SIZES = (1, 100, 1000)
OURS, MLFLOW, API_GATEWAY = "this API on uvicorn", "mlflow models serve", "API Gateway -> Lambda"


def requests_for(requests: int, rows: int) -> int:
    """Fewer requests for bigger ones, but never fewer than 300 (2,000 x 1 row, 300 x 100,
    300 x 1,000 rows): 100 x 1,000 rows was about one second of our server's time, too
    short a slice to give a steady figure on a shared 2-core machine."""
    return max(300, requests // max(1, rows // 10))


# --------------------------------------------------------------------------- in-process

def off_running_loop(fn: Callable[[], Any]) -> Any:
    """Run `fn` here, or -- when this thread already runs an asyncio loop (a Playwright
    sync session earlier in the same pytest process keeps one running) -- in a fresh
    thread with its own loop: Mangum drives the app with the thread's event loop and
    cannot use one that is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err
        finally:
            loop.close()

    worker = threading.Thread(target=target, name="bench-in-process")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def api_gateway_event(method: str, path: str, body: dict[str, Any] | None = None,
                      query: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it to the predict function."""
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"content-type": "application/json", "host": "bench"},
        "multiValueHeaders": {}, "queryStringParameters": query,
        "multiValueQueryStringParameters": (None if query is None else
                                            {k: [v] for k, v in query.items()}),
        "pathParameters": {"proxy": path[1:]},
        "stageVariables": None, "isBase64Encoded": False,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": method,
                           "path": f"/v1{path}", "stage": "v1", "requestId": "bench",
                           "identity": {"sourceIp": LOCALHOST}},
        "body": None if body is None else json.dumps(body),
    }


class _LambdaContext:
    function_name = "bench-predict"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench-predict"
    aws_request_id = "bench"


class NullFirehose:
    """A Firehose client that accepts every batch (the log's cost without the network)."""

    def __init__(self) -> None:
        self.records = 0

    def put_record_batch(self, DeliveryStreamName: str, Records: list[Any]) -> dict[str, Any]:
        self.records += sum(r["Data"].count(b"\n") for r in Records)
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "x"} for _ in Records]}


def paired_calls(off: Callable[[], Any], on: Callable[[], Any], repeats: int,
                 warmup: int = 50) -> dict[str, dict[str, float]]:
    """Wall-clock summaries of two variants timed in alternation (off, on, off, ...), so
    that a machine getting busier or quieter affects both alike."""
    for _ in range(warmup):
        off()
        on()
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for name, fn in (("off", off), ("on", on)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: summarize(samples) for name, samples in times.items()}


def bench_prediction_log(store: Store, rows: list[dict[str, Any]], repeats: int = 2000
                         ) -> dict[str, Any]:
    """The Lambda handler (1 row) with the prediction log off and on at rate 1.0."""
    from mangum import Mangum

    settings = ServingSettings(bucket_name=store.bucket, pointer_ttl_seconds=3600)
    firehose = NullFirehose()
    plog = PredictionLog(lambda: firehose, "bench-predictions", 1.0)
    handlers = {
        "off": Mangum(create_app(settings, store_factory=lambda: store), lifespan="off"),
        "on": Mangum(create_app(settings, store_factory=lambda: store, prediction_log=plog),
                     lifespan="off")}
    event = api_gateway_event("POST", "/predict", {"rows": rows[:1]})
    context: Any = _LambdaContext()

    def call(name: str) -> Callable[[], None]:
        def invoke() -> None:
            if handlers[name](event, context)["statusCode"] != 200:
                raise RuntimeError(f"in-process handler ({name}) did not answer 200")
        return invoke

    stats = paired_calls(call("off"), call("on"), repeats)
    plog.close(timeout_s=5)
    return {**stats, "p50_added_ms": stats["on"]["p50_ms"] - stats["off"]["p50_ms"],
            "logged_rows": firehose.records, "dropped_rows": plog.counters.dropped_rows}


def bench_in_process(store: Store, model: LoadedModel, rows: list[dict[str, Any]],
                     sizes: tuple[int, ...] = IN_PROCESS_SIZES, repeats: int = 1000
                     ) -> dict[str, dict[int, dict[str, float]]]:
    from mangum import Mangum

    settings = ServingSettings(bucket_name=store.bucket, pointer_ttl_seconds=3600)
    handler = Mangum(create_app(settings, store_factory=lambda: store), lifespan="off")
    context: Any = _LambdaContext()
    out: dict[str, dict[int, dict[str, float]]] = {"model": {}, "request": {}, "lambda": {},
                                                    "explain": {}}
    for size in sizes:
        body = {"rows": rows[:size]}
        table = criteo.rows_to_table(rows[:size])
        event = api_gateway_event("POST", "/predict", body)
        explain_event = api_gateway_event("POST", "/predict", body, {"explain": "true"})
        n = max(50, repeats // max(1, size // 10))

        def model_only(table: pa.Table = table) -> None:
            model.predict(table)

        def request_path(body: dict[str, Any] = body) -> None:
            request = schemas.PredictRequest.model_validate(body)
            model.predict(schemas.request_to_table(request, 10_000)).tolist()

        def lambda_handler(event: dict[str, Any] = event) -> None:
            answer = handler(event, context)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"in-process handler answered {answer['statusCode']}: "
                                   f"{answer['body'][:300]}")

        out["model"][size] = time_calls(model_only, n)
        out["request"][size] = time_calls(request_path, n)
        out["lambda"][size] = time_calls(lambda_handler, n)
        if size <= 100:        # the page explains one row; 100 rows bound the cost
            out["explain"][size] = time_calls(functools.partial(lambda_handler, explain_event),
                                              max(20, n // 4))
    return out


# --------------------------------------------------------------------------- servers

@contextlib.contextmanager
def uvicorn_app(store: Store, prediction_log: PredictionLog | None = None) -> Iterator[str]:
    """This API on uvicorn in a thread of this process (one worker, like mlflow's)."""
    import uvicorn

    settings = ServingSettings(bucket_name=store.bucket, pointer_ttl_seconds=5)
    port = free_port()
    app = create_app(settings, store_factory=lambda: store, prediction_log=prediction_log)
    server = uvicorn.Server(uvicorn.Config(app,
                                           host=LOCALHOST, port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{LOCALHOST}:{port}"
    try:
        wait_http(f"{base}/health", 30, thread.is_alive, "uvicorn")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def mlflow_models_serve(model_uri: str, tracking_uri: str, log_path: Path,
                        env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """`mlflow models serve` in its own process group, stopped by that group's id.
    Yields (base URL, process group id)."""
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
            "--env-manager", "local", "-h", LOCALHOST, "-p", str(port)]
    # It execs `uvicorn` through bash, so this interpreter's bin/ must be on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    full_env = {**os.environ, **(env or {}), "MLFLOW_TRACKING_URI": tracking_uri,
                "PATH": path}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://{LOCALHOST}:{port}"
    try:
        wait_http(f"{base}/ping", 180, lambda: proc.poll() is None, "mlflow models serve")
        yield base, proc.pid
    except RuntimeError as err:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{err}; the end of its log:\n{tail}") from err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --------------------------------------------------------------------------- the benchmark

def newest_rows(store: Store, n: int = 1000) -> list[dict[str, Any]]:
    """Feature rows of the newest Parquet part (repeated if it has fewer than n)."""
    keys = [k for k in store.list_keys(layout.PARQUET_PREFIX) if k.endswith(".parquet")]
    if not keys:
        raise NotFoundError("no Parquet parts in the bucket")
    table = to_record(read_part(store.get(max(keys, key=layout.index_of)).body,
                                columns=list(FEATURE_COLUMNS)).slice(0, n))
    rows = table.to_pylist()
    return (rows * (n // len(rows) + 1))[:n]


def run(store: Store, *, mlflow_uri: str | None = None, api_url: str | None = None,
        model_name: str = "criteo_ctr_model", requests: int = 2000, concurrency: int = 4,
        api_requests: int = 300, http_rows: tuple[int, ...] = IN_PROCESS_SIZES,
        rounds: int = 3,
        serve_env: dict[str, str] | None = None, workdir: Path | None = None,
        echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything that is reachable; returns the figures (also printed)."""
    pointer = load_pointer(store)
    if pointer is None:
        raise NoModelError("the bucket has no serving/production.json: train and reload first")
    predictor, provenance = load_bundle(store, pointer)
    model = LoadedModel.build(predictor, provenance, pointer)
    rows = newest_rows(store)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="ctr-bench-serve-"))
    results: dict[str, Any] = {"model": model.ref, "rows_per_request_http": list(http_rows),
                               "concurrency": concurrency, "cpus": os.cpu_count()}

    echo(f"model {model.ref['name']} v{model.ref['version']} "
         f"({predictor.booster.num_boosted_rounds()} trees); {os.cpu_count()} CPUs")
    results["in_process"] = off_running_loop(lambda: bench_in_process(store, model, rows))
    results["prediction_log"] = off_running_loop(lambda: bench_prediction_log(store, rows))

    # The servers run side by side (one uvicorn worker each, mlflow's default) and take
    # turns under the same load generator; server CPU per request does not depend on
    # what else the machine runs, requests per second does.
    http: dict[str, dict[int, dict[str, Any]]] = {}
    with contextlib.ExitStack() as servers:
        ours = servers.enter_context(uvicorn_app(store))
        theirs = (servers.enter_context(mlflow_models_serve(
            f"models:/{model_name}@production", mlflow_uri, workdir / "mlflow-serve.log",
            serve_env)) if mlflow_uri else None)
        for n in http_rows:
            targets: dict[str, Target] = {
                OURS: (f"{ours}/predict", {"rows": rows[:n]}, time.process_time)}
            counts = {OURS: requests_for(requests, n)}
            if theirs is not None:
                base, pgid = theirs
                body = mlflow_body(model, rows[:n])
                results.setdefault("mlflow_max_abs_diff", {})[n] = check_mlflow_agrees(
                    base, body, model, rows[:n])
                targets[MLFLOW] = (f"{base}/invocations", body,
                                   functools.partial(process_group_cpu, pgid))
                counts[MLFLOW] = counts[OURS]
            if api_url:
                targets[API_GATEWAY] = (f"{api_url.rstrip('/')}/predict", {"rows": rows[:n]},
                                        None)
                counts[API_GATEWAY] = requests_for(api_requests, n)
            for name, stats in take_turns(targets, counts, concurrency, rounds).items():
                http.setdefault(name, {})[n] = stats
    results["http"] = http
    echo(format_table(results))
    return results


def mlflow_body(model: LoadedModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """MLflow's pyfunc input: the encoded features, named as the booster names them
    (the logged model has no feature transform of its own)."""
    encoded = model.predictor.transform.encode(criteo.rows_to_table(rows))
    data = [[None if np.isnan(x) else float(x) for x in row] for row in encoded]
    names = model.predictor.booster.feature_names or [f"f{i}" for i in range(encoded.shape[1])]
    return {"dataframe_split": {"columns": list(names), "data": data}}


def check_mlflow_agrees(base: str, body: dict[str, Any], model: LoadedModel,
                        rows: list[dict[str, Any]]) -> float:
    """Largest |mlflow - ours| on these rows: both must serve the same model."""
    import httpx

    answer = httpx.post(f"{base}/invocations", json=body, timeout=60).json()
    theirs = np.asarray(answer["predictions"], dtype=np.float64).reshape(-1)
    ours = model.predict(criteo.rows_to_table(rows))
    return float(np.max(np.abs(theirs - ours)))


def format_table(results: dict[str, Any]) -> str:
    lines = ["", "in-process (one request at a time)          rows   p50 ms   p99 ms"
                 "   CPU p50  CPU p99"]
    labels = {"model": "model (encode + inplace_predict)",
              "request": "request path (validate + convert + model)",
              "lambda": "Lambda handler (Mangum + FastAPI)",
              "explain": "Lambda handler, ?explain=true"}
    for key, label in labels.items():
        for size, s in results["in_process"].get(key, {}).items():
            lines.append(f"  {label:42s} {size:4d} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} "
                         f"{s['cpu_p50_ms']:9.3f} {s['cpu_p99_ms']:8.3f}")
    plog = results.get("prediction_log")
    if plog:
        lines.append(f"  prediction log at sample rate 1.0, 1 row: p50 {plog['off']['p50_ms']:.3f}"
                     f" ms off, {plog['on']['p50_ms']:.3f} ms on: {plog['p50_added_ms']:+.3f} ms "
                     f"({plog['on']['n']} alternating calls each; {plog['logged_rows']} rows "
                     f"logged, {plog['dropped_rows']} dropped)")
    lines.append("  CPU per row, Lambda handler: " + ", ".join(
        f"{size} row(s) {s['cpu_p50_ms'] * 1e3 / size:.1f} us"
        for size, s in results["in_process"]["lambda"].items()))
    lines += ["", f"HTTP, {results['concurrency']} concurrent keep-alive clients in a second "
                  "process; cores = CPU s per wall s (a one-worker server or the one-process "
                  "client at ~1 is the limit)",
              "  server                        rows   req/s   p50 ms   p99 ms  errors"
              "  server CPU ms/req  server cores  client cores"]
    for name, by_rows in results["http"].items():
        for size, s in by_rows.items():
            if s.get("n"):
                cpu = s.get("server_cpu_ms_per_request")
                cores = "-" if cpu is None else f"{cpu * s['rps'] / 1e3:.2f}"
                lines.append(f"  {name:28s} {size:5d} {s['rps']:7.0f} {s['p50_ms']:8.2f} "
                             f"{s['p99_ms']:8.2f} {s['errors']:7d} "
                             f"{'-' if cpu is None else f'{cpu:.2f}':>18s} {cores:>13s} "
                             f"{s['client_cpu_share']:13.2f}")
            else:
                lines.append(f"  {name:28s} {size:5d}  all {s['errors']} requests failed: "
                             f"{s['error_samples']}")
    ours, theirs = results["http"].get(OURS, {}), results["http"].get(MLFLOW, {})
    for size in sorted(set(ours) & set(theirs)):
        a, b = ours[size], theirs[size]
        if a.get("rps") and b.get("rps"):
            line = (f"  {size} row(s): this API / mlflow models serve = "
                    f"{a['rps'] / b['rps']:.1f}x the requests per second")
            if a.get("server_cpu_ms_per_request") and b.get("server_cpu_ms_per_request"):
                line += (f", {b['server_cpu_ms_per_request'] / a['server_cpu_ms_per_request']:.1f}x"
                         " less server CPU per request")
            lines.append(line)
    saturated = [f"{name} ({size} rows)" for name, by_rows in results["http"].items()
                 for size, s in by_rows.items() if s.get("client_cpu_share", 0) > 0.85]
    if saturated:
        lines.append("  the load generator was near one full core for: "
                     + ", ".join(saturated) + " -- those servers can do more than shown")
    if "mlflow_max_abs_diff" in results:
        lines.append(f"  max |mlflow - ours| per rows: {results['mlflow_max_abs_diff']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- ctr bench

def predict_qualifier(cloud: BenchCloud) -> str | None:
    """What the API invokes: the predict function's alias (AutoPublishAlias `live`, a
    published version with SnapStart), or None ($LATEST) if it has none."""
    aliases = cloud.client("lambda").list_aliases(
        FunctionName=cloud.outputs["PredictFunctionName"]).get("Aliases", [])
    return str(aliases[0]["Name"]) if aliases else None


def _invoke_predict(cloud: BenchCloud, event: dict[str, Any],
                    qualifier: str | None = None) -> float:
    started = time.perf_counter()
    resp = cloud.client("lambda").invoke(FunctionName=cloud.outputs["PredictFunctionName"],
                                         Payload=json.dumps(event).encode(),
                                         **({"Qualifier": qualifier} if qualifier else {}))
    seconds = time.perf_counter() - started
    body = json.loads(resp["Payload"].read() or b"null")
    if resp.get("FunctionError") or (body or {}).get("statusCode") != 200:
        raise CloudError(f"predict invoke failed: {str(body)[:500]}")
    return seconds


def measure_cold_start(cloud: BenchCloud, plan: Plan, row: dict[str, Any],
                       via_alias: bool = True) -> dict[str, Any]:
    """`plan.cold_starts` times: change the predict function's configuration (a new
    version, published behind the alias the API invokes, so a new execution
    environment: restored from the new version's snapshot) and time the first invoke
    through the alias; then warm invokes as baseline. `via_alias=False` invokes
    $LATEST instead: no snapshot there (in AWS neither), a full cold start."""
    event = api_gateway_event("POST", "/predict", {"rows": [row]})
    token = uuid.uuid4().hex[:8]
    qualifier = predict_qualifier(cloud) if via_alias else None
    cold, warm = [], []
    with function_env(cloud, "PredictFunction") as set_env:
        for i in range(plan.cold_starts):
            set_env(CTR_BENCH_COLD_START=f"{token}-{i}")
            cold.append(_invoke_predict(cloud, event, qualifier))
        warm = [_invoke_predict(cloud, event, qualifier) for _ in range(plan.warm_invokes)]
    return {"cold_s": cold, "warm_s": warm, "qualifier": qualifier}


_PROCESS_START = """
import json, sys, time
t0 = time.perf_counter()
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
event = json.loads(sys.argv[3])
answer = app.lambda_handler(event, type("Context", (), {
    "function_name": "bench-predict", "memory_limit_in_mb": 1024, "aws_request_id": "bench",
    "invoked_function_arn": "arn:aws:lambda:us-east-1:000000000000:function:bench"})())
print(json.dumps({"status": answer["statusCode"], "in_process_s": time.perf_counter() - t0}))
"""


def measure_process_start(cloud: BenchCloud, row: dict[str, Any], times: int = 3
                          ) -> list[float]:
    """A bare process start -> the first answered request: a fresh interpreter imports
    the predict handler (the same modules and settings as the function) and answers one
    1-row request from the cloud's bucket, timed from the spawn to the answer."""
    from ctr_infra.localcloud import aws_env, repo_root

    root = repo_root()
    env = {**os.environ, **cloud.function_env("PredictFunction"), **aws_env(cloud.cfg),
           "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "CtrBench"}
    event = json.dumps(api_gateway_event("POST", "/predict", {"rows": [row]}))
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _PROCESS_START, str(root / "functions" / "predict"),
             str(root / "layers" / "ctr" / "python"), event],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        elapsed = time.perf_counter() - started
        last = (done.stdout.strip().splitlines() or ["{}"])[-1]
        if done.returncode != 0 or json.loads(last).get("status") != 200:
            raise CloudError(f"process start failed: {done.stderr[-800:]} {last}")
        seconds.append(elapsed)
    return seconds


HTTP_SERVERS = {"this API on uvicorn": "uvicorn", "API Gateway -> Lambda": "api_gateway"}
MLFLOW_SERVER = "mlflow models serve"


def _latency_figures(fid: str, name: str, stats: dict[str, Any], base_name: str,
                     base: dict[str, Any], note: str = "") -> list[Figure]:
    return [figure(f"{fid}.p50_ms", f"{name} p50", stats["p50_ms"], "ms", better="lower",
                   n=stats["n"], spread={"kind": "p50-p99", "low": stats["p50_ms"],
                                         "high": stats["p99_ms"]},
                   baseline=(base_name, base["p50_ms"]), note=note),
            figure(f"{fid}.p99_ms", f"{name} p99", stats["p99_ms"], "ms", better="lower",
                   n=stats["n"], baseline=(base_name, base["p99_ms"]))]


def section(plan: Plan, cloud: BenchCloud, workdir: Path, echo: Echo,
            prepare_model: bool) -> SectionResult:
    """`prepare_model`: with no model served yet, run the pipeline once first (when the
    pipeline section did not run; if it ran and failed, there is nothing to serve)."""
    from ctr_infra.bench.pipeline import run_pipeline_once

    if load_pointer(cloud.store) is None:
        if not prepare_model:
            raise CloudError("no model is served: the pipeline section did not produce one")
        echo("    no model is served yet: one pipeline execution first (not reported)")
        run_pipeline_once(cloud, plan, workdir, echo)
    optional: dict[str, Any] = {k: v for k, v in (("http_rows", plan.serve_http_rows),
                                                  ("rounds", plan.serve_rounds))
                                if v is not None}
    r = run(cloud.store, mlflow_uri=cloud.cfg.mlflow_uri, api_url=cloud.outputs["LocalApiUrl"],
            requests=plan.serve_requests, api_requests=plan.serve_api_requests,
            concurrency=plan.serve_concurrency, workdir=workdir, echo=echo, **optional)
    figures: list[Figure] = []
    model_only = "model alone (encode + predict), in-process"
    for size, stats in r["in_process"]["lambda"].items():
        base = r["in_process"]["model"][size]
        fid, name = f"serving.in_process.{size}_rows", f"in-process handler, {size} row(s):"
        figures += _latency_figures(fid, name, stats, model_only, base,
                                    note="Mangum + FastAPI + validation + model")
        figures.append(figure(f"{fid}.rows_per_s", f"{name} throughput",
                              size / (stats["mean_ms"] / 1e3), "rows/s", better="higher",
                              n=stats["n"], baseline=(model_only,
                                                      size / (base["mean_ms"] / 1e3))))
    plog = r["prediction_log"]
    figures.append(figure(          # a difference can be negative (noise): the ratio is the check
        "serving.prediction_log.p50_ms",
        "Lambda handler p50 with the prediction log at sample rate 1.0, 1 row",
        plog["on"]["p50_ms"], "ms", better="lower", n=plog["on"]["n"],
        baseline=("handler p50 with the log off", plog["off"]["p50_ms"]),
        note=f"added p50 {plog['p50_added_ms']:+.3f} ms (target <= 0.2 ms); calls "
             "alternating off/on; the log's thread sends to an accept-all client"))
    mlflow = r["http"].get(MLFLOW_SERVER, {})
    for server, key in HTTP_SERVERS.items():
        for size, stats in r["http"].get(server, {}).items():
            base = mlflow.get(size)
            if not stats.get("n") or not (base or {}).get("n"):
                raise CloudError(f"HTTP load on {server} / {MLFLOW_SERVER} with {size} "
                                 f"row(s) got no answer: {stats}, {base}")
            fid = f"serving.http.{key}.{size}_rows"
            name = f"{server}, {size} row(s), {stats['concurrency']} clients:"
            errors = stats["errors"] + base["errors"]
            diff = r.get("mlflow_max_abs_diff", {}).get(size)
            note = (f"{stats['requests']} requests; mlflow is sent encoded features"
                    + ("" if diff is None else f" (max |mlflow - ours| {diff:.1e})")
                    + (f"; {errors} failed requests" if errors else ""))
            figures += _latency_figures(fid, name, stats, MLFLOW_SERVER, base, note=note)
            figures.append(figure(f"{fid}.rps", f"{name} throughput", stats["rps"], "req/s",
                                  better="higher", n=stats["n"],
                                  baseline=(MLFLOW_SERVER, base["rps"])))
    rows = newest_rows(cloud.store, 1)
    cold = measure_cold_start(cloud, plan, rows[0])
    warm_p50 = statistics.median(cold["warm_s"])
    figures.append(figure(
        "serving.cold_start_s", "predict function cold start (to first answer)",
        statistics.median(cold["cold_s"]), "s", better="lower", n=len(cold["cold_s"]),
        spread=min_max(cold["cold_s"]) if len(cold["cold_s"]) > 1 else None,
        baseline=(f"warm invoke (median of {len(cold['warm_s'])})", warm_p50),
        note=f"Lambda Invoke of the alias the API uses ({cold['qualifier']}) after a "
             "configuration update (a new version): a new environment restored from the "
             "version's snapshot (the local executor forks its snapshot template), the "
             "pointer re-read, 1-row predict"))
    echo(f"    cold start {figures[-1]['value']:.2f}s (min-max "
         f"{min(cold['cold_s']):.2f}-{max(cold['cold_s']):.2f}s), warm invoke "
         f"{warm_p50 * 1e3:.0f} ms")
    process = measure_process_start(cloud, rows[0])
    figures.append(figure(
        "serving.process_start_s", "predict handler: bare process start to first answer",
        statistics.median(process), "s", better="lower", n=len(process),
        spread=min_max(process) if len(process) > 1 else None,
        note="a fresh interpreter imports functions/predict/app.py and answers one 1-row "
             "request from the bucket (what a Lambda cold start without SnapStart costs)"))
    echo(f"    process start to first answer {figures[-1]['value']:.2f}s (min-max "
         f"{min(process):.2f}-{max(process):.2f}s)")
    for size, stats in r["in_process"].get("explain", {}).items():
        base = r["in_process"]["lambda"][size]
        figures += _latency_figures(f"serving.explain.{size}_rows",
                                    f"in-process handler with ?explain=true, {size} row(s):",
                                    stats, "the same request without explain", base,
                                    note="pred_contribs + mapping to the 39 raw fields")
    return figures, {**r, "cold_start": cold, "process_start_s": process}


# --------------------------------------------------------------------------- offline setup

@contextlib.contextmanager
def offline_world(workdir: Path, parts: int = 3, rows_per_part: int = 20_000,
                  num_boost_round: int = 200) -> Iterator[tuple[Store, str]]:
    """Memory S3 + SQLite MLflow + synthetic parts, trained, promoted and exported by
    the pipeline's own code (ctr.registry.train_step, ctr.bundle)."""
    from dataclasses import replace

    from mlflow import MlflowClient

    from ctr import synth
    from ctr.bundle import publish_production
    from ctr.registry.train_step import TrainPolicy, train_and_register
    from ctr.training import TrainParams, WindowSpec
    from ctr_infra.memory_s3 import MemoryS3

    store = Store(MemoryS3(), "bench")
    for i in range(parts):
        table, _ = synth.generate_table(rows_per_part, seed=7, start_row=i * rows_per_part)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        store.put(layout.parquet_key(i), sink.getvalue().to_pybytes())
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("criteo_ctr", artifact_location=(workdir / "artifacts").as_uri())
    # The gate's row counts scaled to this small world (the rule stays the production one).
    holdout = rows_per_part * parts // 10
    policy = TrainPolicy(window=WindowSpec(holdout_min_rows=holdout), min_new_rows=holdout)
    outcome = train_and_register(
        store, client, model_name="criteo_ctr_model", experiment_name="criteo_ctr",
        params=replace(TrainParams(), num_boost_round=num_boost_round), policy=policy)
    if not outcome.promoted:
        raise RuntimeError(f"offline training did not promote a model: {outcome}")
    publish_production(client, store, "criteo_ctr_model")
    yield store, uri


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctr_infra.bench.serve",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true",
                        help="build a model in memory/SQLite first (no local cloud needed)")
    parser.add_argument("--api", help="predict API base URL (API Gateway)")
    parser.add_argument("--mlflow", help="MLflow tracking URI for `mlflow models serve`")
    parser.add_argument("--bucket", help="bucket with the serving bundle and Parquet parts")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: boto3's)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--api-requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3,
                        help="HTTP targets take turns in this many slices of the requests")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    options = {"requests": args.requests, "concurrency": args.concurrency,
               "api_requests": args.api_requests, "rounds": args.rounds}
    if args.offline:
        with tempfile.TemporaryDirectory(prefix="ctr-bench-serve-") as tmp, \
                offline_world(Path(tmp)) as (store, uri):
            results = run(store, mlflow_uri=args.mlflow or uri, api_url=args.api,
                          workdir=Path(tmp), **options)
    else:
        if not args.bucket:
            parser.error("--bucket is required unless --offline")
        from ctr.storage import make_s3_client

        store = Store(make_s3_client(args.endpoint_url), args.bucket)
        results = run(store, mlflow_uri=args.mlflow, api_url=args.api, **options)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
