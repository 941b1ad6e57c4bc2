"""Training at scale: the streamed trainer (`ctr.stream_training.fit_window`) against
the in-memory one (`load_window` + `fit`) on the same window of known-truth rows.

    python -m ctr_infra.bench.train_scale generate DIR --rows 10000000
    python -m ctr_infra.bench.train_scale run DIR --rows 4000000 --mode stream|memory

`generate` writes `ctr.synth` rows as 1M-row Parquet parts (and each part's true click
probabilities beside it) one part at a time, never holding the stream. Every `run` is a
fresh child process, so its peak RSS (ru_maxrss, which includes the interpreter and the
imports) is that run's alone; the window is the newest `rows` rows with the pipeline's
own cut (holdout max(HoldoutMinRows, 10%), validation 10% of the rest; HoldoutMinRows
is 200,000, lowered to 10% of windows under 2M rows). Seconds run from the first read
to the holdout predictions (reading Parquet included); rows/s counts the whole window;
CPU seconds (all threads of the child) are reported beside wall seconds, as the
machine is shared. Normalized gap = (logloss - Bayes) / (prior - Bayes)
on the holdout, as in `ctr_infra.bench.train`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from ctr import layout, metrics, synth
from ctr.storage import Store
from ctr_infra.bench.plan import LAMBDA_MAX_MEMORY_MB, Echo, Plan
from ctr_infra.bench.report import Figure, figure, markdown_table, min_max

PART_ROWS = 1_000_000
MODES = ("memory", "stream")


class DirS3:
    """A read-only S3 client over a local directory (bucket = the directory): enough
    of get_object / head_object / list_objects_v2 for `ctr.storage.Store` reads, so a
    child process reads parts from disk instead of holding them in memory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_object(self, Bucket: str, Key: str, Range: str | None = None,
                   **_: Any) -> dict[str, Any]:
        path = self.root / Key
        with path.open("rb") as f:
            if Range:
                start, end = (int(v) for v in Range.removeprefix("bytes=").split("-"))
                f.seek(start)
                data = f.read(end - start + 1)
            else:
                data = f.read()
        return {"Body": io.BytesIO(data), "ETag": f'"{path.stat().st_mtime_ns}"'}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        return {"ContentLength": (self.root / Key).stat().st_size}

    def get_paginator(self, name: str) -> DirS3:
        return self

    def paginate(self, Bucket: str, Prefix: str = "", **_: Any) -> list[dict[str, Any]]:
        keys = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p.is_file())
        return [{"Contents": [{"Key": k} for k in keys if k.startswith(Prefix)]}]


def truth_path(directory: Path, index: int) -> Path:
    return directory / "truth" / f"part_{index:06d}.npy"


def generate(directory: Path, rows: int, seed: int = 0, part_rows: int = PART_ROWS,
             echo: Echo = print) -> int:
    """Parts 0..k-1 of one synthetic stream (existing parts are kept); returns k."""
    count = -(-rows // part_rows)
    (directory / layout.PARQUET_PREFIX).mkdir(parents=True, exist_ok=True)
    (directory / "truth").mkdir(exist_ok=True)
    for i in range(count):
        path = directory / layout.parquet_key(i)
        if path.exists() and truth_path(directory, i).exists():
            continue
        n = min(part_rows, rows - i * part_rows)
        table, p = synth.generate_table(n, seed=seed, start_row=i * part_rows)
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        np.save(truth_path(directory, i), p)
        tmp.rename(path)
        echo(f"part {i + 1}/{count} ({n:,} rows)")
    return count


def spec_for(rows: int) -> Any:
    from ctr.training import WindowSpec

    # The pipeline's defaults; a window under 2M rows keeps a 10% holdout.
    return WindowSpec(max_rows=rows, holdout_min_rows=min(WindowSpec.holdout_min_rows,
                                                          rows // 10))


def _cpu_seconds() -> float:
    """CPU time of this process, all threads: on a loaded machine wall time measures
    the neighbours too; CPU time is what one run costs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_in_process(directory: Path, rows: int, mode: str, nthread: int = 1
                   ) -> dict[str, Any]:
    """One training run in this process (call it in a fresh child for peak RSS)."""
    from ctr.stream_training import fit_window
    from ctr.training import TrainParams, fit, load_window

    store = Store(DirS3(directory), "bench")
    spec, params = spec_for(rows), TrainParams(nthread=nthread)
    load_before = os.getloadavg()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if mode == "memory":
        window = load_window(store, spec)
        result = fit(window.train, window.validation, window.holdout, params)
        slices = window.slices
    else:
        streamed, result = fit_window(store, spec, params)
        slices = streamed.slices
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_before
    p_true = np.concatenate([np.load(truth_path(directory, s.index))[s.offset:s.offset + s.rows]
                             for s in slices if s.role == "holdout"])
    y = result.holdout_labels.astype(np.float64)
    bayes = metrics.logloss(y, p_true)
    prior = metrics.logloss(y, np.full(y.size, result.metrics["positive_rate"]))
    ll = result.metrics["holdout_logloss"]
    window_rows = sum(s.rows for s in slices)
    return {"mode": mode, "rows": window_rows,
            "train_rows": int(result.metrics["train_rows"]),
            "holdout_rows": int(result.metrics["holdout_rows"]), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "rows_per_cpu_s": window_rows / max(cpu_seconds, 1e-9),
            "rows_per_s": window_rows / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "logloss": ll, "auc": result.metrics["holdout_auc"],
            "normalized_gap": (ll - bayes) / (prior - bayes), "bayes_logloss": bayes,
            "prior_logloss": prior, "rounds": int(result.metrics["num_trees"]),
            "nthread": nthread, "loadavg": [load_before[0], os.getloadavg()[0]]}


def run_child(directory: Path, rows: int, mode: str, nthread: int = 1) -> dict[str, Any]:
    """`run_in_process` in a fresh Python process; its JSON line back."""
    out = subprocess.run(
        [sys.executable, "-m", "ctr_infra.bench.train_scale", "run", str(directory),
         "--rows", str(rows), "--mode", mode, "--nthread", str(nthread)],
        check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def to_markdown(runs: list[dict[str, Any]]) -> str:
    rows = [(f"{r['rows']:,}", r["mode"], f"{r['rows_per_s']:,.0f}", f"{r['seconds']:.0f}",
             f"{r.get('cpu_seconds', float('nan')):.0f}",
             f"{r['peak_rss_mb']:,.0f}", f"{r['logloss']:.5f}", f"{r['auc']:.4f}",
             f"{r['normalized_gap']:.3f}", r["rounds"],
             f"{r['loadavg'][0]:.1f}-{r['loadavg'][1]:.1f}") for r in runs]
    return "\n".join(markdown_table(
        ("window rows", "trainer", "rows/s", "s", "CPU s", "peak RSS MB", "holdout logloss", "AUC",
         "normalized gap", "rounds", "load avg"), rows))


def figures(plan: Plan, echo: Echo) -> tuple[list[Figure], list[dict[str, Any]]]:
    """Streamed against in-memory at each of `plan.train_scale_rows`, each run in its
    own child process, `plan.train_scale_repeats` times, alternating."""
    runs: list[dict[str, Any]] = []
    out: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="ctr-train-scale-") as tmp:
        directory = Path(tmp)
        part_rows = min(PART_ROWS, max(plan.train_scale_rows) // 4)
        generate(directory, max(plan.train_scale_rows), part_rows=part_rows,
                 echo=lambda _: None)
        for rows in plan.train_scale_rows:
            mine: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for _ in range(plan.train_scale_repeats):
                for mode in MODES:
                    mine[mode].append(run_child(directory, rows, mode, plan.train_nthread))
            runs += [r for m in MODES for r in mine[m]]
            mem, st = mine["memory"], mine["stream"]

            def med(rs: list[dict[str, Any]], key: str) -> float:
                return statistics.median(r[key] for r in rs)

            note = (f"{rows:,}-row window, {plan.train_nthread} XGBoost thread(s), "
                    f"n={len(st)} each, child process per run; load avg "
                    f"{min(r['loadavg'][0] for r in st + mem):.1f}-"
                    f"{max(r['loadavg'][1] for r in st + mem):.1f}")
            out += [
                figure(f"training.scale.{rows}.peak_rss_mb", f"streamed trainer peak RSS, "
                       f"{rows:,} rows", med(st, "peak_rss_mb"), "MB", better="lower",
                       n=len(st), spread=min_max([r["peak_rss_mb"] for r in st]),
                       baseline=("in-memory trainer", med(mem, "peak_rss_mb")), note=note),
                figure(f"training.scale.{rows}.rows_per_s", f"streamed trainer rows/s, "
                       f"{rows:,} rows", med(st, "rows_per_s"), "rows/s", better="higher",
                       n=len(st), spread=min_max([r["rows_per_s"] for r in st]),
                       baseline=("in-memory trainer", med(mem, "rows_per_s")), note=note),
                figure(f"training.scale.{rows}.rows_per_cpu_s", f"streamed trainer rows "
                       f"per CPU-second, {rows:,} rows", med(st, "rows_per_cpu_s"),
                       "rows/CPU-s", better="higher", n=len(st),
                       spread=min_max([r["rows_per_cpu_s"] for r in st]),
                       baseline=("in-memory trainer", med(mem, "rows_per_cpu_s")),
                       note=f"{note}; CPU time of all the child's threads, less load-bound"),
                figure(f"training.scale.{rows}.logloss", f"streamed trainer holdout "
                       f"logloss, {rows:,} rows", med(st, "logloss"), "nats",
                       better="lower", n=len(st),
                       baseline=("in-memory trainer", med(mem, "logloss")), note=note),
                figure(f"training.scale.{rows}.normalized_gap", f"streamed trainer "
                       f"normalized gap, {rows:,} rows", med(st, "normalized_gap"), "gap",
                       better="lower", n=len(st),
                       baseline=("in-memory trainer", med(mem, "normalized_gap")),
                       note=note),
                figure(f"training.scale.{rows}.peak_vs_lambda", "streamed trainer peak "
                       f"RSS against Lambda's maximum, {rows:,} rows",
                       med(st, "peak_rss_mb"), "MB", better="lower",
                       baseline=("Lambda maximum memory", LAMBDA_MAX_MEMORY_MB), note=note),
            ]
    echo(to_markdown(runs))
    return out, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctr_infra.bench.train_scale")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write synthetic parts to DIR")
    gen.add_argument("directory", type=Path)
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="one training run; prints one JSON line")
    run.add_argument("directory", type=Path)
    run.add_argument("--rows", type=int, required=True)
    run.add_argument("--mode", choices=MODES, required=True)
    run.add_argument("--nthread", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate(args.directory, args.rows, args.seed)
    else:
        print(json.dumps(run_in_process(args.directory, args.rows, args.mode, args.nthread)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
