"""Serving latency and throughput (printed figures, not a timed test).

What is measured, on the production bundle of a bucket and on real rows of its newest
Parquet part:

* in-process, for 1, 100 and 1,000 rows, p50/p99 of wall time and of the thread's CPU
  time (on a shared machine the wall p99 is mostly waiting for a core) of
  - the model alone: `transform.encode` + XGBoost in-place prediction,
  - the request path: body validation + `ctr.criteo` conversion + prediction,
  - the Lambda handler: an API Gateway event through Mangum and FastAPI, in-process;
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

    python -m ctr_infra.bench_serve --offline
    python -m ctr_infra.bench_serve --api <LocalApiUrl> --mlflow <MlflowUrl> --bucket <b>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
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
OURS, MLFLOW, API_GATEWAY = "this API on uvicorn", "mlflow models serve", "API Gateway -> Lambda"


def requests_for(requests: int, rows: int) -> int:
    """Fewer requests for bigger ones (2,000 x 1 row, 200 x 100, 100 x 1,000 rows)."""
    return max(100, requests // max(1, rows // 10))


# --------------------------------------------------------------------------- timing

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


def summarize(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 20) -> dict[str, float]:
    """Wall-clock p50/p99 of `fn`, plus the thread's CPU time per call (`cpu_*`): on a
    busy machine the wall p99 is mostly time spent waiting for a core, the CPU time is
    the work itself."""
    for _ in range(warmup):
        fn()
    samples, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    cpu_ms = np.asarray(cpu) * 1e3
    return {**summarize(samples), "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
            "cpu_p99_ms": float(np.percentile(cpu_ms, 99))}


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
    each with its own keep-alive connection, after `warmup` unmeasured ones.

    The client is the standard library's `http.client`: it costs about a third of the
    CPU per request that httpx does (measured), so the generator saturates later. Its own
    CPU time is reported (`client_cpu_share`: CPU seconds per wall second, at most ~1
    for one process): near 1, the generator, not the server, set the rate.
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"content-type": "application/json"}
    tickets = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            # Headers and body go out in two writes: without this, Nagle's algorithm
            # can hold the body back until the server's (delayed) ACK of the headers.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def worker(limit: int, record: bool) -> None:
        # Reconnects by itself after a close; a failed request drops the connection.
        conn = Connection(parts.hostname or LOCALHOST, parts.port, timeout=timeout)
        try:
            while next(tickets) < limit:
                t0 = time.perf_counter()
                try:
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    response.read()
                    ok, why = response.status == 200, f"HTTP {response.status}"
                except (OSError, http.client.HTTPException) as err:
                    ok, why = False, type(err).__name__
                    conn.close()
                elapsed = time.perf_counter() - t0
                if record:
                    with lock:
                        (latencies.append(elapsed) if ok else errors.append(why))
        finally:
            conn.close()

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
    cpu0 = time.process_time()
    wall = run(requests, record=True)
    cpu = time.process_time() - cpu0
    return {"latencies": latencies, "errors": errors, "seconds": wall, "client_cpu": cpu,
            "requests": requests, "concurrency": concurrency}


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several `run_loadgen` results for the same target."""
    latencies = [x for r in runs for x in r["latencies"]]
    errors = [e for r in runs for e in r["errors"]]
    wall, requests = sum(r["seconds"] for r in runs), sum(r["requests"] for r in runs)
    client_cpu = sum(r["client_cpu"] for r in runs)
    stats = summarize(latencies) if latencies else {"n": 0}
    merged = {**stats, "requests": requests, "concurrency": runs[0]["concurrency"],
              "errors": len(errors), "error_samples": sorted(set(errors))[:3],
              "seconds": wall, "rps": len(latencies) / wall if wall else 0.0,
              "client_cpu_share": client_cpu / wall if wall else 0.0,
              "client_cpu_us_per_request": client_cpu / requests * 1e6}
    if all("server_cpu" in r for r in runs):
        sent = sum(r["requests"] + r["warmup"] for r in runs)
        merged["server_cpu_ms_per_request"] = sum(r["server_cpu"] for r in runs) / sent * 1e3
    return merged


def run_loadgen(url: str, body: dict[str, Any], requests: int, concurrency: int,
                warmup: int | None = None, timeout: float = 60.0,
                server_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """The load generator in a second process, so it never shares a GIL with a server.
    `server_cpu` (CPU seconds of the server so far) adds the server's CPU time per
    request (warm-up included) -- what a request costs, whatever else the machine runs."""
    warmup = warmup or max(100, 2 * concurrency)
    job = {"url": url, "body": json.dumps(body), "requests": requests,
           "concurrency": concurrency, "warmup": warmup, "timeout": timeout}
    cpu0 = server_cpu() if server_cpu else 0.0
    done = subprocess.run([sys.executable, "-m", "ctr_infra.bench_serve", "--loadgen"],
                          input=json.dumps(job), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result = dict(json.loads(done.stdout))
    result["warmup"] = warmup
    if server_cpu:
        result["server_cpu"] = server_cpu() - cpu0
    return result


Target = tuple[str, dict[str, Any], Callable[[], float] | None]   # url, body, server CPU


def take_turns(targets: dict[str, Target], requests: dict[str, int], concurrency: int,
               rounds: int) -> dict[str, dict[str, Any]]:
    """Each target gets its requests in `rounds` slices, the targets taking turns (A B C,
    C B A, A B C, ...), so a change in what else the machine runs during the benchmark
    hits every target alike. Only the first slice of each target has a long warm-up."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for i in range(rounds):
        for name in (list(targets) if i % 2 == 0 else list(reversed(targets))):
            url, body, server_cpu = targets[name]
            runs[name].append(run_loadgen(
                url, body, max(1, requests[name] // rounds), concurrency,
                warmup=None if i == 0 else 2 * concurrency, server_cpu=server_cpu))
    return {name: merge_runs(r) for name, r in runs.items()}


def process_group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) so far of the live processes in group `pgid` (/proc)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                      # the process ended meanwhile
        if int(fields[2]) == pgid:        # fields 5 (pgrp), 14 (utime), 15 (stime)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


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
        _wait_http(f"{base}/ping", lambda: proc.poll() is None, 180, "mlflow models serve")
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
    table = pq.read_table(pa.BufferReader(store.get(max(keys, key=layout.index_of)).body),
                          columns=list(FEATURE_COLUMNS)).slice(0, n)
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
              "lambda": "Lambda handler (Mangum + FastAPI)"}
    for key, label in labels.items():
        for size, s in results["in_process"][key].items():
            lines.append(f"  {label:42s} {size:4d} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} "
                         f"{s['cpu_p50_ms']:9.3f} {s['cpu_p99_ms']:8.3f}")
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="HTTP targets take turns in this many slices of the requests")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.loadgen:        # child process of run_loadgen
        job = json.loads(sys.stdin.read())
        print(json.dumps(loadgen(job["url"], job["body"].encode(), job["requests"],
                                 job["concurrency"], job["warmup"], job["timeout"])))
        return 0

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
