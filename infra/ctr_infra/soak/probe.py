"""The Step Functions -> Lambda connection probe: how often does the emulator fail a
Lambda task with `States.Runtime` ("Connection was closed before we received a valid
response from endpoint URL") when the connection its task client would reuse has been
idle for about the gateway's keep-alive timeout?

What the emulator does (localstack-core 2026.3.0, read in its source): every Lambda task
builds its client with `boto_client_for` (`.../stepfunctions/asl/utils/boto_client.py`),
which first calls STS AssumeRole through one *cached* internal STS client (a keep-alive
connection pool shared by every task of every execution) and then Lambda Invoke through
a client made for the fresh credentials. That config has `retries={"total_max_attempts":
1}`: a connection error is not retried, and any non-ClientError becomes `States.Runtime`
with the exception text as cause. The gateway (twisted) closes a keep-alive connection
after 60 s idle; a request sent on it as it closes is answered by a reset. The URL in
the reported cause, `http://localhost:4566/`, is STS's (Invoke's has a path).

The probe starts a private LocalStack, an echo function and a two-task state machine:
invoke, Wait `wait` seconds, invoke again -- launched as one burst of `executions`, so
the burst's pooled connections all sit idle for `wait` seconds and are reused around
the 60 s mark. It counts the executions that fail and their errors. Run it with
CTR_IN_MEMORY_CLIENT=0 (the emulator's HTTP hop, before the fix) and =1 (the fix).

    python -m ctr_infra.soak.probe --executions 100 --in-memory-client 0
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from ctr_infra import localcloud
from ctr_infra.localcloud import CloudConfig

ROLE = "arn:aws:iam::000000000000:role/ctr-probe"
FUNCTION = "ctr-probe-echo"


def _definition(function_arn: str, task: str = "lambda") -> str:
    """task "lambda": a Lambda invoke; "sdk": S3 ListBuckets through the aws-sdk
    integration, the same client path (`boto_client_for`: STS AssumeRole first) without
    a Lambda environment per execution."""
    call: dict[str, Any] = (
        {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
         "Parameters": {"FunctionName": function_arn, "Payload.$": "$"}, "ResultPath": None}
        if task == "lambda" else
        {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:listBuckets",
         "Parameters": {}, "ResultPath": None})
    return json.dumps({"StartAt": "First call", "States": {
        "First call": {**call, "Next": "Idle"},
        "Idle": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Second call"},
        "Second call": {**call, "End": True}}})


def _echo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


def run(executions: int, waits: tuple[int, ...], in_memory_client: bool,
        echo: Any = print, task: str = "lambda") -> dict[str, Any]:
    """One probe on a private LocalStack (stopped at the end); the figures."""
    state = Path(tempfile.mkdtemp(prefix="ctr-probe-"))
    cfg = CloudConfig.on_free_ports(state, "ctr-probe")
    saved = os.environ.get("CTR_IN_MEMORY_CLIENT")
    os.environ["CTR_IN_MEMORY_CLIENT"] = "1" if in_memory_client else "0"
    started = time.monotonic()
    try:
        localcloud.start_localstack(cfg)
        with localcloud.aws_env_applied(cfg):
            return _probe(cfg, executions, waits, echo, task) | {
                "in_memory_client": in_memory_client, "task": task,
                "seconds": round(time.monotonic() - started)}
    finally:
        if saved is None:
            os.environ.pop("CTR_IN_MEMORY_CLIENT", None)
        else:
            os.environ["CTR_IN_MEMORY_CLIENT"] = saved
        localcloud.stop(cfg, names=("localstack",))
        shutil.rmtree(state, ignore_errors=True)


def _probe(cfg: CloudConfig, executions: int, waits: tuple[int, ...], echo: Any,
           task: str) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    lam = localcloud.boto3_client(cfg, "lambda")
    sfn = localcloud.boto3_client(cfg, "stepfunctions")
    arn = lam.create_function(FunctionName=FUNCTION, Runtime="python3.13", Role=ROLE,
                              Handler="index.handler", Code={"ZipFile": _echo_zip()},
                              Timeout=30)["FunctionArn"]
    lam.get_waiter("function_active_v2").wait(FunctionName=FUNCTION)
    machine = sfn.create_state_machine(name="ctr-probe", definition=_definition(arn, task),
                                       roleArn=ROLE)["stateMachineArn"]
    load_before = os.getloadavg()
    echo(f"    {executions} executions in one burst, waits {waits}s, load {load_before}")
    def start(i: int) -> str:         # from 16 threads: the burst starts within ~1-2 s
        return str(sfn.start_execution(
            stateMachineArn=machine, name=f"probe-{i}",
            input=json.dumps({"wait": waits[i % len(waits)], "i": i}))["executionArn"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        arns = list(pool.map(start, range(executions)))
    deadline = time.monotonic() + max(waits) + 300
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(arns) and time.monotonic() < deadline:
        time.sleep(2)
        for a in arns:
            if a not in results:
                d = sfn.describe_execution(executionArn=a)
                if d["status"] != "RUNNING":
                    results[a] = d
    failed = {a: d for a, d in results.items() if d["status"] != "SUCCEEDED"}
    errors = Counter(f"{d.get('error')}: {(d.get('cause') or '')[:160]}" for d in failed.values())
    return {"executions": executions, "finished": len(results), "failed": len(failed),
            "errors": dict(errors), "waits_s": list(waits),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def run_keepalive(clients: int, spread_s: float, echo: Any = print) -> dict[str, Any]:
    """The trigger alone, on a private LocalStack: `clients` STS clients built with the
    emulator's task-client config (one attempt, TCP keep-alive) each make one call, then
    call again on their pooled connection 60 s + delta later, delta spread evenly over
    [-spread_s, +spread_s] around the gateway's idle timeout. Counts the second calls
    that fail, by delta."""
    import threading

    import boto3
    from botocore.config import Config

    state = Path(tempfile.mkdtemp(prefix="ctr-probe-"))
    cfg = CloudConfig.on_free_ports(state, "ctr-probe")
    sfn_config = Config(parameter_validation=False, retries={"total_max_attempts": 1},
                        tcp_keepalive=True)
    outcomes: list[tuple[float, str]] = []
    lock = threading.Lock()
    try:
        localcloud.start_localstack(cfg)
        env = localcloud.aws_env(cfg)

        def one(delta: float) -> None:
            sts = boto3.client("sts", endpoint_url=cfg.endpoint_url, config=sfn_config,
                               region_name=env["AWS_DEFAULT_REGION"],
                               aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                               aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
            sts.get_caller_identity()
            time.sleep(max(0.0, 60.0 + delta))
            try:
                sts.get_caller_identity()
                result = "ok"
            except Exception as err:  # the finding: which error, at which delta
                result = f"{type(err).__name__}: {str(err)[:120]}"
            with lock:
                outcomes.append((delta, result))

        deltas = [-spread_s + 2 * spread_s * i / max(1, clients - 1) for i in range(clients)]
        load_before = os.getloadavg()
        echo(f"    {clients} keep-alive clients, second call at 60 s + [{-spread_s}, "
             f"{spread_s}] s, load {load_before}")
        threads = [threading.Thread(target=one, args=(d,)) for d in deltas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
    finally:
        localcloud.stop(cfg, names=("localstack",))
        shutil.rmtree(state, ignore_errors=True)
    failed = sorted((d, r) for d, r in outcomes if r != "ok")
    return {"mode": "keepalive", "clients": clients, "spread_s": spread_s,
            "failed": len(failed), "errors": dict(Counter(r for _, r in failed)),
            "failed_deltas_ms": [round(1000 * d, 1) for d, _ in failed],
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--executions", type=int, default=100)
    p.add_argument("--waits", default="59,60,61", help="Wait seconds, cycled over executions")
    p.add_argument("--in-memory-client", choices=["0", "1"], default="1")
    p.add_argument("--task", choices=["lambda", "sdk"], default="lambda",
                   help="what each of the two tasks calls (see _definition)")
    p.add_argument("--keepalive", type=int, metavar="CLIENTS",
                   help="probe the trigger alone with this many keep-alive STS clients")
    p.add_argument("--spread", type=float, default=0.5,
                   help="--keepalive: seconds around the 60 s idle timeout")
    p.add_argument("--out", help="append the JSON result to this file")
    args = p.parse_args(argv)
    if args.keepalive:
        result = run_keepalive(args.keepalive, args.spread)
    else:
        result = run(args.executions, tuple(int(w) for w in args.waits.split(",")),
                     args.in_memory_client == "1", task=args.task)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
