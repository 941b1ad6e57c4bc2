"""The pipeline section: one Step Functions execution on N new synthetic lines on the
local cloud, and the wall time of each state from the execution's history. A state that
the data section also measured in-process (chunk, aggregate) is compared with that
rate: the difference is what the cloud adds (invocation, S3 over HTTP, cold starts)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctr_infra.bench.cloud import BenchCloud, function_env
from ctr_infra.bench.plan import LAMBDA_MAX_MEMORY_MB, Echo, Plan
from ctr_infra.bench.report import Figure, SectionResult, figure, slug
from ctr_infra.localcloud import CloudError

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


def section(plan: Plan, cloud: BenchCloud, workdir: Path, echo: Echo,
                     earlier: list[Figure]) -> SectionResult:
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
