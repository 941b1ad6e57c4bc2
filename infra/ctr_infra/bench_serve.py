"""Serving latency and throughput (printed figures, not a timed test).

What is measured, on the production bundle of a bucket and on real rows of its newest
Parquet part:

* in-process, for 1, 100 and 1,000 rows, p50/p99 of
  - the model alone: `transform.encode` + XGBoost in-place prediction,
  - the request path: body validation + `ctr.criteo` conversion + prediction,
  - the Lambda handler: an API Gateway event through Mangum and FastAPI, in-process;
* over HTTP, with one load generator (a second process on 127.0.0.1 running a
  bounded loop of N requests at fixed concurrency, keep-alive connections) against
  - this API on uvicorn (same app, same process as the bench),
  - API Gateway -> Lambda on the local cloud, when its base URL is given,
  - `mlflow models serve -m models:/<model>@production --env-manager local` on the
    same registered model (MLflow's pyfunc has no feature transform, so it is sent
    the already-encoded features: less work for it than raw rows are for us).

`--offline` builds everything it needs first (in-memory S3, a throw-away SQLite MLflow
registry, synthetic Parquet parts, the real train/register/promote code and the real
reload export), so the in-process, uvicorn and `mlflow models serve` figures need no
local cloud.

    python -m ctr_infra.bench_serve --offline
    python -m ctr_infra.bench_serve --api <LocalApiUrl> --mlflow <MlflowUrl> --bucket <b>
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctr import criteo, layout
from ctr.bundle import load_bundle, load_pointer
from ctr.errors import NoModelError, NotFoundError
from ctr.schema import FEATURE_COLUMNS
from ctr.serving import schemas
from ctr.serving.app import LoadedModel, ServingSettings, create_app
from ctr.storage import Store

IN_PROCESS_SIZES = (1, 100, 1000)
LOCALHOST = "127.0.0.1"


# --------------------------------------------------------------------------- timing

def summarize(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return summarize(samples)


def api_gateway_event(method: str, path: str, body: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it to the predict function."""
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"content-type": "application/json", "host": "bench"},
        "multiValueHeaders": {}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": {"proxy": path[1:]},
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


def bench_in_process(store: Store, model: LoadedModel, rows: list[dict[str, Any]],
                     sizes: tuple[int, ...] = IN_PROCESS_SIZES, repeats: int = 1000
                     ) -> dict[str, dict[int, dict[str, float]]]:
    from mangum import Mangum

    settings = ServingSettings(bucket_name=store.bucket, pointer_ttl_seconds=3600)
    handler = Mangum(create_app(settings, store_factory=lambda: store), lifespan="off")
    context: Any = _LambdaContext()
    out: dict[str, dict[int, dict[str, float]]] = {"model": {}, "request": {}, "lambda": {}}
    for size in sizes:
        body = {"rows": rows[:size]}
        table = criteo.rows_to_table(rows[:size])
        event = api_gateway_event("POST", "/predict", body)
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
    return out


# --------------------------------------------------------------------------- load generator

def loadgen(url: str, body: bytes, requests: int, concurrency: int, warmup: int,
            timeout: float) -> dict[str, Any]:
    """Run in the child process: `requests` POSTs of `body` from `concurrency` threads,
    each with its own keep-alive connection, after `warmup` unmeasured ones."""
    import httpx

    headers = {"content-type": "application/json"}
    tickets = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(limit: int, record: bool) -> None:
        with httpx.Client(timeout=timeout) as client:
            while next(tickets) < limit:
                t0 = time.perf_counter()
                try:
                    response = client.post(url, content=body, headers=headers)
                    ok, why = response.status_code == 200, f"HTTP {response.status_code}"
                except httpx.HTTPError as err:
                    ok, why = False, type(err).__name__
                elapsed = time.perf_counter() - t0
                if record:
                    with lock:
                        (latencies.append(elapsed) if ok else errors.append(why))

    def run(limit: int, record: bool) -> float:
        nonlocal tickets
        tickets = itertools.count()
        threads = [threading.Thread(target=worker, args=(limit, record))
                   for _ in range(concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    run(warmup, record=False)
    wall = run(requests, record=True)
    stats = summarize(latencies) if latencies else {"n": 0}
    return {**stats, "requests": requests, "concurrency": concurrency,
            "errors": len(errors), "error_samples": sorted(set(errors))[:3],
            "seconds": wall, "rps": len(latencies) / wall if wall else 0.0}


def run_loadgen(url: str, body: dict[str, Any], requests: int, concurrency: int,
                warmup: int | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """The load generator in a second process, so it never shares a GIL with a server."""
    job = {"url": url, "body": json.dumps(body), "requests": requests,
           "concurrency": concurrency, "warmup": warmup or 2 * concurrency,
           "timeout": timeout}
    done = subprocess.run([sys.executable, "-m", "ctr_infra.bench_serve", "--loadgen"],
                          input=json.dumps(job), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


# --------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, alive: Callable[[], bool], timeout_s: float, what: str) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before it answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout_s:.0f}s")


@contextlib.contextmanager
def uvicorn_app(store: Store) -> Iterator[str]:
    """This API on uvicorn in a thread of this process (one worker, like mlflow's)."""
    import uvicorn

    settings = ServingSettings(bucket_name=store.bucket, pointer_ttl_seconds=5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, store_factory=lambda: store),
                                           host=LOCALHOST, port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{LOCALHOST}:{port}"
    try:
        _wait_http(f"{base}/health", thread.is_alive, 30, "uvicorn")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def mlflow_models_serve(model_uri: str, tracking_uri: str, log_path: Path,
                        env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow models serve` in its own process group, stopped by that group's id."""
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
        _wait_http(f"{base}/ping", lambda: proc.poll() is None, 180, "mlflow models serve")
        yield base
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
    table = pq.read_table(pa.BufferReader(store.get(max(keys, key=layout.index_of)).body),
                          columns=list(FEATURE_COLUMNS)).slice(0, n)
    rows = table.to_pylist()
    return (rows * (n // len(rows) + 1))[:n]


def run(store: Store, *, mlflow_uri: str | None = None, api_url: str | None = None,
        model_name: str = "criteo_ctr_model", requests: int = 2000, concurrency: int = 4,
        api_requests: int = 300, http_rows: tuple[int, ...] = (1, 100),
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
    results["in_process"] = bench_in_process(store, model, rows)

    http: dict[str, dict[int, dict[str, Any]]] = {}
    with uvicorn_app(store) as base:
        http["this API on uvicorn"] = {
            n: run_loadgen(f"{base}/predict", {"rows": rows[:n]}, requests, concurrency)
            for n in http_rows}
    if api_url:
        http["API Gateway -> Lambda"] = {
            n: run_loadgen(f"{api_url.rstrip('/')}/predict", {"rows": rows[:n]},
                           api_requests, concurrency)
            for n in http_rows}
    if mlflow_uri:
        with mlflow_models_serve(f"models:/{model_name}@production", mlflow_uri,
                                 workdir / "mlflow-serve.log", serve_env) as base:
            http["mlflow models serve"] = {}
            for n in http_rows:
                body = mlflow_body(model, rows[:n])
                results.setdefault("mlflow_max_abs_diff", {})[n] = check_mlflow_agrees(
                    base, body, model, rows[:n])
                http["mlflow models serve"][n] = run_loadgen(f"{base}/invocations", body,
                                                             requests, concurrency)
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
    lines = ["", "in-process (one request at a time)           rows   p50 ms   p99 ms"]
    labels = {"model": "model (encode + inplace_predict)",
              "request": "request path (validate + convert + model)",
              "lambda": "Lambda handler (Mangum + FastAPI)"}
    for key, label in labels.items():
        for size, s in results["in_process"][key].items():
            lines.append(f"  {label:42s} {size:5d} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f}")
    lines += ["", f"HTTP, {results['concurrency']} concurrent keep-alive clients in a second "
                  "process", "  server                         rows   req/s   p50 ms   p99 ms"
                         "  errors"]
    for name, by_rows in results["http"].items():
        for size, s in by_rows.items():
            if s.get("n"):
                lines.append(f"  {name:28s} {size:6d} {s['rps']:7.0f} {s['p50_ms']:8.2f} "
                             f"{s['p99_ms']:8.2f} {s['errors']:7d}")
            else:
                lines.append(f"  {name:28s} {size:6d}  all {s['errors']} requests failed: "
                             f"{s['error_samples']}")
    ours, theirs = (results["http"].get("this API on uvicorn", {}),
                    results["http"].get("mlflow models serve", {}))
    for size in set(ours) & set(theirs):
        if theirs[size].get("rps"):
            lines.append(f"  throughput ratio, {size} row(s): this API / mlflow models serve "
                         f"= {ours[size]['rps'] / theirs[size]['rps']:.1f}x")
    if "mlflow_max_abs_diff" in results:
        lines.append(f"  max |mlflow - ours| per rows: {results['mlflow_max_abs_diff']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- offline setup

@contextlib.contextmanager
def offline_world(workdir: Path, parts: int = 3, rows_per_part: int = 20_000,
                  num_boost_round: int = 200) -> Iterator[tuple[Store, str]]:
    """Memory S3 + SQLite MLflow + synthetic parts, trained, promoted and exported by
    the pipeline's own code (ctr.registry.train_and_register, ctr.bundle)."""
    from dataclasses import replace

    from mlflow import MlflowClient

    from ctr import registry, synth
    from ctr.bundle import publish_production
    from ctr.training import TrainParams
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
    outcome = registry.train_and_register(
        store, client, model_name="criteo_ctr_model", experiment_name="criteo_ctr",
        params=replace(TrainParams(), num_boost_round=num_boost_round))
    if not outcome.get("promoted"):
        raise RuntimeError(f"offline training did not promote a model: {outcome}")
    publish_production(client, store, "criteo_ctr_model")
    yield store, uri


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctr_infra.bench_serve",
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
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.loadgen:        # child process of run_loadgen
        job = json.loads(sys.stdin.read())
        print(json.dumps(loadgen(job["url"], job["body"].encode(), job["requests"],
                                 job["concurrency"], job["warmup"], job["timeout"])))
        return 0

    options = {"requests": args.requests, "concurrency": args.concurrency,
               "api_requests": args.api_requests}
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
