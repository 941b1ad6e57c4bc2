"""Bench section `batch`: batch scoring on the local cloud (issue 17), against one core
scoring the same lines in-process.

A synthetic file of `plan.batch_rows` lines (written by `ctr.synth`, streamed to disk,
uploaded with a multipart upload) is scored by the deployed scoring state machine with
its deployed defaults (ScoreRangeBytes, ScoreMaxConcurrency): plan ranges, a
Distributed Map of score children, the manifest. The figure is rows per minute end to
end (start of the execution to its end, as `ctr score` waits for it); the baseline is
`ctr.scoring.score_bytes` -- the children's own code -- on one core in this process on
the first 50,000 lines of the same file, with the production bundle, as rows per CPU
minute. The ratio says how many cores' worth of scoring the local cloud delivers after
its overheads (Map children, environment starts, S3 through the emulator).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from ctr import scoring, synth
from ctr.bundle import load_pointer
from ctr_infra.bench.cloud import BenchCloud
from ctr_infra.bench.plan import Echo, Plan
from ctr_infra.bench.report import Figure, SectionResult, figure
from ctr_infra.localcloud import CloudError

BASELINE_LINES = 50_000
TARGET_ROWS_PER_MIN = 1_000_000    # issue 17's target on the local cloud


def _baseline_rows_per_cpu_min(cloud: BenchCloud, path: Path, repeats: int = 3
                               ) -> list[float]:
    pointer = load_pointer(cloud.store)
    if pointer is None:
        raise CloudError("no model is served")
    predictor = scoring._predictor(cloud.store, pointer.prefix, pointer.version)
    with path.open("rb") as f:
        block = b"".join(f.readline() for _ in range(BASELINE_LINES))
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        _, _, _, rows, _ = scoring.score_bytes(predictor, block)
        out.append(rows / (time.process_time() - t0) * 60)
    return out


def section(plan: Plan, cloud: BenchCloud, workdir: Path, echo: Echo,
            prepare_model: bool) -> SectionResult:
    from ctr_infra.bench.pipeline import run_pipeline_once
    from ctr_infra.commands import score as score_command
    from ctr_infra.commands.pipeline import wait_execution

    if load_pointer(cloud.store) is None:
        if not prepare_model:
            raise CloudError("no model is served: the pipeline section did not produce one")
        echo("    no model is served yet: one pipeline execution first (not reported)")
        run_pipeline_once(cloud, plan, workdir, echo)
        if load_pointer(cloud.store) is None:
            raise CloudError("the pipeline execution promoted no model (on the default "
                             "gate a first model needs HoldoutMinRows holdout rows: run "
                             "the full bench, or the pipeline section with more lines)")
    path = workdir / "batch-input.tsv"
    synth.write_tsv(path, plan.batch_rows, seed=77, progress=False, sidecar=False)
    size = path.stat().st_size
    key = f"batch/in/bench-{uuid.uuid4().hex[:8]}.tsv"
    cloud.store.s3.upload_file(str(path), cloud.store.bucket, key)
    echo(f"    {plan.batch_rows:,} lines ({size / 1e6:,.0f} MB) in s3://{cloud.store.bucket}/{key}")
    baseline = _baseline_rows_per_cpu_min(cloud, path)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    t0 = time.monotonic()
    arn = score_command.start(cloud, key, "batch/out/", run_id)
    desc = wait_execution(cloud.cfg, arn, plan.pipeline_timeout_s, show=False)
    seconds = time.monotonic() - t0
    if desc["status"] != "SUCCEEDED":
        raise CloudError(f"scoring execution {run_id} ended {desc['status']}: "
                         f"{desc.get('error')}: {desc.get('cause')}")
    out: dict[str, Any] = json.loads(desc["output"])
    manifest, planned = out["manifest"]["value"], out["plan"]["value"]
    if manifest["rows"] != plan.batch_rows:
        raise CloudError(f"scored {manifest['rows']} rows of {plan.batch_rows}")
    rate = manifest["rows"] / seconds * 60
    echo(f"    scored in {seconds:.1f}s: {rate:,.0f} rows/min ({planned['range_count']} "
         f"ranges; load before {load_before}); one core in-process "
         f"{statistics.median(baseline):,.0f} rows/CPU-min")
    figures: list[Figure] = [figure(
        "batch.rows_per_min", f"batch scoring on the local cloud, {plan.batch_rows:,} lines "
        f"({size / 1e6:,.0f} MB), execution start to end", rate, "rows/min", better="higher",
        baseline=("one core in-process (ctr.scoring.score_bytes), rows per CPU-minute",
                  statistics.median(baseline)),
        note=f"{planned['range_count']} ranges at the deployed range size and concurrency; "
             f"target {TARGET_ROWS_PER_MIN:,} rows/min; load before {' '.join(load_before)}")]
    raw = {"seconds": seconds, "rows": manifest["rows"], "bytes": size,
           "ranges": planned["range_count"], "baseline_rows_per_cpu_min": baseline,
           "load_before": load_before}
    return figures, raw
