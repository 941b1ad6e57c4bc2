"""`ctr run`, `ctr run --stage S`, `ctr runs`: the pipeline by hand, like the seed's DAGs.

`ctr run` starts an execution of the state machine, shows each state as it is entered
and prints a summary; `--stage` invokes one function alone (chunk, aggregate, train,
reload, monitor), as the seed's per-stage DAGs did; `ctr runs` lists recent executions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ctr_infra import localcloud
from ctr_infra.localcloud import CloudConfig, CloudError

STAGES = {"guard": "GuardFunctionName", "chunk": "ChunkFunctionName",
          "aggregate": "AggregateFunctionName", "train": "TrainFunctionName",
          "reload": "ReloadFunctionName", "monitor": "MonitorFunctionName"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the pipeline (or one stage) and print a summary")
    p.add_argument("--stage", choices=sorted(set(STAGES) - {"guard"}),
                   help="invoke one stage's function alone")
    p.add_argument("--payload", default="{}", help="JSON event for --stage")
    p.add_argument("--no-wait", action="store_true", help="start the execution and return")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("runs", help="recent pipeline executions with status and duration")
    p.add_argument("-n", type=int, default=15)
    p.set_defaults(func=cmd_runs)


def _outputs(cfg: CloudConfig) -> dict[str, str]:
    outputs = localcloud.read_outputs(cfg)
    if not outputs or not localcloud.running_pid(cfg, "localstack"):
        raise CloudError("the local cloud is not running: `make up` first")
    return outputs


def invoke_stage(cfg: CloudConfig, outputs: dict[str, str], stage: str,
                 payload: dict[str, Any]) -> dict[str, Any]:
    lam = localcloud.boto3_client(cfg, "lambda")
    resp = lam.invoke(FunctionName=outputs[STAGES[stage]], Payload=json.dumps(payload).encode())
    body = json.loads(resp["Payload"].read() or b"null")
    if resp.get("FunctionError"):
        raise CloudError(f"{stage} failed: {body.get('errorType')}: {body.get('errorMessage')}")
    return dict(body or {})


def start_execution(cfg: CloudConfig, outputs: dict[str, str], name: str | None = None) -> str:
    sfn = localcloud.boto3_client(cfg, "stepfunctions")
    name = name or f"manual-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    return str(sfn.start_execution(stateMachineArn=outputs["StateMachineArn"], name=name,
                                   input="{}")["executionArn"])


def wait_execution(cfg: CloudConfig, arn: str, timeout_s: float,
                   show: bool = True) -> dict[str, Any]:
    """Poll until the execution ends, printing each state as it is entered."""
    sfn = localcloud.boto3_client(cfg, "stepfunctions")
    t0 = time.monotonic()
    seen: set[int] = set()
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        if show:
            for ev in sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]:
                if ev["id"] in seen:
                    continue
                seen.add(ev["id"])
                entered = ev.get("stateEnteredEventDetails")
                if entered and not ev["type"].startswith("Map"):
                    print(f"  {time.monotonic() - t0:7.1f}s  {entered['name']}", flush=True)
        if desc["status"] != "RUNNING":
            return dict(desc)
        if time.monotonic() - t0 > timeout_s:
            raise CloudError(f"execution still running after {timeout_s:.0f}s: {arn}")
        time.sleep(1.0)


def summarize(desc: dict[str, Any]) -> list[str]:
    """Human summary of a finished execution from its output document."""
    seconds = (desc["stopDate"] - desc["startDate"]).total_seconds()
    lines = [f"status      {desc['status']} in {seconds:.1f}s  ({desc['name']})"]
    if desc["status"] != "SUCCEEDED":
        lines.append(f"error       {desc.get('error', '?')}: {desc.get('cause', '')[:500]}")
        return lines
    out = json.loads(desc.get("output") or "{}")
    val = lambda key: (out.get(key) or {}).get("value") or {}  # noqa: E731
    lease = val("lease")
    if lease and not lease.get("acquired"):
        lines.append(f"skipped     {lease.get('reason')}")
        return lines
    chunk = val("chunk")
    lines.append(f"chunk       {chunk.get('status', '?')}: {chunk.get('lines', 0):,} lines"
                 + (f" -> chunk {chunk['chunk_index']}" if "chunk_index" in chunk else ""))
    aggs = [val("aggregate")] if out.get("aggregate") else list(out.get("fanout") or [])
    rows = sum(int(a.get("rows_out", 0)) for a in aggs)
    rejects = sum(int(a.get("rows_rejected", 0)) for a in aggs)
    if aggs:
        lines.append(f"aggregate   {rows:,} rows added, {rejects:,} rejected"
                     + (f" ({len(aggs)} parallel batches)" if out.get("fanout") else ""))
    train = val("train")
    if train:
        m = train.get("metrics") or {}
        metric = ", ".join(f"{k}={v:.4f}" for k, v in m.items()
                           if k in ("holdout_logloss", "holdout_auc", "calibration_error")
                           and isinstance(v, int | float))
        lines.append(f"train       {train.get('status')}: version {train.get('version', '-')} "
                     f"{metric}")
        verdict = "promoted" if train.get("promoted") else "not promoted"
        lines.append(f"promotion   {verdict}: {train.get('reason', '')}")
    reload = val("reload")
    if reload:
        lines.append(f"reload      {reload.get('status')}: serving version {reload.get('version')}")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    cfg = CloudConfig()
    outputs = _outputs(cfg)
    if args.stage:
        t0 = time.monotonic()
        result = invoke_stage(cfg, outputs, args.stage, json.loads(args.payload))
        print(json.dumps(result, indent=2, default=str))
        print(f"({args.stage} took {time.monotonic() - t0:.1f}s)", file=sys.stderr)
        return 0
    arn = start_execution(cfg, outputs)
    print(f"started {arn}")
    if args.no_wait:
        return 0
    desc = wait_execution(cfg, arn, args.timeout)
    print("\n".join(summarize(desc)))
    if desc["status"] != "SUCCEEDED":
        f = failure_detail(localcloud.boto3_client(cfg, "stepfunctions"), arn)
        if f["state"]:
            print(f"failed in  {f['state']}: {f['error']}: {(f['cause'] or '')[:500]}")
    return 0 if desc["status"] == "SUCCEEDED" else 1


# History events that carry a step's error (Task* for service tasks, Lambda* for plain
# Lambda ARNs, Map* for a Map state), each with `error` and `cause` in its details.
_FAILURE_EVENTS = ("TaskFailed", "TaskTimedOut", "LambdaFunctionFailed",
                   "LambdaFunctionTimedOut", "MapRunFailed", "MapStateFailed",
                   "ExecutionFailed")
FAIL_PREFIX = "Pipeline."       # the ASL's name for a step's States.* error


def failure_detail(sfn: Any, arn: str) -> dict[str, Any]:
    """Why a failed execution failed, from its history: the state whose error ended it,
    the error and cause that state reported, and how many times it failed (retries).
    Works for executions from before the Fail states were fixed too (their reported
    error was the service's refusal of a States.* name, their history has the truth)."""
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    state = None
    fail_states: set[str] = set()
    failures: list[tuple[str | None, str, str]] = []
    for ev in events:
        if (entered := ev.get("stateEnteredEventDetails")) is not None:
            state = entered["name"]
            if ev["type"] == "FailStateEntered":
                fail_states.add(state)
            continue
        if ev["type"] in _FAILURE_EVENTS and state not in fail_states:
            details: dict[str, Any] = next(
                (v for k, v in ev.items() if k.endswith("EventDetails")), {})
            failures.append((state if ev["type"] != "ExecutionFailed" else None,
                             str(details.get("error", "")), str(details.get("cause", ""))))
    step = [f for f in failures if f[0] is not None]
    if not step:
        return {"state": None, "error": None, "cause": None, "attempts": 0}
    # the last step failure before the failure path is the one that ended the run
    name, error, cause = step[-1]
    return {"state": name, "error": error, "cause": cause,
            "attempts": sum(1 for f in step if f[0] == name and f[1] == error)}


def cmd_runs(args: argparse.Namespace) -> int:
    cfg = CloudConfig()
    outputs = _outputs(cfg)
    sfn = localcloud.boto3_client(cfg, "stepfunctions")
    execs = sfn.list_executions(stateMachineArn=outputs["StateMachineArn"],
                                maxResults=args.n)["executions"]
    if not execs:
        print("no executions yet")
    for ex in execs:
        end = ex.get("stopDate")
        dur = f"{(end - ex['startDate']).total_seconds():7.1f}s" if end else "running"
        line = f"{ex['startDate']:%Y-%m-%d %H:%M:%S}  {ex['status']:9s} {dur:>9s}  {ex['name']}"
        if ex["status"] in ("FAILED", "TIMED_OUT", "ABORTED"):
            d = sfn.describe_execution(executionArn=ex["executionArn"])
            f = failure_detail(sfn, ex["executionArn"])
            error, cause = f["error"] or d.get("error", ""), f["cause"] or d.get("cause") or ""
            pad = " " * 22
            if f["state"]:
                tries = f" (failed {f['attempts']}x, retries included)" if f["attempts"] > 1 else ""
                line += f"\n{pad}failed state: {f['state']}{tries}"
            line += f"\n{pad}cause: {error}: {cause[:300]}"
        print(line)
    _print_quarantined(cfg, outputs)
    return 0


def _print_quarantined(cfg: CloudConfig, outputs: dict[str, str]) -> None:
    """Quarantined raw sources and chunks, so a stuck-looking pipeline says why (ctr data
    status)."""
    from ctr import aggregate, chunking, layout
    from ctr.storage import Store

    store = Store(localcloud.boto3_client(cfg, "s3"), outputs["BucketName"])
    for q in chunking.load_cursor(store)[0].quarantined:
        print(f"quarantined source: {q.raw_key}: {q.reason} "
              f"({q.lines:,} lines cut before; `ctr data status`)")
    for index in sorted(aggregate.quarantined(store)):
        marker = aggregate.load_quarantine(store, index)
        if marker is not None and not store.exists(layout.parquet_key(index)):
            print(f"quarantined chunk {index}: {marker.reason} (`ctr data status`, "
                  f"`ctr data release {index} --max-reject-share X`)")


def bootstrap_first_model(cfg: CloudConfig, outputs: dict[str, str]) -> None:
    """`make up`'s main job: with nothing in raw/, ingest a default synthetic dataset and
    run the first execution, so the web page shows a production model on first visit."""
    from ctr import ingest, synth
    from ctr.storage import Store

    store = Store(localcloud.boto3_client(cfg, "s3"), outputs["BucketName"])
    if next(iter(store.list_keys("raw/")), None) is not None:
        return
    rows = int(os.environ.get("CTR_BOOTSTRAP_ROWS", "3000000"))
    path = cfg.state_dir / "data" / f"synthetic-{rows}.txt"
    print(f"==> raw/ is empty: generating {rows:,} synthetic Criteo lines ({path})")
    if not path.exists():
        synth.write_tsv(path, rows, seed=7, drift=0.2)
    print("==> ingesting into raw/")
    ingest.put(store, str(path), progress=True)
    print("==> first pipeline execution (chunk -> aggregate -> train -> reload)")
    desc = wait_execution(cfg, start_execution(cfg, outputs, name="bootstrap-first-model"),
                          timeout_s=1800)
    print("\n".join("    " + line for line in summarize(desc)))
