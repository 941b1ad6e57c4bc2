"""`ctr up | down | status | logs | deploy`: the embedded local cloud's lifecycle."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

from ctr_infra import localcloud
from ctr_infra.localcloud import CloudConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start LocalStack + MLflow, deploy the stack, print URLs")
    p.add_argument("--schedule", choices=["on", "off"], default="on",
                   help="enable the scheduled rule (default: on)")
    p.add_argument("--no-bootstrap-data", action="store_true",
                   help="do not ingest the default synthetic dataset / run the first execution")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop exactly the processes `up` started")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="what runs, where, and the stack's state")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("logs", help="show logs of the local cloud and of each function")
    p.add_argument("name", nargs="?", help="localstack | mlflow | <function name>; "
                                           "default: list logs and tail all function logs")
    p.add_argument("-n", "--lines", type=int, default=60)
    p.add_argument("-f", "--follow", action="store_true")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("deploy", help="(re)deploy template.yaml to the running local cloud")
    p.add_argument("--schedule", choices=["on", "off"], default="off")
    p.set_defaults(func=cmd_deploy)


def stack_parameters(cfg: CloudConfig, schedule_on: bool) -> dict[str, str]:
    params = {
        "MlflowTrackingUri": cfg.mlflow_uri,
        "ScheduleEnabled": "true" if schedule_on else "false",
    }
    for env_name, param in (("CTR_SCHEDULE_RATE", "ScheduleRate"),
                            ("CTR_CHUNK_LINES", "ChunkLines"),
                            ("CTR_BACKFILL_CONCURRENCY", "BackfillConcurrency"),
                            ("CTR_SOURCE_URL", "SourceUrl"),
                            ("CTR_MAX_TRAIN_ROWS", "MaxTrainRows"),
                            ("CTR_HOLDOUT_MIN_ROWS", "HoldoutMinRows"),
                            ("CTR_MIN_NEW_ROWS", "MinNewRows"),
                            ("CTR_PROMOTION_TOLERANCE", "PromotionTolerance"),
                            ("CTR_MONITOR_ALARM_PERIOD", "MonitorAlarmPeriod")):
        if os.environ.get(env_name):
            params[param] = os.environ[env_name]
    return params


def bring_up(cfg: CloudConfig, schedule_on: bool, quiet: bool = False) -> dict[str, str]:
    """Start what is not running, deploy (create or update), start MLflow. Idempotent."""
    from ctr_infra.deploy import deploy

    say = (lambda *_: None) if quiet else print
    t0 = time.monotonic()
    say(f"==> LocalStack (host mode) on {cfg.endpoint_url}")
    localcloud.start_localstack(cfg)
    say(f"    ready after {time.monotonic() - t0:.1f}s")
    say(f"==> deploying template.yaml as stack '{cfg.stack_name}'")
    outputs = deploy(cfg, stack_parameters(cfg, schedule_on))
    say(f"    deployed after {time.monotonic() - t0:.1f}s")
    say(f"==> MLflow tracking server on {cfg.mlflow_uri}")
    localcloud.start_mlflow(cfg, outputs["BucketName"])
    outputs["MlflowUrl"] = cfg.mlflow_uri
    outputs["EndpointUrl"] = cfg.endpoint_url
    localcloud.write_outputs(cfg, outputs)
    say(f"    ready after {time.monotonic() - t0:.1f}s")
    return outputs


@contextlib.contextmanager
def running_cloud(cfg: CloudConfig) -> Iterator[dict[str, str]]:
    """A local cloud for one session (tests, bench): AWS_* point at it while it runs,
    the stack is deployed with the schedule off; yields the stack's outputs. At the end
    exactly the processes it started are stopped (by PID) and AWS_* restored."""
    with localcloud.aws_env_applied(cfg):
        try:
            yield bring_up(cfg, schedule_on=False, quiet=True)
        finally:
            localcloud.stop(cfg)


def print_urls(outputs: dict[str, str]) -> None:
    api = outputs.get("LocalApiUrl", "?")
    print()
    print(f"  Web page     {api}/")
    print(f"  API          {api}/health  {api}/predict  {api}/model-info  {api}/docs")
    print(f"  MLflow UI    {outputs.get('MlflowUrl', '?')}")
    print(f"  Emulator     {outputs.get('EndpointUrl', '?')}  (bucket {outputs.get('BucketName')})")
    print(f"  Pipeline     {outputs.get('StateMachineArn', '?')}")
    print()
    print("  `make down` stops everything; `make logs` shows logs; `make status` what runs.")


def cmd_up(args: argparse.Namespace) -> int:
    cfg = CloudConfig()
    outputs = bring_up(cfg, schedule_on=args.schedule == "on")
    if not args.no_bootstrap_data:
        from ctr_infra.commands.pipeline import bootstrap_first_model

        bootstrap_first_model(cfg, outputs)
    print_urls(outputs)
    return 0


def cmd_down(_: argparse.Namespace) -> int:
    stopped = localcloud.stop(CloudConfig())
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    cfg = CloudConfig()
    for name, url in (("localstack", f"{cfg.endpoint_url}/_localstack/health"),
                      ("mlflow", f"{cfg.mlflow_uri}/health")):
        pid = localcloud.running_pid(cfg, name)
        print(f"{name:11s} {'running pid ' + str(pid) if pid else 'stopped'}  {url}")
    outputs = localcloud.read_outputs(cfg)
    if outputs and localcloud.running_pid(cfg, "localstack"):
        try:
            from ctr_infra.deploy import stack_outputs
            stack_outputs(cfg)
            print(f"stack       {cfg.stack_name}: deployed")
        except Exception as err:  # report, don't crash: status is diagnostic
            print(f"stack       {cfg.stack_name}: not deployed ({type(err).__name__})")
        print_urls(outputs)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    cfg = CloudConfig()
    lambda_dir = cfg.logs_dir / "lambda"
    if args.name:
        candidates = [cfg.logs_dir / f"{args.name}.log", lambda_dir / f"{args.name}.log",
                      *sorted(lambda_dir.glob(f"*{args.name}*.log"))]
        files = [p for p in candidates if p.exists()][:1]
    else:
        files = sorted(lambda_dir.glob("*.log"))
        print("logs: " + ", ".join(str(p) for p in
                                   [*sorted(cfg.logs_dir.glob("*.log")), *files]))
    if not files:
        print("no logs yet" + (f" for {args.name}" if args.name else ""))
        return 0 if not args.name else 1
    cmd = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *map(str, files)]
    return subprocess.call(cmd)


def cmd_deploy(args: argparse.Namespace) -> int:
    cfg = CloudConfig()
    outputs = bring_up(cfg, schedule_on=args.schedule == "on")
    print_urls(outputs)
    return 0
