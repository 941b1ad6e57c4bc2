"""`ctr cost`: what a full backfill and one scheduled execution cost on AWS, from the
measured seconds and the template's memory sizes at list prices (ctr_infra.cost).

Seconds come from the newest `make bench` (.local/bench/results.json, pipeline section)
when it is there, else from the README's measured figures. --json prints everything,
including the price table with its date and region.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ctr.errors import ConfigError
from ctr_infra import cost
from ctr_infra.bench.report import markdown_table
from ctr_infra.localcloud import repo_root

SCENARIO_TITLES = {"backfill_sequential": "backfill, one chunk per execution",
                   "backfill_fanout": "backfill, fan-out, one execution",
                   "steady_execution": "execution with a new chunk",
                   "idle_execution": "execution, nothing new"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cost", help="AWS cost per full backfill and per scheduled "
                                    "execution, from measured seconds at list prices")
    p.add_argument("--lines", type=int, help=f"lines of the backfill (default "
                                             f"{cost.FULL_CRITEO_LINES:,}: the full Criteo)")
    p.add_argument("--chunk-lines", type=int, help="ChunkLines (default 1,000,000)")
    p.add_argument("--max-train-rows", type=int, help="MaxTrainRows (default 4,000,000)")
    p.add_argument("--memory-mb", action="append", default=[], metavar="FUNCTION=MB",
                   help="override a function's memory, e.g. train=10240 (repeatable)")
    p.add_argument("--backend", choices=["lambda", "sagemaker"],
                   help="TrainBackend (default lambda)")
    p.add_argument("--instance-type", choices=sorted(cost.SAGEMAKER_TRAINING_USD_PER_HOUR),
                   help="TrainInstanceType for --backend sagemaker (default ml.m5.4xlarge)")
    p.add_argument("--sagemaker-speedup", type=float,
                   help="training job seconds = the Lambda's training seconds / this "
                        "(default 1: no faster than the 6-vCPU Lambda)")
    p.add_argument("--results", type=Path, help="bench results file (default "
                                                ".local/bench/results.json, if present)")
    p.add_argument("--no-bench", action="store_true",
                   help="ignore bench results: the README's measured figures")
    p.add_argument("--json", action="store_true", help="print the whole estimate as JSON")
    p.set_defaults(func=cmd_cost)


def parse_memory(values: list[str]) -> dict[str, int]:
    out = {}
    for value in values:
        name, sep, mb = value.partition("=")
        if not sep or not mb.isdigit() or not name:
            raise ConfigError(f"--memory-mb {value!r}: expected FUNCTION=MB, e.g. train=10240")
        logical = name if name.endswith("Function") else f"{name.title()}Function"
        out[logical] = int(mb)
    return out


def inputs_from(args: argparse.Namespace, root: Path) -> cost.Inputs:
    results = args.results
    if args.no_bench:
        results = root / ".local" / "bench" / "no-such-results.json"
    elif results is not None and not results.exists():
        raise ConfigError(f"--results {results}: no such file")
    memory = parse_memory(args.memory_mb)
    inputs = cost.load_inputs(root, results, lines=args.lines, chunk_lines=args.chunk_lines,
                              max_train_rows=args.max_train_rows, memory_mb=memory,
                              backend=args.backend, instance_type=args.instance_type,
                              sagemaker_speedup=args.sagemaker_speedup)
    for name, value in (("--lines", inputs.lines), ("--chunk-lines", inputs.chunk_lines),
                        ("--max-train-rows", inputs.max_train_rows)):
        if value <= 0:
            raise ConfigError(f"{name} must be positive")
    if inputs.sagemaker_speedup <= 0:
        raise ConfigError("--sagemaker-speedup must be positive")
    return inputs


def definition(root: Path, backend: str) -> dict[str, Any]:
    from ctr_infra import asl_variants

    path = asl_variants.SAGEMAKER_ASL if backend == "sagemaker" else asl_variants.LAMBDA_ASL
    return json.loads((root / path).read_text())


def usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.995 else f"${value:.4f}"


def to_text(est: dict[str, Any]) -> str:
    sc = est["scenarios"]
    names = list(SCENARIO_TITLES)
    rows = []
    q = {n: sc[n]["quantities"] for n in names}
    d = {n: sc[n]["usd"] for n in names}
    rows.append(("executions", *(f"{q[n]['executions']:,}" for n in names)))
    rows.append(("Lambda GB-seconds", *(f"{q[n]['lambda_gb_s']:,.0f}" for n in names)))
    rows.append(("Lambda compute", *(usd(d[n]["lambda_compute"]) for n in names)))
    rows.append(("Lambda requests", *(f"{q[n]['lambda_requests']:,} = "
                                      f"{usd(d[n]['lambda_requests'])}" for n in names)))
    rows.append(("Step Functions transitions", *(f"{q[n]['transitions']:,} = "
                                                 f"{usd(d[n]['step_functions'])}" for n in names)))
    rows.append(("S3 PUT/LIST + GET requests", *(
        f"{q[n]['s3_put']:,} + {q[n]['s3_get']:,} = {usd(d[n]['s3_requests'])}"
        for n in names)))
    rows.append(("CloudWatch PutMetricData", *(f"{q[n]['metric_calls']:,} = "
                                               f"{usd(d[n]['cloudwatch_metrics'])}"
                                               for n in names)))
    if est["inputs"]["backend"] == "sagemaker":
        rows.append((f"SageMaker {est['inputs']['instance_type']} hours", *(
            f"{q[n]['sagemaker_hours']:.2f} = {usd(d[n]['sagemaker'])}" for n in names)))
    rows.append(("**total**", *(f"**{usd(d[n]['total'])}**" for n in names)))
    table = markdown_table(("", *(SCENARIO_TITLES[n] for n in names)), rows)
    inp, st = est["inputs"], est["storage"]
    plog = est["prediction_log_per_million_requests"]
    prices = est["prices"]
    lines = [
        f"{inp['lines']:,} lines backfilled, ChunkLines {inp['chunk_lines']:,}, MaxTrainRows "
        f"{inp['max_train_rows']:,}, TrainBackend {inp['backend']}; seconds from "
        f"{inp['source']} ({inp['measured_lines']:,} lines measured; assumed: "
        f"{', '.join(inp['assumed_seconds'])}); list prices {prices['region']} as of "
        f"{prices['as_of']}.",
        "", *table, "",
        f"Storage after the backfill: {st['total_gb']:.1f} GB (gzip source "
        f"{st['raw_gzip_gb']:.1f}, decompressed copy {st['decompressed_copy_gb']:.1f}, "
        f"chunks {st['chunks_gb']:.1f}, Parquet {st['parquet_gb']:.1f}) = "
        f"{usd(st['usd_per_month'])}/month.",
        f"A month of the 10-minute schedule with nothing new "
        f"({est['idle_month']['executions']:,} executions): {usd(est['idle_month']['usd'])}.",
        f"Prediction log: {usd(plog['usd'])} of Firehose per 1M logged requests "
        f"({plog['billed_gb']:.1f} GB billed at 5 KB per record).",
    ]
    return "\n".join(lines)


def cmd_cost(args: argparse.Namespace) -> int:
    root = repo_root()
    inputs = inputs_from(args, root)
    est = cost.estimate(inputs, definition(root, inputs.backend))
    print(json.dumps(est, indent=2) if args.json else to_text(est))
    return 0
