"""`ctr score SOURCE --out s3://<bucket>/batch/<prefix>/`: batch scoring (ctr.scoring).

SOURCE is an object of the stack's bucket under batch/ (`s3://<bucket>/batch/...tsv` or
`.tsv.gz`), or a local file, which is uploaded to `batch/input/<file name>` first
(create-only: an existing object of that name with other bytes is an error). The run
starts the scoring state machine (execution name = run id), waits, and prints the
manifest: the pinned model version, lines = rows + rejects, and where the output parts
are (`<out><run id>/part-NNNNN.tsv`: each valid input line, a tab, its probability).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctr.errors import ConflictError, ValidationError
from ctr_infra import localcloud
from ctr_infra.localcloud import CloudConfig, CloudError

UPLOAD_PREFIX = "batch/input/"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="batch-score a Criteo TSV file into S3 (joined output)")
    p.add_argument("source", help="s3://<bucket>/batch/<key>[.gz] or a local file")
    p.add_argument("--out", required=True, help="s3://<bucket>/batch/<prefix>/ for the output")
    p.add_argument("--range-mb", type=float, default=None,
                   help="bytes per parallel range, in MB (default: the stack's "
                        "ScoreRangeBytes)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="ranges scored at once (default: the stack's ScoreMaxConcurrency)")
    p.add_argument("--run-id", help="execution name and output folder (default: "
                                    "score-<UTC time>-<pid>)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_score)


def parse_s3_uri(uri: str, bucket: str, what: str) -> str:
    """The key of `s3://<bucket>/<key>`, which must be in the stack's bucket."""
    if not uri.startswith("s3://"):
        raise ValidationError(f"{what} must be an s3:// URI, got {uri!r}")
    name, _, key = uri.removeprefix("s3://").partition("/")
    if name != bucket:
        raise ValidationError(f"{what} must be in the stack's bucket {bucket!r} (the score "
                              f"function may read and write only there), got {name!r}")
    return key


def upload(store: Any, path: Path) -> str:
    """A local file -> `batch/input/<name>` (create-only, or the same bytes already)."""
    key = UPLOAD_PREFIX + path.name
    body = path.read_bytes()
    if store.put_if_absent(key, body) is None and store.get(key).body != body:
        raise ConflictError(f"s3://{store.bucket}/{key} exists with other content: rename "
                            "the file or score the object directly")
    return key


def start(stack: localcloud.Stack, input_key: str, output_prefix: str, run_id: str,
          range_bytes: int | None = None, max_concurrency: int | None = None) -> str:
    """Start a scoring execution; returns its ARN."""
    sfn = stack.client("stepfunctions")
    payload = {"input_key": input_key, "output_prefix": output_prefix,
               "range_bytes": range_bytes, "max_concurrency": max_concurrency}
    return str(sfn.start_execution(stateMachineArn=stack.outputs["ScoreStateMachineArn"],
                                   name=run_id, input=json.dumps(payload))["executionArn"])


def cmd_score(args: argparse.Namespace) -> int:
    from ctr_infra.commands.pipeline import _outputs, wait_execution

    cfg = CloudConfig()
    stack = localcloud.Stack(cfg, _outputs(cfg))
    if "ScoreStateMachineArn" not in stack.outputs:
        raise CloudError("the deployed stack has no scoring state machine: `ctr deploy`")
    store = stack.store
    if args.source.startswith("s3://"):
        input_key = parse_s3_uri(args.source, stack.bucket, "SOURCE")
    else:
        input_key = upload(store, Path(args.source))
        print(f"uploaded {args.source} to s3://{stack.bucket}/{input_key}")
    output_prefix = parse_s3_uri(args.out, stack.bucket, "--out")
    run_id = args.run_id or f"score-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    range_bytes = None if args.range_mb is None else int(args.range_mb * 1_000_000)
    arn = start(stack, input_key, output_prefix, run_id, range_bytes, args.concurrency)
    desc = wait_execution(cfg, arn, args.timeout)
    seconds = (desc["stopDate"] - desc["startDate"]).total_seconds()
    if desc["status"] != "SUCCEEDED":
        print(f"scoring {desc['status']} after {seconds:.1f}s: {desc.get('error', '?')}: "
              f"{str(desc.get('cause', ''))[:500]}")
        return 1
    out = json.loads(desc.get("output") or "{}")
    manifest = out["manifest"]["value"]
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"scored      {manifest['lines']:,} lines in {seconds:.1f}s "
          f"({manifest['lines'] / max(seconds, 1e-9):,.0f} lines/s, "
          f"{out['plan']['value']['range_count']} ranges)")
    print(f"model       {manifest['model_name']} v{manifest['model_version']} "
          f"(run {manifest['model_run_id']}), pinned at the start")
    print(f"rows        {manifest['rows']:,} scored, {manifest['rejects']:,} rejected")
    print(f"manifest    s3://{stack.bucket}/{manifest['manifest_key']}")
    return 0
