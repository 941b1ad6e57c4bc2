"""`ctr soak --minutes N` (`make soak`): the whole system left alone on a private local
cloud for N minutes with the schedule at `rate(1 minute)`, while a feeder drops files
(`feeder`), faults are injected at random ticks, and predict traffic runs steadily with
bursts and a reload in the middle. Then it lets the pipeline drain and checks:

- lines: every raw line fed is a Parquet row or a reject exactly once
  (`ctr_infra.invariants.account`, complete), the fed count matches, and exactly the
  corrupt or truncated .gz files were quarantined;
- executions: every failed one overlaps an injected fault and is followed by a
  successful one within two ticks (zero unexplained failures);
- at quiescence the served version is the registry's production version and no lease
  is held;
- predict: requests, errors (503 before a first model is documented, not an error),
  p50/p99;
- memory: RSS of LocalStack, MLflow and every Lambda environment sampled over time, the
  growth between the first and the last third; disk used per million lines ingested.

The report is printed and written as JSON (`.local/soak/soak-<time>.json` by default).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctr_infra import localcloud
from ctr_infra.invariants import account
from ctr_infra.localcloud import CloudConfig, Stack
from ctr_infra.soak.feeder import Feeder

SERVED_SETTLE_S = 20.0          # pointer TTL (5 s) + an environment's refresh
TICK_S = 60.0
SOAK_STACK = "ctr-soak"
# Stack parameters sized for a soak on a 2-core machine: small chunks and a bounded
# training window keep every task short; the gate's rule is the production one.
SOAK_PARAMETERS = {"CTR_SCHEDULE_RATE": "rate(1 minute)", "CTR_CHUNK_LINES": "200000",
                   "CTR_MAX_TRAIN_ROWS": "300000", "CTR_MIN_NEW_ROWS": "20000",
                   "CTR_HOLDOUT_MIN_ROWS": "2000"}
PIPELINE_FUNCTIONS = ("GuardFunction", "ChunkFunction", "AggregateFunction", "TrainFunction",
                      "ReloadFunction")
FAULT_KINDS = ("crash", "train_crash", "timeout", "throttle", "mlflow", "refuse")


def _now() -> float:
    return time.time()


@dataclass
class Fault:
    kind: str
    detail: str
    start: float
    end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "start": _iso(self.start),
                "end": _iso(self.end) if self.end else None,
                "seconds": round((self.end or _now()) - self.start, 1)}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@dataclass
class Soak:
    stack: Stack
    minutes: float
    seed: int
    echo: Callable[[str], None] = print
    faults_wanted: tuple[str, ...] = FAULT_KINDS
    max_lines: int = 1_000_000
    feed_every_s: tuple[float, float] = (45.0, 120.0)
    faults: list[Fault] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[float, int, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.feeder = Feeder(self.stack.store, self.seed, max_lines=self.max_lines)
        self.stop = threading.Event()
        self.first_model_at: float | None = None
        self.started = _now()
        self._lock = threading.Lock()

    # --- the run -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self._guarded(f), name=f.__name__, daemon=True)
                   for f in (self._feed, self._inject, self._traffic, self._sample)]
        for t in threads:
            t.start()
        self.stop.wait(self.minutes * 60)
        self.stop.set()
        for t in threads:
            t.join(timeout=180)
        self.echo(f"==> {self.minutes:g} min done; draining (faults cleared)")
        self._clear_faults()
        drained = self._drain(timeout_s=max(600.0, self.minutes * 20))
        return self.report(drained)

    def _guarded(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as err:  # a harness thread's death is a finding, not a hang
                self.notes.append(f"harness thread {fn.__name__} died: {err!r}")
                self.echo(f"!! {fn.__name__}: {err!r}")
        return run

    # --- feeder ----------------------------------------------------------------------
    def _feed(self) -> None:
        # the 2nd and 4th files are a corrupt and a truncated .gz, the 3rd has 10%
        # malformed lines (its chunks go over MaxRejectShare), so even a short soak
        # proves both quarantines; later ones are the feeder's random mix
        forced = {1: "corrupt-gz", 3: "truncated-gz"}
        while not self.stop.is_set():
            n = len(self.feeder.fed)
            fed = self.feeder.drop(_now(), kind=forced.get(n), lines=2_000 if n == 2 else None,
                                   heavy=True if n == 2 else None)
            self.echo(f"  feed  {fed.key} ({fed.lines:,} lines, {fed.malformed} malformed)")
            self.stop.wait(self.rng.uniform(*self.feed_every_s))

    # --- faults ----------------------------------------------------------------------
    def _inject(self) -> None:
        kinds = list(self.faults_wanted)
        self.rng.shuffle(kinds)
        self.stop.wait(self.rng.uniform(0.5, 1.5) * TICK_S)     # let the first runs start
        i = 0
        while not self.stop.is_set() and kinds:
            kind = kinds[i % len(kinds)]
            i += 1
            self._fault(kind)
            self.stop.wait(self.rng.uniform(1.5, 3.0) * TICK_S)

    def _fault(self, kind: str) -> None:
        fault = Fault(kind, "", _now())
        with self._lock:
            self.faults.append(fault)
        lam = self.stack.client("lambda")
        if kind == "refuse":
            names = [self.stack.function_name(f) for f in PIPELINE_FUNCTIONS]
            seconds = self.rng.uniform(4, 10)
            path = localcloud.lambda_refuse_file(self.stack.cfg)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"until": _now() + seconds, "functions": names}))
            fault.detail = f"Lambda endpoint refuses the pipeline functions for {seconds:.0f}s"
            self.echo(f"  FAULT {fault.detail}")
            self.stop.wait(seconds)
            path.unlink(missing_ok=True)
        elif kind == "mlflow":
            seconds = self.rng.uniform(20, 45)
            fault.detail = f"MLflow server killed, restarted after {seconds:.0f}s"
            self.echo(f"  FAULT {fault.detail}")
            localcloud.stop(self.stack.cfg, names=("mlflow",))
            time.sleep(seconds)
            localcloud.start_mlflow(self.stack.cfg, self.stack.bucket, timeout_s=300)
        else:
            logical, spec, timeout = {
                "crash": ("AggregateFunction", "aggregate.before_part=crash*1", None),
                "train_crash": ("TrainFunction", "train.start=crash*1", None),
                "timeout": ("ChunkFunction", "chunk.after_write=sleep:40*1", 15),
                "throttle": ("ChunkFunction", "s3.request=SlowDown*12", None),
            }[kind]
            fault.detail = f"{logical}: CTR_FAULTS={spec}" + (f", Timeout={timeout}s"
                                                               if timeout else "")
            self.echo(f"  FAULT {fault.detail}")
            original = lam.get_function_configuration(FunctionName=self.stack.function_name(
                logical))
            env = dict(original.get("Environment", {}).get("Variables", {}))
            faults_dir = self.stack.cfg.state_dir / "faults" / f"{len(self.faults)}-{kind}"
            self._configure(logical, {**env, "CTR_FAULTS": spec,
                                      "CTR_FAULTS_DIR": str(faults_dir)}, timeout)
            # armed for about two ticks (the next run meets it), then taken away
            deadline = _now() + 2.2 * TICK_S
            while _now() < deadline and not self.stop.is_set():
                time.sleep(2)
            self._configure(logical, env, original["Timeout"] if timeout else None)
        fault.end = _now()

    def _configure(self, logical: str, env: dict[str, str], timeout: int | None) -> None:
        lam = self.stack.client("lambda")
        name = self.stack.function_name(logical)
        kwargs: dict[str, Any] = {"Environment": {"Variables": env}}
        if timeout:
            kwargs["Timeout"] = timeout
        lam.update_function_configuration(FunctionName=name, **kwargs)
        for _ in range(300):
            if lam.get_function_configuration(FunctionName=name).get(
                    "LastUpdateStatus") == "Successful":
                return
            time.sleep(0.2)

    def _clear_faults(self) -> None:
        """Nothing may stay armed while the pipeline drains (a fault thread cut short)."""
        localcloud.lambda_refuse_file(self.stack.cfg).unlink(missing_ok=True)
        for logical in PIPELINE_FUNCTIONS:
            env = self.stack.function_env(logical)
            if "CTR_FAULTS" in env:
                env.pop("CTR_FAULTS")
                self._configure(logical, env, None)
        if not localcloud.running_pid(self.stack.cfg, "mlflow"):
            localcloud.start_mlflow(self.stack.cfg, self.stack.bucket, timeout_s=300)
        for f in self.faults:
            f.end = f.end or _now()

    # --- predict traffic ---------------------------------------------------------------
    def _traffic(self) -> None:
        from ctr import criteo, synth

        table, _ = synth.generate_table(200, seed=self.seed + 1)
        lines = criteo.table_to_tsv(table).decode().splitlines()
        url = self.stack.outputs["LocalApiUrl"] + "/predict"
        reload_at = self.started + self.minutes * 30
        reloaded = False
        next_burst = _now() + self.rng.uniform(60, 120)
        while not self.stop.is_set():
            if _now() >= next_burst:
                burst = [threading.Thread(target=self._predict, args=(url, lines))
                         for _ in range(self.rng.randint(8, 16))]
                for t in burst:
                    t.start()
                for t in burst:
                    t.join()
                next_burst = _now() + self.rng.uniform(90, 180)
            if not reloaded and _now() >= reload_at:
                reloaded = True
                self._reload()
            self._predict(url, lines)
            self.stop.wait(self.rng.uniform(0.5, 1.5))

    def _predict(self, url: str, lines: list[str]) -> None:
        body = json.dumps({"lines": self.rng.sample(lines, self.rng.randint(1, 5))}).encode()
        req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310  # nosec B310
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        status, error = 0, ""
        try:
            with urllib.request.urlopen(req, timeout=35) as resp:  # noqa: S310  # nosec B310
                status = resp.status
                resp.read()
        except urllib.error.HTTPError as err:
            status = err.code
            with contextlib.suppress(Exception):
                error = json.loads(err.read()).get("error", "")
        except OSError as err:
            error = type(err).__name__
        with self._lock:
            self.requests.append((_now(), status, time.perf_counter() - t0, error))
        if status == 200 and self.first_model_at is None:
            self.first_model_at = _now()

    def _reload(self) -> None:
        """The reload in the middle: publish production again while traffic runs."""
        lam = self.stack.client("lambda")
        resp = lam.invoke(FunctionName=self.stack.function_name("ReloadFunction"),
                          Payload=json.dumps({"execution": "soak-reload"}).encode())
        out = json.loads(resp["Payload"].read() or b"null")
        self.notes.append(f"mid-run reload at {_iso(_now())}: "
                          f"{'error ' if resp.get('FunctionError') else ''}{out}")
        self.echo(f"  reload (mid-run): {str(out)[:160]}")

    # --- memory ----------------------------------------------------------------------
    def _sample(self) -> None:
        while not self.stop.is_set():
            self.samples.append({"t": round(_now() - self.started, 1), **rss_by_component(
                self.stack.cfg, self.stack.short_function_names())})
            self.stop.wait(10)

    # --- the end ---------------------------------------------------------------------
    def _drain(self, timeout_s: float) -> bool:
        """Wait until raw/ is consumed, nothing is pending, no execution runs and the
        newest finished one succeeded (the schedule keeps ticking)."""
        from ctr import data_status

        deadline = _now() + timeout_s
        sfn = self.stack.client("stepfunctions")
        while _now() < deadline:
            doc = data_status.status(self.stack.store)
            busy = [s["key"] for s in doc["sources"] if s["state"] in ("waiting", "consuming")]
            execs = sfn.list_executions(stateMachineArn=self.stack.outputs["StateMachineArn"],
                                        maxResults=5)["executions"]
            running = [e for e in execs if e["status"] == "RUNNING"]
            last = next((e for e in execs if e["status"] != "RUNNING"), None)
            settled = (last is not None and last["status"] == "SUCCEEDED"
                       and last["startDate"].timestamp() > self._stopped_feeding())
            if not busy and not doc["chunks_pending"] and not running and settled:
                return True
            time.sleep(5)
        self.notes.append(f"did not drain within {timeout_s:.0f}s")
        return False

    def _stopped_feeding(self) -> float:
        return max((f.at for f in self.feeder.fed), default=self.started)

    def report(self, drained: bool) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        checks["quiescence"] = self._check_quiescence()     # first: the schedule ticks on
        checks["lines"] = self._check_lines()
        executions = list_executions(self.stack)
        checks["executions"] = check_executions(executions, self.faults)
        checks["predict"] = self._check_predict()
        checks["memory"] = memory_growth(self.samples)
        checks["drained"] = {"ok": drained}
        disk = disk_usage(self.stack, self.feeder.expected_lines())
        ok = all(c.get("ok", True) for c in checks.values())
        return {"ok": ok, "minutes": self.minutes, "seed": self.seed,
                "started": _iso(self.started), "ended": _iso(_now()),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
                "checks": checks, "disk": disk,
                "fed": {"files": len(self.feeder.fed),
                        "lines": sum(f.lines for f in self.feeder.fed),
                        "by_kind": _count(f.kind for f in self.feeder.fed)},
                "faults": [f.to_dict() for f in self.faults],
                "memory_samples": self.samples, "notes": self.notes}

    def _check_lines(self) -> dict[str, Any]:
        acc = account(self.stack.store, complete=True)
        must = sorted(f.key for f in self.feeder.fed if f.must_quarantine)
        quarantined = sorted(acc.quarantined_sources)
        expected = self.feeder.expected_lines()
        problems = list(acc.problems)
        if acc.source_lines != expected:
            problems.append(f"fed {expected} lines in readable files, the chunks hold "
                            f"{acc.source_lines}")
        if quarantined != must:
            problems.append(f"quarantined {quarantined}, expected exactly {must}")
        return {"ok": not problems, "summary": acc.summary(), "fed_lines": expected,
                "parquet_rows": acc.parquet_rows, "rejected_lines": acc.rejected_lines,
                "quarantined": quarantined, "quarantined_chunks": list(acc.quarantined_chunks),
                "quarantined_chunk_lines": acc.quarantined_lines, "problems": problems}

    def _check_quiescence(self) -> dict[str, Any]:
        from ctr import guard

        found = self.stack.store.get_json(guard.LEASE_KEY)
        holder = found[0].get("holder") if found else None
        registry = production_version(self.stack)
        # Serving follows the pointer within its TTL (POINTER_TTL_SECONDS, 5 s): a reload
        # that finished just before the drain ended is seen by the API a few seconds
        # later, so the served version is polled for that long (plus a margin).
        deadline = _now() + SERVED_SETTLE_S
        while True:
            served = _http_json(self.stack.outputs["LocalApiUrl"] + "/health")
            served_version = served.get("version") if served else None
            if str(served_version) == str(registry) or _now() >= deadline:
                break
            time.sleep(1.0)
        # The schedule keeps ticking while the checks run: a lease held by an execution
        # that is running now is that execution's, not a leak. A leak is a lease whose
        # holder is not running.
        running = {e["name"] for e in list_executions(self.stack) if e["status"] == "RUNNING"}
        leaked = holder is not None and holder not in running
        ok = not leaked and str(served_version) == str(registry)
        return {"ok": ok, "lease_holder": holder, "holder_running": holder in running,
                "served_version": served_version, "registry_production_version": registry}

    def _faults_at(self, t: float) -> list[str]:
        return [f.kind for f in self.faults if f.start <= t <= (f.end or _now())]

    def _check_predict(self) -> dict[str, Any]:
        reqs = list(self.requests)
        first_ok = self.first_model_at
        ok_lat = sorted(r[2] for r in reqs if r[1] == 200)
        documented = [r for r in reqs if r[1] == 503 and r[3] == "NoModelError"
                      and (first_ok is None or r[0] <= first_ok)]
        errors = [r for r in reqs if r[1] != 200 and r not in documented]
        return {"ok": not errors, "requests": len(reqs), "ok_200": len(ok_lat),
                "no_model_503_before_first_model": len(documented), "errors": len(errors),
                "error_examples": [f"{_iso(r[0])} {r[1]} {r[3]} after {r[2]:.1f}s; faults "
                                   f"then: {self._faults_at(r[0]) or 'none'}"
                                   for r in errors[:10]],
                "p50_ms": _pct(ok_lat, 50), "p99_ms": _pct(ok_lat, 99)}


def _count(items: Iterator[str] | Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _pct(sorted_s: list[float], p: float) -> float | None:
    if not sorted_s:
        return None
    return round(1000 * sorted_s[min(len(sorted_s) - 1, int(len(sorted_s) * p / 100))], 1)


def _http_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310  # nosec B310
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return None


def production_version(stack: Stack) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    model = stack.function_env("TrainFunction").get("MODEL_NAME", "criteo_ctr_model")
    try:
        return str(MlflowClient(tracking_uri=stack.cfg.mlflow_uri)
                   .get_model_version_by_alias(model, "production").version)
    except MlflowException:
        return None


# --- executions ----------------------------------------------------------------------

def list_executions(stack: Stack) -> list[dict[str, Any]]:
    from ctr_infra.commands.pipeline import failure_detail

    sfn = stack.client("stepfunctions")
    out: list[dict[str, Any]] = []
    for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=stack.outputs["StateMachineArn"]):
        for e in page["executions"]:
            item = {"name": e["name"], "status": e["status"],
                    "start": e["startDate"].timestamp(),
                    "stop": e["stopDate"].timestamp() if e.get("stopDate") else None}
            if e["status"] not in ("SUCCEEDED", "RUNNING"):
                d = sfn.describe_execution(executionArn=e["executionArn"])
                item.update(error=d.get("error"), cause=(d.get("cause") or "")[:400],
                            failed=failure_detail(sfn, e["executionArn"]))
            out.append(item)
    return sorted(out, key=lambda e: e["start"])


def check_executions(executions: list[dict[str, Any]], faults: list[Fault],
                     tick_s: float = TICK_S) -> dict[str, Any]:
    """Every failed execution overlaps an injected fault's window (explained) and a
    successful execution starts within two ticks after it ended."""
    failed = [e for e in executions if e["status"] not in ("SUCCEEDED", "RUNNING")]
    unexplained, unhealed = [], []
    for e in failed:
        stop = e["stop"] or e["start"]
        cause = [f for f in faults if f.start <= stop and (f.end or stop) >= e["start"]]
        e["explained_by"] = [f"{f.kind}: {f.detail}" for f in cause]
        if not cause:
            unexplained.append(e)
        healed = any(o["status"] == "SUCCEEDED" and stop <= o["start"] <= stop + 2 * tick_s + 15
                     for o in executions)
        if not healed:
            unhealed.append(e)
    return {"ok": not unexplained and not unhealed, "executions": len(executions),
            "succeeded": sum(e["status"] == "SUCCEEDED" for e in executions),
            "failed": len(failed), "unexplained": len(unexplained),
            "not_followed_by_success": len(unhealed),
            "failures": [{k: e.get(k) for k in ("name", "status", "error", "cause", "failed",
                                                "explained_by")} for e in failed]}


# --- memory and disk -----------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them (LocalStack
    starts Lambda environments from worker threads)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = _children(p)
        out += kids
        todo += kids
    return out


def _function_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
            return item.split(b"=", 1)[1].decode()
    return None


def rss_by_component(cfg: CloudConfig, names: dict[str, str] | None = None
                     ) -> dict[str, float]:
    """RSS in MB: LocalStack's process, MLflow's process tree, and each Lambda
    environment (summed per function, with the number of environments). `names` maps a
    deployed function name to a short one."""
    out: dict[str, float] = {}
    ls = localcloud.running_pid(cfg, "localstack")
    if ls:
        out["localstack"] = round(_rss_mb(ls), 1)
        for pid in _descendants(ls):
            fn = _function_of(pid)
            if fn:
                short = (names or {}).get(fn, fn)
                out[f"lambda:{short}"] = round(out.get(f"lambda:{short}", 0) + _rss_mb(pid), 1)
                out[f"envs:{short}"] = out.get(f"envs:{short}", 0) + 1
    ml = localcloud.running_pid(cfg, "mlflow")
    if ml:
        out["mlflow"] = round(sum(_rss_mb(p) for p in [ml, *_descendants(ml)]), 1)
    return out


def memory_growth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per series: mean of the first and last third, growth in %, and the maximum.
    A Lambda series is its environments' sum (environments come and go)."""
    series: dict[str, Any] = {}
    if len(samples) < 6:
        return {"ok": True, "note": "too few samples for a trend", "series": series}
    third = len(samples) // 3
    keys = sorted({k for s in samples for k in s if k != "t" and not k.startswith("envs:")})
    for k in keys:
        first = [s.get(k, 0.0) for s in samples[:third]]
        last = [s.get(k, 0.0) for s in samples[-third:]]
        a, b = statistics.mean(first), statistics.mean(last)
        series[k] = {"first_third_mb": round(a, 1), "last_third_mb": round(b, 1),
                     "growth_pct": round(100 * (b - a) / a, 1) if a else None,
                     "max_mb": round(max(s.get(k, 0.0) for s in samples), 1)}
    return {"ok": True, "series": series,
            "note": "reported, not judged: a trend over one run is evidence, not proof"}


def disk_usage(stack: Stack, lines: int) -> dict[str, Any]:
    s3 = stack.client("s3")
    by_prefix: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket):
        for obj in page.get("Contents", []):
            prefix = obj["Key"].split("/", 1)[0] + "/"
            by_prefix[prefix] = by_prefix.get(prefix, 0) + int(obj["Size"])
    total = sum(by_prefix.values())
    state = sum(p.stat().st_size for p in stack.cfg.state_dir.rglob("*") if p.is_file())
    per_m = (lambda b: round(b / (lines / 1e6) / 2**20, 1)) if lines else (lambda b: None)
    return {"bucket_bytes_by_prefix": by_prefix, "bucket_mb": round(total / 2**20, 1),
            "state_dir_mb": round(state / 2**20, 1), "lines_ingested": lines,
            "bucket_mb_per_million_lines": per_m(total),
            "state_dir_mb_per_million_lines": per_m(state)}


# --- the private cloud and the command -------------------------------------------------

@contextlib.contextmanager
def soak_cloud(echo: Callable[[str], None]) -> Iterator[Stack]:
    """A private local cloud on free ports with the schedule on at rate(1 minute);
    stopped by PID at the end, its state kept only when asked (CTR_SOAK_KEEP_STATE)."""
    from ctr_infra.commands.cloud import bring_up

    state = Path(tempfile.mkdtemp(prefix="ctr-soak-"))
    cfg = CloudConfig.on_free_ports(state, SOAK_STACK)
    try:
        with localcloud.env_applied(SOAK_PARAMETERS), localcloud.aws_env_applied(cfg):
            echo(f"==> private local cloud on {cfg.endpoint_url} (state {state})")
            outputs = bring_up(cfg, schedule_on=True, quiet=True)
            yield Stack(cfg=cfg, outputs=outputs)
    finally:
        localcloud.stop(cfg)
        if os.environ.get("CTR_SOAK_KEEP_STATE"):
            echo(f"    kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def format_report(rep: dict[str, Any]) -> list[str]:
    c = rep["checks"]
    ex, li, q, p = c["executions"], c["lines"], c["quiescence"], c["predict"]
    mark = lambda ok: "ok  " if ok else "FAIL"  # noqa: E731
    lines = [
        f"soak {rep['minutes']:g} min, seed {rep['seed']}, {rep['started']} .. {rep['ended']}, "
        f"load {rep['load_avg']}",
        f"{mark(li['ok'])} lines       fed {rep['fed']['files']} files "
        f"({rep['fed']['by_kind']}), {li['fed_lines']:,} readable lines = "
        f"{li['parquet_rows']:,} rows + {li['rejected_lines']:,} rejects + "
        f"{li.get('quarantined_chunk_lines', 0):,} in "
        f"{len(li.get('quarantined_chunks', []))} quarantined chunks; quarantined sources "
        f"{len(li['quarantined'])}"
        + ("; " + "; ".join(li["problems"][:5]) if li["problems"] else ""),
        f"{mark(ex['ok'])} executions  {ex['executions']} ({ex['succeeded']} succeeded, "
        f"{ex['failed']} failed, {ex['unexplained']} unexplained, "
        f"{ex['not_followed_by_success']} not followed by a success within two ticks)",
        f"      faults      {len(rep['faults'])}: "
        + ", ".join(f"{f['kind']}" for f in rep["faults"]),
        f"{mark(q['ok'])} quiescence  served v{q['served_version']}, registry production "
        f"v{q['registry_production_version']}, lease holder {q['lease_holder']}",
        f"{mark(p['ok'])} predict     {p['requests']} requests, {p['errors']} errors, "
        f"{p['no_model_503_before_first_model']} documented 503 before a first model, "
        f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms",
        f"{mark(c['drained']['ok'])} drained",
        f"      disk        bucket {rep['disk']['bucket_mb']} MB "
        f"({rep['disk']['bucket_mb_per_million_lines']} MB per million lines), state dir "
        f"{rep['disk']['state_dir_mb']} MB",
        "      memory      " + "; ".join(
            f"{k} {v['first_third_mb']}->{v['last_third_mb']} MB (max {v['max_mb']})"
            for k, v in c["memory"]["series"].items()),
    ]
    for f in ex["failures"]:
        failed = f.get("failed") or {}
        lines.append(f"      failed {f['name']}: {failed.get('state')}: {failed.get('error')}"
                     f" -- explained by {f['explained_by'] or 'NOTHING'}")
    lines += [f"      note: {n}" for n in rep["notes"]]
    lines.append("RESULT: " + ("all checks passed" if rep["ok"] else "FAILED"))
    return lines


def run_soak(minutes: float, seed: int, out_dir: Path, *, faults: tuple[str, ...] = FAULT_KINDS,
             max_lines: int = 1_000_000, feed_every_s: tuple[float, float] = (45.0, 120.0),
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    with soak_cloud(echo) as stack:
        soak = Soak(stack, minutes, seed, echo=echo, faults_wanted=faults, max_lines=max_lines,
                    feed_every_s=feed_every_s)
        rep = soak.run()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(rep, indent=2, default=str))
    rep["path"] = str(path)
    for line in format_report(rep):
        echo(line)
    echo(f"report: {path}")
    return rep
