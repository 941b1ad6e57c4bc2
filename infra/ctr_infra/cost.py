"""What the pipeline costs on AWS (`ctr cost`): measured seconds and configured memory
turned into dollars per full backfill and per scheduled execution, at list prices.

Inputs
- Seconds per state: the newest `make bench` pipeline section
  (`.local/bench/results.json`, sections.pipeline.raw.states: one execution over N new
  lines, first run after deploy, so each includes its cold start), else DEFAULT_SECONDS
  (the README's measured figures; the few small states it does not list are marked
  assumed). Chunk, aggregate and evaluate scale with the lines of the execution, train
  with the rows of its window (min(rows in the bucket, MaxTrainRows)); the rest is fixed.
- Memory and ephemeral storage per function, and the defaults of ChunkLines,
  MaxTrainRows and TrainInstanceType: template.yaml (Lambda bills the configured size,
  not what was used).
- Transitions: the states an execution enters, counted by walking the definition
  (statemachine/pipeline.asl.json, or pipeline.sagemaker.asl.json for the sagemaker
  backend) along the scenario's Choice branches; a Distributed Map adds its children's
  states (each child is a Standard execution).
- S3 requests per state: S3_REQUESTS, read off the code paths (which ctr.layout keys each
  step lists, reads and writes), approximate to a request or two; storage per row: raw,
  gzip and Parquet bytes measured on synthetic Criteo rows (BYTES_PER_ROW).

Scenarios
- steady: one scheduled execution with one new chunk (ChunkLines lines) that trains and
  promotes (the dearest ending: reload runs too);
- idle: an execution that finds nothing new (the common tick when no data arrives);
- backfill, sequential: today's design for a dropped file of N lines, ceil(N / ChunkLines)
  steady executions one chunk each, each training on its growing window;
- backfill, fan-out: the chunks cut up front (issue 16, part 1) and aggregated by the
  Distributed Map in one execution that trains once.

Not counted: CloudWatch Logs ingestion, X-Ray, KMS, data transfer, the MLflow server,
API Gateway and the predict function's traffic (see the prediction-log line for
Firehose), free tiers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

# --------------------------------------------------------------------------- prices

PRICES_AS_OF = "2026-12-02"
PRICE_REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    what: str
    unit: str
    usd: float


# us-east-1 on-demand list prices (AWS pricing pages for Lambda, Step Functions, S3,
# CloudWatch, Data Firehose and SageMaker), as written down on PRICES_AS_OF; no free
# tier. Not fetched at run time: the Lambda duration tier was checked against a copy of
# the pricing page that day, the others were not re-checked -- verify before budgeting.
PRICES: dict[str, Price] = {
    "lambda_gb_s": Price("Lambda compute, x86, first 6 billion GB-s/month", "GB-second",
                         0.0000166667),
    "lambda_request": Price("Lambda requests", "request", 0.20 / 1e6),
    "lambda_ephemeral_gb_s": Price("Lambda ephemeral storage above 512 MB", "GB-second",
                                   0.0000000309),
    "sfn_transition": Price("Step Functions Standard state transition", "transition",
                            0.025 / 1000),
    "s3_put": Price("S3 Standard PUT, COPY, POST, LIST request", "request", 0.005 / 1000),
    "s3_get": Price("S3 Standard GET, SELECT and other request", "request", 0.0004 / 1000),
    "s3_gb_month": Price("S3 Standard storage, first 50 TB", "GB-month", 0.023),
    "cw_put_metric_data": Price("CloudWatch PutMetricData request", "request", 0.01 / 1000),
    "firehose_gb": Price("Data Firehose Direct PUT ingestion (records rounded up to 5 KB)",
                         "GB", 0.029),
    "sagemaker_volume_gb_month": Price("SageMaker training ML storage (gp2)", "GB-month", 0.14),
}
# SageMaker training, on-demand, per instance-hour.
SAGEMAKER_TRAINING_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461, "ml.m5.4xlarge": 0.922,
    "ml.m5.12xlarge": 2.765, "ml.m5.24xlarge": 5.53,
}
HOURS_PER_MONTH = 730
SCHEDULED_PER_MONTH = HOURS_PER_MONTH * 6        # rate(10 minutes)
GB = 1e9
FIREHOSE_RECORD_ROUNDING = 5 * 1024

# --------------------------------------------------------------------------- measured inputs

FULL_CRITEO_LINES = 45_840_617
# Bytes per row: raw TSV and gzip of the full Kaggle file (~11 GB, ~4.3 GB gzipped, per
# the issue) agree with synthetic rows (243.8 / 86.2 B per line, 200,000 lines, gzip -6);
# Parquet as the aggregate step writes it (part format 2, C1..C26 as uint32), measured
# on 2,000,000 synthetic rows (62.3 in format 1).
BYTES_PER_ROW = {"raw": 240.0, "gzip": 94.0, "parquet": 51.2}

Scaling = Literal["fixed", "lines", "window"]
# How a state's seconds grow: with the lines of the execution, the rows of the training
# window, or not at all.
SCALING: dict[str, Scaling] = {
    "Acquire lease": "fixed", "Sync serving model": "fixed", "Chunk new lines": "lines",
    "Plan backfill": "lines", "Cut one range": "lines", "Finish backfill": "fixed",
    "Plan aggregation": "fixed", "Aggregate to Parquet": "lines",
    "Aggregate one chunk": "lines", "Evaluate served model": "lines",
    "Publish rolled-back model": "fixed", "Train model": "window",
    "Read training result": "fixed", "Reload serving model": "fixed",
    "Release lease": "fixed",
}
# README "Measured figures": one execution over 1,000,000 new lines, first run after
# deploy (chunk 4.0 s, aggregate 6.1 s, train 102 s, reload 6.6 s, each with its cold
# start); the monitor step 10.4 s per 1M fresh rows (median of 3, quiet machine).
DEFAULT_LINES = 1_000_000
DEFAULT_SECONDS: dict[str, float] = {
    "Chunk new lines": 4.0, "Aggregate to Parquet": 6.1, "Aggregate one chunk": 6.1,
    "Train model": 102.0, "Reload serving model": 6.6, "Evaluate served model": 10.4,
    "Publish rolled-back model": 6.6,
    # assumed (not in the README): small S3-only steps
    "Acquire lease": 0.5, "Sync serving model": 1.0, "Plan aggregation": 0.5,
    "Release lease": 0.5, "Finish backfill": 0.5,
    # assumed: the backfill's scan reads the backlog once at about the chunk step's rate
    # (in-process 355 MB/s scan vs 412 MB/s cut, README), a range cut as a chunk cut
    "Plan backfill": 4.0, "Cut one range": 4.0,
}
ASSUMED = {"Acquire lease", "Sync serving model", "Plan aggregation", "Release lease",
           "Finish backfill", "Plan backfill", "Cut one range"}
# assumed: a step that scales with lines or rows still runs this long when it has none
# (an invocation that lists, finds nothing and returns)
IDLE_SECONDS = 0.5


@dataclass(frozen=True)
class Requests:
    """S3 requests of one state entry: fixed PUT-class (PUT, POST, LIST) and GET-class
    counts, plus one GET per `get_per_bytes` read and one PUT per `put_per_bytes` written
    of the execution's raw bytes (ranged reads, multipart parts)."""

    put: int = 0
    get: int = 0
    get_per_bytes: int | None = None
    put_per_bytes: int | None = None

    def count(self, raw_bytes: float) -> tuple[int, int]:
        put = self.put + (math.ceil(raw_bytes / self.put_per_bytes) if self.put_per_bytes
                          else 0)
        get = self.get + (math.ceil(raw_bytes / self.get_per_bytes) if self.get_per_bytes
                          else 0)
        return put, get


MB16, MB32 = 16 * 1024 * 1024, 32 * 1024 * 1024
S3_REQUESTS: dict[str, Requests] = {
    # lease: read it, conditional write (acquire and release alike)
    "Acquire lease": Requests(put=1, get=1),
    "Release lease": Requests(put=1, get=1),
    # serving pointer, registry snapshot, production bundle manifest; writes only on a change
    "Sync serving model": Requests(get=3),
    # list raw/, cursor read and conditional write, ranged GETs of 16 MB (PIECE_BYTES),
    # the chunk as a multipart upload of 32 MB parts (create + parts + complete)
    "Chunk new lines": Requests(put=4, get=2, get_per_bytes=MB16, put_per_bytes=MB32),
    # cursor read and HEAD; with a backlog, 16 MB ranged GETs and the plan (create-only)
    "Plan backfill": Requests(put=1, get=2, get_per_bytes=MB16),
    # the Map's ItemReader GETs the plan
    "Cut backlog in parallel": Requests(get=1),
    # one chunk: ranged GETs, multipart create-only upload
    "Cut one range": Requests(put=3, get=1, get_per_bytes=MB16, put_per_bytes=MB32),
    # cursor read, a HEAD per chunk (counted once), the conditional cursor write
    "Finish backfill": Requests(put=1, get=2),
    # list chunks/ and parquet/
    "Plan aggregation": Requests(put=2),
    # the Distributed Map's ItemReader lists chunks/ (1,000 keys per LIST)
    "Aggregate chunks in parallel": Requests(put=1),
    # list, read the chunk, write the part and its rejects create-only, head checks
    "Aggregate to Parquet": Requests(put=3, get=3, get_per_bytes=MB16),
    "Aggregate one chunk": Requests(put=3, get=3, get_per_bytes=MB16),
    # list parquet/ and reports, read the new part, the bundle and baselines; write the
    # quality, drift and summary reports
    "Evaluate served model": Requests(put=6, get=6),
    # list parquet/, footers and parts of the window (one GET per part), audit records,
    # the registry snapshot
    "Train model": Requests(put=4, get=4),
    "Read training result": Requests(get=1),
    # pointer and snapshot reads, the bundle, the pointer (conditional)
    "Reload serving model": Requests(put=3, get=3),
    "Publish rolled-back model": Requests(put=3, get=3),
}
# The monitor step's PutMetricData calls per execution with a fresh part (20 values per
# call; ctr.monitoring.cloudwatch) and without one (served-traffic skew only).
METRIC_CALLS = {"fresh": 2, "idle": 1}
SAGEMAKER_STARTUP_S = 120.0      # assumed: instance start and image pull, billed
SAGEMAKER_VOLUME_GB = 100        # ctr_infra.asl_variants.VOLUME_GB


# --------------------------------------------------------------------------- the walk

Choices = Mapping[str, str | tuple[str, ...]]
# The branch each scenario takes at each Choice (unnamed Choices take their Default); a
# tuple gives the branch of the 1st, 2nd, ... entry (the last one for later entries).
LEASE = {"Lease acquired?": "Sync serving model", "Rolled back?": "Anything new to train on?",
         "Backfill planned?": "Chunk new lines"}
STEADY: Choices = {**LEASE, "How many chunks pending?": "Aggregate to Parquet",
                   "Anything new to train on?": "Train model",
                   "Promoted?": "Reload serving model", "What happened?": "Done"}
IDLE: Choices = {**LEASE, "How many chunks pending?": "Evaluate served model",
                 "Anything new to train on?": "Release lease", "What happened?": "Nothing new"}
# A backlog of many chunks: cut by the backfill's Map, then aggregated by the fan-out.
FANOUT: Choices = {**STEADY, "How many chunks pending?": "Aggregate chunks in parallel",
                   "Backfill planned?": ("Cut backlog in parallel", "Chunk new lines")}


@dataclass
class ExecutionPath:
    """The states one execution enters: {state: entries}, Map children included."""

    entries: dict[str, int] = field(default_factory=dict)
    transitions: int = 0


def walk(asl: Mapping[str, Any], choices: Choices, map_items: int = 0) -> ExecutionPath:
    """Follow `asl` from StartAt: Next of a Task/Map/Pass, the branch `choices` names at a
    Choice (its Default if not named), until a Succeed/Fail/End. A Map runs its
    ItemProcessor `map_items` times."""
    out = ExecutionPath()
    states, name = asl["States"], asl["StartAt"]
    for _ in range(10 * len(states)):
        st = states[name]
        out.entries[name] = out.entries.get(name, 0) + 1
        out.transitions += 1
        if st["Type"] == "Map":
            child = walk(st["ItemProcessor"], choices)
            for k, v in child.entries.items():
                out.entries[k] = out.entries.get(k, 0) + v * map_items
            out.transitions += child.transitions * map_items
        if st["Type"] == "Choice":
            targets = {c["Next"] for c in st["Choices"]} | {st.get("Default")}
            picked = choices.get(name, st.get("Default"))
            nxt = (picked[min(out.entries[name], len(picked)) - 1]
                   if isinstance(picked, tuple) else picked)
            if nxt not in targets:
                raise ValueError(f"{name!r} cannot go to {nxt!r} (it goes to "
                                 f"{sorted(t for t in targets if t)})")
            name = str(nxt)
        elif st["Type"] in ("Succeed", "Fail") or st.get("End"):
            return out
        else:
            name = st["Next"]
    raise ValueError("the walk does not end: a loop in the definition")


def task_functions(asl: Mapping[str, Any]) -> dict[str, str]:
    """{Task state: the template's function logical id} for every lambda:invoke task."""
    out = {}
    stack = [asl["States"]]
    while stack:
        for name, st in stack.pop().items():
            if st["Type"] == "Map":
                stack.append(st["ItemProcessor"]["States"])
            if st.get("Resource") == "arn:aws:states:::lambda:invoke":
                m = re.fullmatch(r"\$\{(\w+)Arn\}", st["Parameters"]["FunctionName"])
                if m:
                    out[name] = m.group(1)
    return out


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Inputs:
    lines: int = FULL_CRITEO_LINES                 # of the backfill
    chunk_lines: int = 1_000_000                   # ChunkLines
    max_train_rows: int = 4_000_000                # MaxTrainRows
    measured_lines: int = DEFAULT_LINES            # lines of the measured execution
    seconds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SECONDS))
    memory_mb: dict[str, int] = field(default_factory=dict)      # function -> MemorySize
    ephemeral_mb: dict[str, int] = field(default_factory=dict)   # function -> /tmp size
    bytes_per_row: dict[str, float] = field(default_factory=lambda: dict(BYTES_PER_ROW))
    backend: Literal["lambda", "sagemaker"] = "lambda"
    instance_type: str = "ml.m5.4xlarge"
    sagemaker_speedup: float = 1.0       # job seconds = Lambda training seconds / this
    source: str = "README measured figures"


def template_sizes(template: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """({function: MemorySize}, {function: EphemeralStorage MB}) with Globals' default."""
    default = int(template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))
    memory, ephemeral = {}, {}
    for name, res in template["Resources"].items():
        if res.get("Type") == "AWS::Serverless::Function":
            props = res.get("Properties", {})
            memory[name] = int(props.get("MemorySize", default))
            ephemeral[name] = int(props.get("EphemeralStorage", {}).get("Size", 512))
    return memory, ephemeral


def from_bench(results: Mapping[str, Any]) -> tuple[int, dict[str, float], str] | None:
    """(lines, seconds per state, source) of a bench run's pipeline section, if it ran."""
    section = results.get("sections", {}).get("pipeline") or {}
    raw = section.get("raw") or {}
    lines = (raw.get("chunk") or {}).get("lines")
    states = raw.get("states") or []
    if section.get("status") != "ok" or not lines or not states:
        return None
    seconds = {s["name"]: float(s["seconds"]) for s in states
               if s.get("type") in ("Task", "Map")}
    date = results.get("machine", {}).get("date", "?")
    return int(lines), seconds, f"bench {date} ({results.get('mode', '?')})"


def load_inputs(root: Path, results_path: Path | None = None, **overrides: Any) -> Inputs:
    from ctr_infra.deploy import load_template

    template = load_template(root / "template.yaml")
    memory, ephemeral = template_sizes(template)
    params = template.get("Parameters", {})
    base = Inputs(memory_mb=memory, ephemeral_mb=ephemeral,
                  chunk_lines=int(params["ChunkLines"]["Default"]),
                  max_train_rows=int(params["MaxTrainRows"]["Default"]),
                  instance_type=str(params["TrainInstanceType"]["Default"]))
    path = results_path or root / ".local" / "bench" / "results.json"
    if path.exists():
        found = from_bench(json.loads(path.read_text()))
        if found:
            lines, seconds, source = found
            # A state the bench did not enter (e.g. the fan-out) keeps its default,
            # scaled to the bench's lines.
            merged = {k: v * (lines / DEFAULT_LINES if SCALING.get(k) != "fixed" else 1)
                      for k, v in DEFAULT_SECONDS.items()}
            merged.update(seconds)
            if "Aggregate to Parquet" in seconds and "Aggregate one chunk" not in seconds:
                merged["Aggregate one chunk"] = seconds["Aggregate to Parquet"]
            base = replace(base, measured_lines=lines, seconds=merged, source=source)
    memory_over = overrides.pop("memory_mb", None) or {}
    unknown = set(memory_over) - set(memory)
    if unknown:
        from ctr.errors import ConfigError

        raise ConfigError(f"--memory-mb: no function {', '.join(sorted(unknown))} in "
                          f"template.yaml (functions: {', '.join(sorted(memory))})")
    out = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if memory_over:
        out = replace(out, memory_mb={**out.memory_mb, **memory_over})
    return out


# --------------------------------------------------------------------------- the model

@dataclass
class Cost:
    """Quantities and dollars of one scenario."""

    executions: int = 0
    lambda_gb_s: float = 0.0
    lambda_requests: int = 0
    lambda_ephemeral_gb_s: float = 0.0
    transitions: int = 0
    s3_put: int = 0
    s3_get: int = 0
    metric_calls: int = 0
    sagemaker_hours: float = 0.0

    def add(self, other: Cost) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def dollars(self, instance_type: str) -> dict[str, float]:
        hourly = SAGEMAKER_TRAINING_USD_PER_HOUR[instance_type]
        volume = (SAGEMAKER_VOLUME_GB * self.sagemaker_hours / HOURS_PER_MONTH
                  * PRICES["sagemaker_volume_gb_month"].usd)
        parts = {
            "lambda_compute": self.lambda_gb_s * PRICES["lambda_gb_s"].usd
            + self.lambda_ephemeral_gb_s * PRICES["lambda_ephemeral_gb_s"].usd,
            "lambda_requests": self.lambda_requests * PRICES["lambda_request"].usd,
            "step_functions": self.transitions * PRICES["sfn_transition"].usd,
            "s3_requests": self.s3_put * PRICES["s3_put"].usd
            + self.s3_get * PRICES["s3_get"].usd,
            "cloudwatch_metrics": self.metric_calls * PRICES["cw_put_metric_data"].usd,
            "sagemaker": self.sagemaker_hours * hourly + volume,
        }
        parts["total"] = sum(parts.values())
        return parts


def state_seconds(inputs: Inputs, state: str, lines: int, window: int) -> float:
    base = inputs.seconds.get(state, 0.0)
    kind = SCALING.get(state, "fixed")
    if kind == "lines":
        return base * lines / inputs.measured_lines if lines else IDLE_SECONDS
    if kind == "window":
        measured_window = min(inputs.measured_lines, inputs.max_train_rows)
        return base * window / measured_window if window else IDLE_SECONDS
    return base


MAP_CHILD_STATES = {"Aggregate one chunk", "Cut one range"}


def _lines_per_entry(state: str, entries: int, lines: int, map_items: int,
                     child_lines: int) -> list[int]:
    """The lines each entry of `state` handles: a Map child its chunk; with a fan-out,
    the backfill's first plan scans the backlog and later entries (the second plan, the
    one-chunk cut after it) find nothing left; otherwise every entry sees `lines`."""
    if state in MAP_CHILD_STATES:
        return [child_lines] * entries
    if map_items and state == "Plan backfill":
        return [lines] + [0] * (entries - 1)
    if map_items and state == "Chunk new lines":
        return [0] * entries
    return [lines] * entries


def execution_cost(inputs: Inputs, asl: Mapping[str, Any], choices: Choices, *,
                   lines: int, window: int, map_items: int = 0, child_lines: int = 0) -> Cost:
    """One execution: `lines` new lines (chunked and aggregated inline), or `map_items`
    Distributed Map children of `child_lines` each; training on `window` rows."""
    path = walk(asl, choices, map_items)
    functions = task_functions(asl)
    cost = Cost(executions=1, transitions=path.transitions)
    for state, entries in path.entries.items():
        for st_lines in _lines_per_entry(state, entries, lines, map_items, child_lines):
            seconds = state_seconds(inputs, state, st_lines, window)
            put, get = S3_REQUESTS.get(state, Requests()).count(
                st_lines * inputs.bytes_per_row["raw"])
            cost.s3_put += put
            cost.s3_get += get
            function = functions.get(state)
            if function is not None:
                gb = inputs.memory_mb[function] / 1024
                extra = max(inputs.ephemeral_mb.get(function, 512) - 512, 0) / 1024
                cost.lambda_gb_s += seconds * gb
                cost.lambda_ephemeral_gb_s += seconds * extra
                cost.lambda_requests += 1
            elif state == "Train model":             # the SageMaker training job
                job_s = seconds / inputs.sagemaker_speedup + SAGEMAKER_STARTUP_S
                cost.sagemaker_hours += job_s / 3600
    fresh = lines > 0 or map_items > 0
    cost.metric_calls = METRIC_CALLS["fresh" if fresh else "idle"]
    return cost


def steady(inputs: Inputs, asl: Mapping[str, Any]) -> Cost:
    """One execution with one new chunk, the bucket already holding a full window."""
    return execution_cost(inputs, asl, STEADY, lines=inputs.chunk_lines,
                          window=inputs.max_train_rows)


def idle(inputs: Inputs, asl: Mapping[str, Any]) -> Cost:
    return execution_cost(inputs, asl, IDLE, lines=0, window=0)


def chunk_sizes(lines: int, chunk_lines: int) -> list[int]:
    full, rest = divmod(lines, chunk_lines)
    return [chunk_lines] * full + ([rest] if rest else [])


def backfill_sequential(inputs: Inputs, asl: Mapping[str, Any]) -> Cost:
    """One execution per chunk, each training on min(rows so far, MaxTrainRows)."""
    total, seen = Cost(), 0
    for size in chunk_sizes(inputs.lines, inputs.chunk_lines):
        seen += size
        total.add(execution_cost(inputs, asl, STEADY, lines=size,
                                 window=min(seen, inputs.max_train_rows)))
    return total


def backfill_fanout(inputs: Inputs, asl: Mapping[str, Any]) -> Cost:
    """The chunks cut up front (their cutting billed as chunk seconds for all lines),
    aggregated by the Distributed Map in one execution that trains once."""
    sizes = chunk_sizes(inputs.lines, inputs.chunk_lines)
    # Every child is billed for its own chunk; they are equal but the last, so the mean
    # chunk gives the same total for the linear seconds (requests round per child).
    return execution_cost(inputs, asl, FANOUT, lines=inputs.lines,
                          window=min(inputs.lines, inputs.max_train_rows),
                          map_items=len(sizes), child_lines=round(inputs.lines / len(sizes)))


def storage(inputs: Inputs) -> dict[str, float]:
    """GB kept after a backfill of `inputs.lines`, and $/month: the gzip source, the
    chunker's decompressed copy (state/) and the chunks (both raw text), the Parquet."""
    b = inputs.bytes_per_row
    gb = {"raw_gzip": inputs.lines * b["gzip"] / GB,
          "decompressed_copy": inputs.lines * b["raw"] / GB,
          "chunks": inputs.lines * b["raw"] / GB,
          "parquet": inputs.lines * b["parquet"] / GB}
    gb["total"] = sum(gb.values())
    return {**{f"{k}_gb": v for k, v in gb.items()},
            "usd_per_month": gb["total"] * PRICES["s3_gb_month"].usd}


def prediction_log_per_million(record_bytes: int = 1200) -> dict[str, float]:
    """Firehose cost of 1M logged requests (one record each, rounded up to 5 KB)."""
    billed = math.ceil(record_bytes / FIREHOSE_RECORD_ROUNDING) * FIREHOSE_RECORD_ROUNDING
    gb = 1e6 * billed / GB
    return {"billed_gb": gb, "usd": gb * PRICES["firehose_gb"].usd}


def estimate(inputs: Inputs, asl: Mapping[str, Any]) -> dict[str, Any]:
    scenarios = {"backfill_sequential": backfill_sequential(inputs, asl),
                 "backfill_fanout": backfill_fanout(inputs, asl),
                 "steady_execution": steady(inputs, asl),
                 "idle_execution": idle(inputs, asl)}
    return {
        "prices": {"as_of": PRICES_AS_OF, "region": PRICE_REGION,
                   "items": {k: asdict(v) for k, v in PRICES.items()},
                   "sagemaker_training_per_hour": SAGEMAKER_TRAINING_USD_PER_HOUR},
        "inputs": {**asdict(inputs), "assumed_seconds": sorted(ASSUMED)},
        "scenarios": {name: {"quantities": asdict(c),
                             "usd": c.dollars(inputs.instance_type)}
                      for name, c in scenarios.items()},
        "idle_month": {"executions": SCHEDULED_PER_MONTH,
                       "usd": SCHEDULED_PER_MONTH
                       * scenarios["idle_execution"].dollars(inputs.instance_type)["total"]},
        "storage": storage(inputs),
        "prediction_log_per_million_requests": prediction_log_per_million(),
    }
