"""Bench section `scale` (issue 16): N synthetic Criteo lines, one gzip file, through ONE
execution of the pipeline on the local cloud -- backfill (plan, cut in parallel,
finish), aggregate in parallel, train on the newest `MaxTrainRows`, reload -- with the
time of every state, the peak RSS of LocalStack, MLflow and every function's
environments, the disk used, and the line invariant checked at the end in bounded
memory (`ctr_infra.invariants.account_streamed`).

    ctr bench --only scale --scale-lines 45840617     # the whole Criteo file's size

Nothing is held in memory by the bench: `ctr.synth.write_tsv` streams the file to disk
(gzip level 1), `ctr.ingest.put` streams it into raw/ as a multipart upload, the local
file is deleted once uploaded, and the invariant reads one chunk at a time. The section
empties the data prefixes of its cloud first (a private cloud, or an existing one the
bench was allowed to use because it held no data). Memory is sampled every
`SAMPLE_EVERY_S` from /proc (`ctr_infra.soak.harness.rss_by_component`): a function's
figure is the largest sum over its live environments at one instant; the train function
also reports its own peak (`ru_maxrss`). Disk is the growth of the used space of the
file system holding the emulator's temporary files (its S3 objects above 512 KB live
there), from before the upload to the end of the execution.

The extrapolation to `CRITEO_LINES` is linear in lines for every state but training,
whose window is capped by MaxTrainRows (constant once the lines exceed it): the method
and the run it comes from are printed with it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctr import ingest, layout, synth
from ctr_infra import invariants
from ctr_infra.bench.cloud import BenchCloud, function_env
from ctr_infra.bench.pipeline import state_durations
from ctr_infra.bench.plan import LAMBDA_MAX_MEMORY_MB, Echo, Plan
from ctr_infra.bench.report import Figure, SectionResult, figure, slug
from ctr_infra.localcloud import CloudError

CRITEO_LINES = 45_840_617          # the Kaggle Criteo train.txt
SAMPLE_EVERY_S = 2.0
SEED = 11


class Sampler:
    """RSS per component and used disk, every `every_s` in a thread, kept as maxima."""

    def __init__(self, cloud: BenchCloud, every_s: float = SAMPLE_EVERY_S) -> None:
        self.cloud, self.every_s = cloud, every_s
        self.names = cloud.short_function_names()
        self.disk_path = tempfile.gettempdir()
        self.disk_start = shutil.disk_usage(self.disk_path).used
        self.peak: dict[str, float] = {}
        self.disk_peak = self.disk_start
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-sampler", daemon=True)

    def sample(self) -> None:
        from ctr_infra.soak.harness import rss_by_component

        for key, value in rss_by_component(self.cloud.cfg, self.names).items():
            self.peak[key] = max(self.peak.get(key, 0.0), float(value))
        self.disk_peak = max(self.disk_peak, shutil.disk_usage(self.disk_path).used)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(OSError):
                self.sample()

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        self.sample()
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.sample()

    @property
    def disk_growth_bytes(self) -> int:
        return self.disk_peak - self.disk_start


def prefix_bytes(cloud: BenchCloud) -> dict[str, int]:
    """Stored bytes under each data prefix that holds any."""
    out: dict[str, int] = {}
    for prefix in (layout.RAW_PREFIX, layout.CHUNKS_PREFIX, layout.PARQUET_PREFIX,
                   layout.REJECTS_PREFIX):
        size = sum(int(o["Size"]) for o in cloud.store.list_objects(prefix))
        if size:
            out[prefix] = size
    return out


def history(cloud: BenchCloud, arn: str) -> list[dict[str, Any]]:
    pages = cloud.client("stepfunctions").get_paginator("get_execution_history")
    return [e for page in pages.paginate(executionArn=arn) for e in page["events"]]


def run_scale(cloud: BenchCloud, lines: int, workdir: Path, echo: Echo, *,
              chunk_lines: int | None, timeout_s: float) -> dict[str, Any]:
    """Generate, upload and run one execution on `lines` lines; see the module docstring."""
    from ctr_infra.commands.pipeline import start_execution, wait_execution

    dropped = cloud.empty_data()
    echo(f"    {lines:,} lines: emptied the data prefixes ({dropped} objects)")
    path = workdir / f"scale-{lines}.tsv.gz"
    sampler = Sampler(cloud)
    max_train_rows = int(cloud.function_env("TrainFunction").get("MAX_TRAIN_ROWS") or 0)
    t0 = time.monotonic()
    written = synth.write_tsv(path, lines, seed=SEED, progress=False, sidecar=False)
    generate_s = time.monotonic() - t0
    gz_bytes = path.stat().st_size
    echo(f"    generated {written['bytes'] / 1e9:,.2f} GB ({gz_bytes / 1e9:,.2f} GB gzipped) "
         f"in {generate_s:.0f}s")
    with sampler.running():
        t0 = time.monotonic()
        put = ingest.put(cloud.store, str(path), source_name=f"scale-{uuid.uuid4().hex[:8]}")
        upload_s = time.monotonic() - t0
        path.unlink()
        echo(f"    uploaded to s3://{cloud.bucket}/{put['key']} in {upload_s:.0f}s")
        env = {"CHUNK_LINES": str(chunk_lines)} if chunk_lines else {}
        with function_env(cloud, "ChunkFunction", **env):
            arn = start_execution(cloud.cfg, cloud.outputs,
                                  name=f"scale-{lines}-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            desc = wait_execution(cloud.cfg, arn, timeout_s, show=False)
    echo(f"    execution {desc['status']} in "
         f"{(desc['stopDate'] - desc['startDate']).total_seconds():.0f}s")
    if desc["status"] != "SUCCEEDED":
        raise CloudError(f"the scale execution {desc['status']}: {desc.get('error')}: "
                         f"{(desc.get('cause') or '')[:800]}")
    out = json.loads(desc.get("output") or "{}")
    stored = prefix_bytes(cloud)
    check = invariants.account_streamed(cloud.store)
    echo(f"    invariant ({check.seconds:.0f}s): {check.summary()}"
         + ("" if check.ok else f"; PROBLEMS: {list(check.problems)[:3]}"))
    return {"lines": lines, "raw_bytes": written["bytes"], "gz_bytes": gz_bytes,
            "generate_s": generate_s, "upload_s": upload_s,
            "execution": desc["name"], "total_s": (desc["stopDate"]
                                                   - desc["startDate"]).total_seconds(),
            "states": [{"name": n, "type": k, "seconds": s}
                       for n, k, s in state_durations(history(cloud, arn))],
            "train": (out.get("train") or {}).get("value") or {},
            "max_train_rows": max_train_rows,
            "peak_rss_mb": dict(sorted(sampler.peak.items())), "samples": sampler.samples,
            "disk_growth_bytes": sampler.disk_growth_bytes, "stored_bytes": stored,
            "invariant": {"ok": check.ok, "summary": check.summary(),
                          "problems": list(check.problems), "seconds": check.seconds,
                          "source_lines": check.source_lines, "lost": check.lost,
                          "duplicated": check.duplicated}}


# States whose work grows with the lines of the backlog (the rest are fixed costs: the
# lease, the serving sync, the reload); training grows until its window is full.
PROPORTIONAL = ("Plan backfill", "Cut backlog in parallel", "Finish backfill",
                "Plan aggregation", "Aggregate chunks in parallel", "Evaluate served model",
                "Train model")


def seconds_by_state(run: dict[str, Any]) -> dict[str, float]:
    """Task and Map states' seconds, summed by name (a state can run twice: after a
    backfill the execution plans again and cuts what is left)."""
    out: dict[str, float] = {}
    for s in run["states"]:
        if s["type"] in ("Task", "Map"):
            out[s["name"]] = out.get(s["name"], 0.0) + s["seconds"]
    return out


def envs(run: dict[str, Any], component: str) -> int:
    """The most environments of a function seen at one sample (1 for a process)."""
    if not component.startswith("lambda:"):
        return 1
    return int(run["peak_rss_mb"].get(component.replace("lambda:", "envs:", 1), 1))


def window_rows(run: dict[str, Any]) -> int:
    m = (run["train"] or {}).get("metrics") or {}
    return int(sum(m.get(k, 0) for k in ("train_rows", "validation_rows", "holdout_rows")))


def extrapolate(runs: list[dict[str, Any]], target: int = CRITEO_LINES) -> dict[str, Any]:
    """Seconds per state at `target` lines. With two or more runs, each state's line
    through the two largest (seconds = a + b x lines, b >= 0); with one run, the states
    of PROPORTIONAL scaled by target/lines and the others kept. Train model is kept as
    measured when the largest run already filled its window (MaxTrainRows)."""
    runs = sorted(runs, key=lambda r: r["lines"])
    big = runs[-1]
    by_run = [seconds_by_state(r) for r in runs]
    window = window_rows(big)
    capped = bool(window) and window < big["lines"]
    cap = int(big.get("max_train_rows") or 0)
    states: dict[str, float] = {}
    for name, seconds in by_run[-1].items():
        # training reads at most MaxTrainRows rows, whatever the backlog
        upto = min(target, cap) if name == "Train model" and cap else target
        if name == "Train model" and capped:
            states[name] = seconds
        elif len(runs) >= 2 and name in by_run[-2]:
            x0, x1 = runs[-2]["lines"], big["lines"]
            y0, y1 = by_run[-2][name], seconds
            slope = max((y1 - y0) / (x1 - x0), 0.0) if x1 > x0 else 0.0
            states[name] = y1 + slope * (upto - x1)
        else:
            states[name] = seconds * (upto / big["lines"] if name in PROPORTIONAL else 1.0)
    method = ("per state, the line through the runs at "
              f"{runs[-2]['lines']:,} and {big['lines']:,} lines" if len(runs) >= 2 else
              f"from one run at {big['lines']:,} lines: data states x target/lines, fixed "
              "states kept")
    if capped:
        method += f"; Train model as measured (its window, {window:,} rows, was full)"
    elif cap and target > cap:
        method += f"; Train model taken at MaxTrainRows ({cap:,} rows), its window's limit"
    return {"target_lines": target, "from_lines": [r["lines"] for r in runs],
            "states_s": states, "total_s": sum(states.values()), "method": method}


def section(plan: Plan, cloud: BenchCloud, workdir: Path, echo: Echo,
            earlier: list[Figure]) -> SectionResult:
    by_id = {f["id"]: f for f in earlier}
    runs = [run_scale(cloud, lines, workdir, echo, chunk_lines=plan.scale_chunk_lines,
                      timeout_s=plan.scale_timeout_s) for lines in plan.scale_lines]
    figures: list[Figure] = []
    for run in runs:
        n = run["lines"]
        if not run["invariant"]["ok"]:
            raise CloudError(f"{n:,} lines: the line invariant failed: "
                             f"{run['invariant']['problems'][:3]}")
        tag = f"scale.{n}"
        figures.append(figure(f"{tag}.total_s", f"{n:,} lines: one execution", run["total_s"],
                              "s", better="lower", note=f"{run['raw_bytes'] / 1e9:.2f} GB, "
                              f"{run['gz_bytes'] / 1e9:.2f} GB gzipped; n=1"))
        chunk_rate = by_id.get("data.chunk.lines_per_s")
        for name, seconds in seconds_by_state(run).items():
            if seconds > 0:
                figures.append(figure(f"{tag}.state.{slug(name)}_s",
                                      f"{n:,} lines: state {name}", seconds, "s",
                                      better="lower"))
        cut = sum(s["seconds"] for s in run["states"] if s["name"] in (
            "Plan backfill", "Cut backlog in parallel", "Finish backfill"))
        if cut > 0:
            figures.append(figure(
                f"{tag}.backfill_lines_per_s", f"{n:,} lines: backfill (plan, cut, finish)",
                n / cut, "lines/s", better="higher",
                baseline=None if chunk_rate is None else (
                    "one-chunk cut in-process (data section)", chunk_rate["value"])))
        for component, mb in run["peak_rss_mb"].items():
            if component.startswith("envs:") or mb <= 0:
                continue
            figures.append(figure(f"{tag}.peak_rss.{slug(component)}_mb",
                                  f"{n:,} lines: peak RSS {component}", mb, "MB",
                                  better="lower",
                                  baseline=("Lambda maximum memory", LAMBDA_MAX_MEMORY_MB)
                                  if component.startswith("lambda:") else None,
                                  note=f"at most {envs(run, component)} environment(s) at "
                                  f"once; {run['samples']} samples every "
                                  f"{SAMPLE_EVERY_S:.0f}s"))
        if run["disk_growth_bytes"] > 0:
            figures.append(figure(f"{tag}.disk_mb", f"{n:,} lines: disk used (growth)",
                                  run["disk_growth_bytes"] / 2**20, "MB", better="lower"))
    ex = extrapolate(runs) if runs else None
    if ex is not None:
        figures.append(figure("scale.extrapolated_criteo_s",
                              f"{CRITEO_LINES:,} lines: one execution (extrapolated)",
                              ex["total_s"], "s", better="lower", note=ex["method"]))
        echo(f"    extrapolated to {CRITEO_LINES:,} lines: {ex['total_s']:.0f}s "
             f"({', '.join(f'{k} {v:.0f}s' for k, v in ex['states_s'].items())}); "
             f"{ex['method']}")
    raw = {"runs": runs, "extrapolation": ex}
    return figures, raw
