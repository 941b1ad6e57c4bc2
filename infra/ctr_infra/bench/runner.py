"""`ctr bench [--quick]`: the whole system measured side by side, in one process session
(so ratios compare figures taken under the same load), written as one results file.

Sections, in the order they run:

* **sizes**: unzipped code + layers of each function against Lambda's 250 MB
  (`ctr_infra.sizes`).
* **training**: this trainer against the seed's recipe on known-truth synthetic rows,
  with the Bayes-optimal and constant-prior bounds (`ctr_infra.bench_train`). It runs
  before the data section because its peak RSS is the process's peak so far.
* **data**: chunk and aggregate throughput on a 10-chunk synthetic file against
  `gzip -dc` and `pyarrow.csv.read_csv` on the same bytes, and the cost of a late
  chunk against the seed's re-read-from-line-0 method (`ctr_infra.bench_data`).
* **pipeline**: one Step Functions execution on N new lines on the local cloud, wall
  time per state from the execution history.
* **serving**: in-process, uvicorn, API Gateway -> Lambda and `mlflow models serve`
  under one load generator (`ctr_infra.bench_serve`), and the predict function's cold
  start (a configuration update forces a new execution environment; the first invoke
  after it is timed from the client, process start to first answer).

**Where the cloud comes from.** By default a *private* local cloud (LocalStack + MLflow
on free loopback ports, a temporary state directory, stack `ctr-bench`), started only
when the pipeline or serving section runs and stopped by PID at the end, exactly as the
test session's cloud. A running `make up` cloud is never used by default: the pipeline
section registers and promotes a model and moves the serving pointer, which would
change what the user's API serves, and the user's scheduled executions would disturb
the timings. `existing=CloudConfig` (CLI `--existing-cloud`) measures on a running
cloud instead, only if its bucket data prefixes and model registry are empty (the test
suite uses this with its session cloud); the bench's data is left there.

Every figure is a dict with a stable shape (see `figure`): value and unit, the number
of samples and their spread, the baseline it is compared with (same unit) and
ratio = value / baseline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctr_infra import localcloud
from ctr_infra.localcloud import CloudConfig, CloudError

SCHEMA = "ctr-bench/1"
SECTIONS = ("sizes", "training", "data", "pipeline", "serving")
CLOUD_SECTIONS = frozenset({"pipeline", "serving"})
DEFAULT_OUTPUT_DIR = localcloud.REPO_ROOT / ".local" / "bench"
LAMBDA_MAX_MEMORY_MB = 10_240.0
BENCH_STACK = "ctr-bench"
DATA_PREFIXES = ("raw/", "chunks/", "parquet/", "rejects/", "serving/", "state/")

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one bench run."""

    mode: str
    data_chunk_lines: int = 200_000
    data_chunks: int = 10
    data_repeats: int = 3
    train_rows: int = 2_000_000
    # XGBoost threads, the same for both trainers (0 = all cores). One: on a shared
    # 2-core machine all-core OpenMP was measured 8x slower (10,000 rows), which would
    # make the figure measure the neighbours; the ratio to the seed is per core.
    train_nthread: int = 1
    pipeline_lines: int = 1_000_000
    pipeline_timeout_s: float = 1800.0
    serve_requests: int = 2000
    serve_api_requests: int = 300
    serve_concurrency: int = 4
    # None: bench_serve's own defaults (rows per HTTP request; interleaved load rounds)
    serve_http_rows: tuple[int, ...] | None = None
    serve_rounds: int | None = None
    cold_starts: int = 5
    warm_invokes: int = 30
    # The isolated-import check of `python -m ctr_infra.sizes` (sufficiency, not size):
    # 16 s on an idle machine, 4 minutes on a loaded one; off by default.
    sizes_probe: bool = False
    # Start a private cloud in the background while the offline sections run (saves its
    # ~1 minute; their figures are then taken beside its start, so quick only).
    start_cloud_early: bool = False


FULL = Plan(mode="full")
QUICK = replace(FULL, mode="quick", data_chunk_lines=2_000, data_repeats=2,
                train_rows=10_000, pipeline_lines=20_000,
                pipeline_timeout_s=600.0, serve_requests=200, serve_api_requests=40,
                serve_http_rows=(1, 100), serve_rounds=1, cold_starts=2, warm_invokes=10,
                start_cloud_early=True)


# --------------------------------------------------------------------------- figures

def figure(fid: str, name: str, value: float, unit: str, *, better: str, n: int = 1,
           spread: dict[str, Any] | None = None,
           baseline: tuple[str, float] | None = None, note: str = "") -> dict[str, Any]:
    """One measured figure. `baseline` is (what, value in the same unit); ratio is
    value / baseline. `better` says which direction is good: "lower" or "higher"."""
    base, ratio = None, None
    if baseline is not None:
        base = {"name": baseline[0], "value": float(baseline[1]), "unit": unit}
        ratio = float(value) / float(baseline[1]) if baseline[1] else None
    return {"id": fid, "name": name, "value": float(value), "unit": unit, "n": int(n),
            "spread": spread, "baseline": base, "ratio": ratio, "better": better,
            "note": note}


def min_max(values: list[float]) -> dict[str, Any]:
    return {"kind": "min-max", "low": float(min(values)), "high": float(max(values))}


def rates(amount: float, seconds: list[float]) -> list[float]:
    return [amount / s for s in seconds if s > 0]


def rate_figure(fid: str, name: str, amount: float, unit: str, seconds: list[float], *,
                baseline: tuple[str, list[float]] | None = None, note: str = ""
                ) -> dict[str, Any]:
    """amount/s over repeated timings: the median rate, min-max spread; the baseline's
    rate is the median over its own timings of the same amount."""
    ours = rates(amount, seconds)
    base = None if baseline is None else (baseline[0],
                                          statistics.median(rates(amount, baseline[1])))
    return figure(fid, name, statistics.median(ours), unit, better="higher", n=len(ours),
                  spread=min_max(ours) if len(ours) > 1 else None, baseline=base, note=note)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# --------------------------------------------------------------------------- machine

def _first_line_with(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line
    return None


def machine() -> dict[str, Any]:
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal")
    os_name = _first_line_with("/etc/os-release", "PRETTY_NAME=")
    return {
        "cpu_model": _first_line_with("/proc/cpuinfo", "model name") or platform.processor()
        or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None,
        "os": ((os_name.split("=", 1)[1].strip('"') if os_name else platform.system())
               + f" (kernel {platform.release()})"),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- the cloud

@dataclass
class BenchCloud:
    cfg: CloudConfig
    outputs: dict[str, str]
    private: bool
    startup_s: float
    _clients: dict[str, Any] = field(default_factory=dict)
    keep_state: bool = False        # a section failed: keep a private cloud's logs

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = localcloud.boto3_client(self.cfg, service)
        return self._clients[service]

    @property
    def store(self) -> Any:
        from ctr.storage import Store

        return Store(self.client("s3"), self.outputs["BucketName"])

    def describe(self) -> dict[str, Any]:
        return {"private": self.private, "stack": self.cfg.stack_name,
                "endpoint_url": self.cfg.endpoint_url, "mlflow_uri": self.cfg.mlflow_uri,
                "startup_s": self.startup_s}


@contextlib.contextmanager
def _aws_env(cfg: CloudConfig) -> Iterator[None]:
    """AWS_* pointing at this cloud for the duration (as the test session does)."""
    env = localcloud.aws_env(cfg)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def private_cloud(echo: Echo) -> Iterator[BenchCloud]:
    """A fresh local cloud on free ports in a temp state dir, stopped by PID at the end.
    The state dir is removed afterwards, unless something failed (its path is printed)."""
    from ctr_infra.commands.cloud import bring_up

    state = Path(tempfile.mkdtemp(prefix="ctr-bench-cloud-"))
    cfg = CloudConfig(state_dir=state, localstack_port=localcloud.free_port(),
                      mlflow_port=localcloud.free_port(), stack_name=BENCH_STACK)
    failed = True
    with _aws_env(cfg):
        try:
            echo(f"==> private local cloud on {cfg.endpoint_url} (state {state})")
            t0 = time.monotonic()
            outputs = bring_up(cfg, schedule_on=False, quiet=True)
            startup = time.monotonic() - t0
            echo(f"    ready after {startup:.1f}s")
            cloud = BenchCloud(cfg, outputs, private=True, startup_s=startup)
            yield cloud
            failed = cloud.keep_state
        finally:
            localcloud.stop(cfg)
            if failed:
                echo(f"    kept the bench cloud's state and logs in {state}")
            else:
                shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def started_early(cm: contextlib.AbstractContextManager[BenchCloud]
                  ) -> Iterator[Callable[[], BenchCloud]]:
    """Enter `cm` in a background thread now; yield a function that waits for the start
    and returns the cloud (or raises its error); exit `cm` at the end."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-cloud") as pool:
        future = pool.submit(cm.__enter__)
        completed = False
        try:
            yield future.result
            completed = True
        finally:
            if future.exception() is None:          # waits for the start to end
                future.result().keep_state |= not completed
                cm.__exit__(None, None, None)


@contextlib.contextmanager
def existing_cloud(cfg: CloudConfig) -> Iterator[BenchCloud]:
    """A running local cloud, used only if it holds no data and no model."""
    outputs = localcloud.read_outputs(cfg)
    if not outputs.get("BucketName") or not localcloud.running_pid(cfg, "localstack"):
        raise CloudError(f"no running local cloud in {cfg.state_dir} (`make up`, or run "
                         "without --existing-cloud to use a private one)")
    with _aws_env(cfg):
        cloud = BenchCloud(cfg, outputs, private=False, startup_s=0.0)
        used = [p for p in DATA_PREFIXES if next(iter(cloud.store.list_keys(p)), None)]
        model = _function_env(cloud, "TrainFunction").get("MODEL_NAME", "criteo_ctr_model")
        from mlflow import MlflowClient

        versions = MlflowClient(tracking_uri=cfg.mlflow_uri).search_model_versions(
            f"name='{model}'")
        if used or versions:
            raise CloudError(
                f"the running cloud ({cfg.stack_name}) holds data ({', '.join(used) or '-'}) "
                f"or {len(versions)} version(s) of {model}: the bench would mix its data and "
                "models with them. Run `ctr bench` without --existing-cloud (a private "
                "cloud) or empty that cloud first.")
        yield cloud


def _function_env(cloud: BenchCloud, logical: str) -> dict[str, str]:
    conf = cloud.client("lambda").get_function_configuration(
        FunctionName=cloud.outputs[f"{logical}Name"])
    return dict(conf.get("Environment", {}).get("Variables", {}))


def set_function_env(cloud: BenchCloud, logical: str, variables: dict[str, str],
                     timeout_s: float = 60) -> None:
    """Replace a deployed function's environment and wait until the update is live
    (LocalStack then starts new execution environments)."""
    lam = cloud.client("lambda")
    name = cloud.outputs[f"{logical}Name"]
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": variables})
    deadline = time.monotonic() + timeout_s
    while lam.get_function_configuration(FunctionName=name).get(
            "LastUpdateStatus") != "Successful":
        if time.monotonic() > deadline:
            raise CloudError(f"{name}: configuration update not live after {timeout_s:.0f}s")
        time.sleep(0.2)


@contextlib.contextmanager
def function_env(cloud: BenchCloud, logical: str, **changes: str) -> Iterator[
        Callable[..., None]]:
    """Change variables of a function for a block, restoring the original environment
    afterwards; yields a setter for further changes inside the block."""
    original = _function_env(cloud, logical)

    def apply(**more: str) -> None:
        set_function_env(cloud, logical, {**original, **changes, **more})

    apply()
    try:
        yield apply
    finally:
        set_function_env(cloud, logical, original)


# --------------------------------------------------------------------------- sections

def section_sizes(plan: Plan, echo: Echo) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ctr_infra import sizes

    report = sizes.measure(probe=plan.sizes_probe)
    figures = []
    for name, f in report["functions"].items():
        probe = f["isolated_import"]
        checked = ("isolated import: `python -m ctr_infra.sizes`" if probe is None else
                   "isolated import ok" if probe["ok"] else f"isolated import FAILED {probe}")
        figures.append(figure(
            f"sizes.{name}.total_mb", f"{name}: code + layers, unzipped", f["total_mb"], "MB",
            better="lower", baseline=("Lambda zip limit", report["limit_mb"]),
            note=f"{f['layer']}; {'fits' if f['fits'] else 'does NOT fit'}; {checked}"))
    echo(sizes.to_markdown(report))
    return figures, report


def section_training(plan: Plan, echo: Echo) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ctr_infra import bench_train

    report = bench_train.run(rows=plan.train_rows, nthread=plan.train_nthread)
    echo(bench_train.to_markdown(report))
    ours, seed, bayes, prior = report["results"]
    seed_name = "seed recipe (cat.codes, 200 rounds)"
    bounds = (f"Bayes-optimal {bayes['logloss']:.5f}, constant prior {prior['logloss']:.5f}; "
              f"normalized gap 0 = Bayes, 1 = prior")
    rows = (f"{report['train_rows']:,} train / {report['holdout_rows']:,} holdout rows, "
            f"{plan.train_nthread or 'all'} XGBoost thread(s) each; n=1")
    figures = [
        figure("training.seconds", "training time (encode + boost)", ours["training_seconds"],
               "s", better="lower", baseline=(seed_name, seed["training_seconds"]),
               note=f"{rows}; {ours['rounds']} rounds (early stopping)"),
        figure("training.peak_rss_mb", "peak RSS of the bench process", ours["peak_rss_mb"],
               "MB", better="lower", baseline=("Lambda maximum memory", LAMBDA_MAX_MEMORY_MB),
               note="ru_maxrss so far, incl. the synthetic table"),
        figure("training.holdout_logloss", "holdout logloss", ours["logloss"], "nats",
               better="lower", baseline=(seed_name, seed["logloss"]), note=bounds),
        figure("training.holdout_auc", "holdout AUC", ours["auc"], "AUC", better="higher",
               baseline=(seed_name, seed["auc"])),
        figure("training.normalized_gap", "normalized logloss gap", ours["normalized_gap"],
               "gap", better="lower", baseline=(seed_name, seed["normalized_gap"]),
               note=bounds),
    ]
    return figures, report


def section_data(plan: Plan, echo: Echo) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from ctr_infra import bench_data

    r = bench_data.run(chunk_lines=plan.data_chunk_lines, chunks=plan.data_chunks,
                       repeats=plan.data_repeats)
    echo(bench_data.format_table(r))
    c, s, g, timings = r["chunk"], r["seed_method"], r["gzip"], r["aggregate"]["timings_s"]
    size_mb, lines = r["file_mb"], r["rows"]
    per_chunk_mb = [b / 1e6 / t for b, t in zip(c["per_chunk_bytes"], c["per_chunk_s"],
                                                 strict=True) if t > 0]
    per_chunk_lines = rates(r["chunk_lines"], c["per_chunk_s"])
    gunzip = ("gzip -dc, same bytes", g["gzip_dc_runs_s"])
    read_csv = ("pyarrow read_csv (typed), same chunks", timings["typed"])
    halves = c["median_second_half_s"] / c["median_first_half_s"]
    shape = f"{r['chunks']} chunks x {r['chunk_lines']:,} lines, {size_mb:,.1f} MB in-memory S3"
    figures = [
        figure("data.chunk.mb_per_s", "chunk: throughput", statistics.median(per_chunk_mb),
               "MB/s", better="higher", n=len(per_chunk_mb), spread=min_max(per_chunk_mb),
               baseline=(gunzip[0], statistics.median(rates(size_mb, gunzip[1]))),
               note=f"per chunk; {shape}"),
        figure("data.chunk.lines_per_s", "chunk: lines", statistics.median(per_chunk_lines),
               "lines/s", better="higher", n=len(per_chunk_lines),
               spread=min_max(per_chunk_lines),
               baseline=(gunzip[0], statistics.median(rates(lines, gunzip[1])))),
        figure("data.chunk.seconds", "chunk: one chunk at any position",
               statistics.median(c["per_chunk_s"]), "s", better="lower",
               n=len(c["per_chunk_s"]), spread=min_max(c["per_chunk_s"]),
               baseline=("seed method, last chunk (re-read from line 0)", s["last_s"]),
               note=f"seed method: {len(s['last_runs_s'])} runs"),
        figure("data.chunk.last_over_first", "chunk: last / first chunk time",
               c["last_over_first"], "x", better="lower",
               baseline=("seed method, last / first", s["last_over_first"]),
               note=f"medians of 2nd / 1st half of the chunks: {halves:.2f}"),
        rate_figure("data.aggregate.mb_per_s", "aggregate: parse + validate + Parquet", size_mb,
                    "MB/s", timings["agg"], baseline=read_csv,
                    note=f"by CPU time {r['aggregate']['share_of_read_csv_cpu']:.0%} of read_csv"),
        rate_figure("data.aggregate.lines_per_s", "aggregate: lines", lines, "lines/s",
                    timings["agg"], baseline=read_csv),
        figure("data.gzip_transcode.mb_per_s", "chunker's one-time gzip transcode",
               g["transcode_mb_per_s"], "MB/s", better="higher",
               baseline=("gzip -dc, same file", g["gzip_dc_mb_per_s"]),
               note="includes the upload of the plain copy"),
    ]
    return figures, r


# state name -> data-section figure whose rate is that step's in-process baseline
STATE_BASELINES = {"Chunk new lines": "data.chunk.lines_per_s",
                   "Aggregate to Parquet": "data.aggregate.lines_per_s",
                   "Aggregate chunks in parallel": "data.aggregate.lines_per_s"}


def state_durations(events: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(state name, state type, seconds from entered to exited) in execution order."""
    entered: dict[str, tuple[Any, str]] = {}
    out = []
    for event in events:
        if "stateEnteredEventDetails" in event:
            name = event["stateEnteredEventDetails"]["name"]
            entered[name] = (event["timestamp"], event["type"].removesuffix("StateEntered"))
        elif "stateExitedEventDetails" in event:
            name = event["stateExitedEventDetails"]["name"]
            if name in entered:
                started, kind = entered.pop(name)
                out.append((name, kind, (event["timestamp"] - started).total_seconds()))
    return out


def run_pipeline_once(cloud: BenchCloud, plan: Plan, workdir: Path, echo: Echo
                      ) -> dict[str, Any]:
    """Ingest `plan.pipeline_lines` new synthetic lines and run one execution with the
    chunk size set to exactly that many lines; returns the execution and its history."""
    from ctr import ingest, synth
    from ctr_infra.commands.pipeline import start_execution, wait_execution

    path = workdir / f"pipeline-{plan.pipeline_lines}.txt"
    t0 = time.monotonic()
    synth.write_tsv(path, plan.pipeline_lines, seed=7, progress=False, sidecar=False)
    put = ingest.put(cloud.store, str(path), source_name=f"bench-{uuid.uuid4().hex[:8]}")
    echo(f"    {plan.pipeline_lines:,} new lines ({put['bytes'] / 1e6:,.1f} MB) in "
         f"s3://{cloud.store.bucket}/{put['key']} after {time.monotonic() - t0:.1f}s")
    with function_env(cloud, "ChunkFunction", CHUNK_LINES=str(plan.pipeline_lines)):
        arn = start_execution(cloud.cfg, cloud.outputs,
                              name=f"bench-{datetime.now(UTC):%Y%m%dT%H%M%S}")
        desc = wait_execution(cloud.cfg, arn, plan.pipeline_timeout_s, show=True)
    if desc["status"] != "SUCCEEDED":
        raise CloudError(f"the bench execution {desc['status']}: {desc.get('error')}: "
                         f"{(desc.get('cause') or '')[:800]}")
    events = cloud.client("stepfunctions").get_execution_history(
        executionArn=arn, maxResults=1000)["events"]
    return {"execution": desc, "output": json.loads(desc.get("output") or "{}"),
            "states": state_durations(events), "bytes": put["bytes"]}


def section_pipeline(plan: Plan, cloud: BenchCloud, workdir: Path, echo: Echo,
                     earlier: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                             dict[str, Any]]:
    run = run_pipeline_once(cloud, plan, workdir, echo)
    desc, out = run["execution"], run["output"]
    total = (desc["stopDate"] - desc["startDate"]).total_seconds()
    chunk = (out.get("chunk") or {}).get("value") or {}
    train = (out.get("train") or {}).get("value") or {}
    if chunk.get("lines") != plan.pipeline_lines or not train.get("promoted"):
        raise CloudError(f"the bench execution did not cut {plan.pipeline_lines:,} lines and "
                         f"promote a model: chunk {chunk}, train {train}")
    by_id = {f["id"]: f for f in earlier}
    lines = plan.pipeline_lines
    warmth = ("first execution after deploy: includes each function's cold start"
              if cloud.private else "existing cloud: functions may be warm")
    figures = [figure("pipeline.total_s", "one execution, start to end", total, "s",
                      better="lower", note=f"{lines:,} new lines, "
                      f"{run['bytes'] / 1e6:,.1f} MB; n=1")]
    for name, kind, seconds in run["states"]:
        if kind not in ("Task", "Map"):
            continue            # Choice/Succeed states take no time of their own
        rate = by_id.get(STATE_BASELINES.get(name, ""))
        baseline = (None if rate is None else
                    ("same lines in-process, in-memory S3 (data section rate)",
                     lines / rate["value"]))
        figures.append(figure(f"pipeline.state.{slug(name)}_s", f"state: {name}", seconds,
                              "s", better="lower", baseline=baseline, note=warmth))
    peak = (train.get("metrics") or {}).get("peak_rss_mb")
    if isinstance(peak, int | float) and peak > 0:
        figures.append(figure("pipeline.train_peak_rss_mb", "train function peak RSS", peak,
                              "MB", better="lower",
                              baseline=("Lambda maximum memory", LAMBDA_MAX_MEMORY_MB)))
    raw = {"execution": desc["name"], "status": desc["status"], "total_s": total,
           "states": [{"name": n, "type": k, "seconds": s} for n, k, s in run["states"]],
           "chunk": chunk, "train": train}
    return figures, raw


def _invoke_predict(cloud: BenchCloud, event: dict[str, Any]) -> float:
    started = time.perf_counter()
    resp = cloud.client("lambda").invoke(FunctionName=cloud.outputs["PredictFunctionName"],
                                         Payload=json.dumps(event).encode())
    seconds = time.perf_counter() - started
    body = json.loads(resp["Payload"].read() or b"null")
    if resp.get("FunctionError") or (body or {}).get("statusCode") != 200:
        raise CloudError(f"predict invoke failed: {str(body)[:500]}")
    return seconds


def measure_cold_start(cloud: BenchCloud, plan: Plan, row: dict[str, Any]
                       ) -> dict[str, Any]:
    """`plan.cold_starts` times: change the predict function's configuration (a new
    execution environment) and time the first invoke; then warm invokes as baseline."""
    from ctr_infra.bench_serve import api_gateway_event

    event = api_gateway_event("POST", "/predict", {"rows": [row]})
    token = uuid.uuid4().hex[:8]
    cold, warm = [], []
    with function_env(cloud, "PredictFunction") as set_env:
        for i in range(plan.cold_starts):
            set_env(CTR_BENCH_COLD_START=f"{token}-{i}")
            cold.append(_invoke_predict(cloud, event))
        warm = [_invoke_predict(cloud, event) for _ in range(plan.warm_invokes)]
    return {"cold_s": cold, "warm_s": warm}


HTTP_SERVERS = {"this API on uvicorn": "uvicorn", "API Gateway -> Lambda": "api_gateway"}
MLFLOW_SERVER = "mlflow models serve"


def _latency_figures(fid: str, name: str, stats: dict[str, Any], base_name: str,
                     base: dict[str, Any], note: str = "") -> list[dict[str, Any]]:
    return [figure(f"{fid}.p50_ms", f"{name} p50", stats["p50_ms"], "ms", better="lower",
                   n=stats["n"], spread={"kind": "p50-p99", "low": stats["p50_ms"],
                                         "high": stats["p99_ms"]},
                   baseline=(base_name, base["p50_ms"]), note=note),
            figure(f"{fid}.p99_ms", f"{name} p99", stats["p99_ms"], "ms", better="lower",
                   n=stats["n"], baseline=(base_name, base["p99_ms"]))]


def section_serving(plan: Plan, cloud: BenchCloud, workdir: Path, echo: Echo,
                    prepare_model: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`prepare_model`: with no model served yet, run the pipeline once first (when the
    pipeline section did not run; if it ran and failed, there is nothing to serve)."""
    from ctr.bundle import load_pointer
    from ctr_infra import bench_serve

    if load_pointer(cloud.store) is None:
        if not prepare_model:
            raise CloudError("no model is served: the pipeline section did not produce one")
        echo("    no model is served yet: one pipeline execution first (not reported)")
        run_pipeline_once(cloud, plan, workdir, echo)
    optional: dict[str, Any] = {k: v for k, v in (("http_rows", plan.serve_http_rows),
                                                  ("rounds", plan.serve_rounds))
                                if v is not None}
    r = bench_serve.run(cloud.store, mlflow_uri=cloud.cfg.mlflow_uri,
                        api_url=cloud.outputs["LocalApiUrl"], requests=plan.serve_requests,
                        api_requests=plan.serve_api_requests,
                        concurrency=plan.serve_concurrency, workdir=workdir, echo=echo,
                        **optional)
    figures: list[dict[str, Any]] = []
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
    rows = bench_serve.newest_rows(cloud.store, 1)
    cold = measure_cold_start(cloud, plan, rows[0])
    warm_p50 = statistics.median(cold["warm_s"])
    figures.append(figure(
        "serving.cold_start_s", "predict function cold start (to first answer)",
        statistics.median(cold["cold_s"]), "s", better="lower", n=len(cold["cold_s"]),
        spread=min_max(cold["cold_s"]) if len(cold["cold_s"]) > 1 else None,
        baseline=(f"warm invoke (median of {len(cold['warm_s'])})", warm_p50),
        note="Lambda Invoke after a configuration update: new process, imports, "
             "bundle load, 1-row predict"))
    echo(f"    cold start {figures[-1]['value']:.2f}s (min-max "
         f"{min(cold['cold_s']):.2f}-{max(cold['cold_s']):.2f}s), warm invoke "
         f"{warm_p50 * 1e3:.0f} ms")
    return figures, {**r, "cold_start": cold}


# --------------------------------------------------------------------------- run

OFFLINE_SECTIONS: dict[str, Callable[[Plan, Echo], tuple[list[dict[str, Any]],
                                                         dict[str, Any]]]] = {
    "sizes": section_sizes, "training": section_training, "data": section_data}


def _json_safe(value: Any) -> Any:
    """Finite floats only (NaN/inf become None) and str for what JSON cannot hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def run(plan: Plan = FULL, only: tuple[str, ...] = SECTIONS,
        existing: CloudConfig | None = None, echo: Echo = print) -> dict[str, Any]:
    """Run the selected sections in order; a failing section is recorded with its error
    and the others still run. Returns the results document (see `figure`)."""
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    started = time.monotonic()
    results: dict[str, Any] = {"schema": SCHEMA, "mode": plan.mode, "machine": machine(),
                               "plan": asdict(plan), "cloud": None, "sections": {}}
    figures_so_far: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ctr-bench-")))
        cloud: BenchCloud | None = None
        cloud_error: str | None = None
        cloud_cm = (None if not set(only) & CLOUD_SECTIONS else
                    existing_cloud(existing) if existing else private_cloud(echo))
        early = (stack.enter_context(started_early(cloud_cm))
                 if cloud_cm is not None and existing is None and plan.start_cloud_early
                 else None)
        for name in SECTIONS:
            if name not in only:
                results["sections"][name] = {"status": "skipped", "seconds": 0.0,
                                             "figures": [], "raw": None, "error": None}
                continue
            echo(f"\n=== {name} ({plan.mode}) at {time.monotonic() - started:.0f}s")
            t0 = time.monotonic()
            try:
                if name in CLOUD_SECTIONS:
                    if cloud is None and cloud_error is None and cloud_cm is not None:
                        try:
                            cloud = early() if early else stack.enter_context(cloud_cm)
                            results["cloud"] = cloud.describe()
                        except Exception as err:
                            cloud_error = f"{type(err).__name__}: {err}"
                    if cloud is None:
                        raise CloudError(f"no local cloud: {cloud_error}")
                    if name == "pipeline":
                        figures, raw = section_pipeline(plan, cloud, workdir, echo,
                                                        figures_so_far)
                    else:
                        figures, raw = section_serving(plan, cloud, workdir, echo,
                                                       prepare_model="pipeline" not in only)
                else:
                    figures, raw = OFFLINE_SECTIONS[name](plan, echo)
                entry: dict[str, Any] = {"status": "ok", "figures": figures, "raw": raw,
                                         "error": None}
                figures_so_far += figures
            except Exception as err:   # recorded; the other sections still run
                message = getattr(err, "message", None) or str(err)
                echo(f"!!! {name} failed: {type(err).__name__}: {message}")
                if cloud is not None and name in CLOUD_SECTIONS:
                    cloud.keep_state = True
                entry = {"status": "error", "figures": [], "raw": None,
                         "error": f"{type(err).__name__}: {message}"}
            entry["seconds"] = time.monotonic() - t0
            results["sections"][name] = entry
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = time.monotonic() - started
    return dict(_json_safe(results))


# --------------------------------------------------------------------------- output

def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _spread_text(spread: dict[str, Any] | None) -> str:
    if not spread:
        return "-"
    return f"{fmt(spread['low'])}-{fmt(spread['high'])} ({spread['kind']})"


def to_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    cloud = results.get("cloud") or {}
    lines = [
        f"`ctr bench` ({results['mode']}), {m['date']}: {fmt(results['wall_s'] / 60)} min; "
        f"{m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']}; load average {m['load_average'][0]} at start, "
        f"{m['load_average_end'][0]} at the end"
        + (f"; {'private' if cloud.get('private') else 'existing'} local cloud "
           f"(ready in {fmt(cloud['startup_s'])} s)" if cloud else ""),
        "",
        "| section | figure | value | spread | n | baseline | baseline value | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    notes: dict[tuple[str, str], list[str]] = {}     # (section, note) -> figure names
    for section, entry in results["sections"].items():
        if entry["status"] != "ok":
            if entry["status"] == "error":
                failures.append(f"- **{section} failed**: {entry['error']}")
            continue
        for f in entry["figures"]:
            base = f["baseline"]
            lines.append(
                f"| {section} | {f['name']} | {fmt(f['value'])} {f['unit']} | "
                f"{_spread_text(f['spread'])} | {f['n']} | "
                f"{base['name'] if base else '-'} | "
                f"{fmt(base['value']) + ' ' + f['unit'] if base else '-'} | "
                f"{fmt(f['ratio']) + 'x' if f['ratio'] is not None else '-'} |")
            if f["note"]:
                notes.setdefault((section, f["note"]), []).append(f["name"])
    if failures or notes:
        lines += ["", "Notes:", *failures]
    for (section, note), names in notes.items():
        which = "; ".join(names) if len(names) <= 2 else f"{len(names)} figures"
        lines.append(f"- {section} ({which}): {note}")
    return "\n".join(lines)


def write(results: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """results.json (+ a timestamped copy) and results.md in `output_dir`; each file is
    written whole (temp file + rename), so a reader never sees half a file."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(results["machine"]["date"]).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2) + "\n"
    paths = {"json": output_dir / "results.json",
             "copy": output_dir / f"results-{stamp}-{results['mode']}.json",
             "markdown": output_dir / "results.md"}
    for key, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(to_markdown(results) + "\n" if key == "markdown" else text)
        tmp.replace(path)
    return paths
