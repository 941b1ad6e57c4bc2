"""`ctr model list | promote VERSION | rollback | history | bench`: the model registry by hand.

The tracking server is --tracking-uri, else $MLFLOW_TRACKING_URI, else the running
local cloud's MLflow; the model is --model-name, else $MODEL_NAME, else
criteo_ctr_model. Promote and rollback move registry aliases only: serving follows at
the next reload (`ctr reload`, or the next pipeline run).

Promote and rollback append to the audit trail (`ctr.registry.audit`: an object under
`audit/` and an EventBridge event) with the actor `cli:<user>` ($CTR_ACTOR, else the
login name). The trail's bucket is --bucket, else $CTR_BUCKET, else the local cloud's
bucket when the registry is the local cloud's too (no --tracking-uri or
$MLFLOW_TRACKING_URI); without one the command says that it wrote no record.
`history` prints the trail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

    from ctr.registry import VersionSummary
    from ctr.registry.audit import AuditEvent, AuditRecorder
    from ctr.storage import Store

DEFAULT_MODEL_NAME = "criteo_ctr_model"


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("model", help="model registry: list, promote, rollback, benchmark")
    model_sub = group.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    p = model_sub.add_parser("list", help="every version with aliases, status and metrics")
    _add_registry_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = model_sub.add_parser("promote", help="give VERSION the alias 'production'")
    p.add_argument("version", type=int)
    p.add_argument("--reason", default="manual promotion (ctr model promote)")
    _add_registry_arguments(p)
    _add_audit_arguments(p)
    p.set_defaults(func=cmd_promote)

    p = model_sub.add_parser("rollback", help="production <- previous")
    p.add_argument("--reason", default="manual rollback (ctr model rollback)")
    _add_registry_arguments(p)
    _add_audit_arguments(p)
    p.set_defaults(func=cmd_rollback)

    p = model_sub.add_parser("history", help="the audit trail: every registry event")
    p.add_argument("--model-name", default=os.environ.get("MODEL_NAME", DEFAULT_MODEL_NAME))
    p.add_argument("--limit", type=int, default=None, help="only the newest N events")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_audit_arguments(p)
    p.set_defaults(func=cmd_history, tracking_uri=None)

    p = model_sub.add_parser("bench", help="training quality benchmark on synthetic data")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--holdout-share", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nthread", type=int, default=0, help="XGBoost threads (0 = all)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.set_defaults(func=cmd_bench)


def _add_registry_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                                          "$MLFLOW_TRACKING_URI, else the local cloud's)")
    p.add_argument("--model-name", default=os.environ.get("MODEL_NAME", DEFAULT_MODEL_NAME))


def _add_audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="bucket of the audit trail (default: $CTR_BUCKET, else "
                                    "the local cloud's)")
    p.add_argument("--endpoint-url", help="S3 and EventBridge endpoint (default: "
                                          "$AWS_ENDPOINT_URL or AWS)")


def audit_target(args: argparse.Namespace) -> tuple[Store, Any] | None:
    """(store, events client) of the audit trail, or None (see the module docstring)."""
    from ctr.registry.audit import events_client
    from ctr.storage import Store, make_s3_client

    bucket = args.bucket or os.environ.get("CTR_BUCKET")
    if bucket:
        return (Store(make_s3_client(args.endpoint_url), bucket),
                events_client(args.endpoint_url))
    if args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
        return None                 # another registry: the local cloud's bucket is not its
    from ctr_infra import localcloud

    cfg = localcloud.CloudConfig()
    bucket = localcloud.read_outputs(cfg).get("BucketName")
    if not bucket:
        return None
    return (Store(localcloud.boto3_client(cfg, "s3"), bucket),
            localcloud.boto3_client(cfg, "events"))


def recorder_for(args: argparse.Namespace) -> AuditRecorder | None:
    from ctr.registry.audit import AuditRecorder, cli_user

    target = audit_target(args)
    if target is None:
        print("note: no audit bucket (--bucket or $CTR_BUCKET): this change is not "
              "recorded in the audit trail", file=sys.stderr)
        return None
    store, events = target
    return AuditRecorder(store, events, actor=cli_user(), manual=True)


def client_for(args: argparse.Namespace) -> Any:
    from mlflow import MlflowClient

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from ctr_infra.localcloud import CloudConfig

        uri = CloudConfig().mlflow_uri
    return MlflowClient(tracking_uri=uri)


def fixed_width(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def show[M: pydantic.BaseModel](items: list[M], as_json: bool, empty: str,
                                 table: Callable[[list[M]], str]) -> None:
    """Print `items` as JSON, as a table, or the `empty` message."""
    if as_json:
        print(json.dumps([item.model_dump(mode="json") for item in items], indent=2))
    else:
        print(table(items) if items else empty)


def format_versions(versions: list[VersionSummary]) -> str:
    header = ("version", "aliases", "status", "logloss", "auc", "measured on", "gate",
              "reason")
    rows = [header]
    for v in versions:
        m = v.metrics
        rows.append((str(v.version), ",".join(v.aliases) or "-", v.status or "-",
                     f"{m['holdout_logloss']:.5f}" if "holdout_logloss" in m else "-",
                     f"{m['holdout_auc']:.4f}" if "holdout_auc" in m else "-",
                     measured_on(v), gate_summary(v), (v.status_reason or "-")[:70]))
    lines = fixed_width(rows)
    return (lines + "\nlogloss and auc: each version on its own holdout (\"measured on\"); "
            "compare versions by the gate column, measured on shared rows")


def measured_on(v: VersionSummary) -> str:
    """`part_000003[3500:5000] + ...` from the holdout tag (digests left out), or the
    data window of versions trained before holdouts were recorded."""
    if not v.holdout:
        return v.data_window or "-"
    pieces = [p.split("@")[0].removeprefix("parquet/").replace(".parquet", "")
              for p in v.holdout.split(" + ")]
    return " + ".join(pieces)


def gate_summary(v: VersionSummary) -> str:
    """`vs v2: +0.00031 (<= 0.001)`: the gate's mean difference and 95% upper bound."""
    g = v.gate
    if "logloss_diff_upper95" not in g:
        return "-"
    against = g.get("compared_with_version", "?")
    against = against if against == "prior" else f"v{against}"
    return (f"vs {against}: {g.get('logloss_diff_mean', '?')}, upper "
            f"{g['logloss_diff_upper95']}")


def cmd_list(args: argparse.Namespace) -> int:
    from ctr import registry

    versions = registry.snapshot(client_for(args), args.model_name).versions
    show(versions, args.json, f"{args.model_name}: no versions yet", format_versions)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from ctr import registry

    out = registry.promote(client_for(args), args.model_name, args.version, reason=args.reason,
                           recorder=recorder_for(args))
    print(f"{out.status}: production = v{out.production}, previous = "
          f"{'v' + str(out.previous) if out.previous else '-'}"
          "\nserving follows at the next reload (`ctr reload`)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from ctr import registry

    out = registry.rollback(client_for(args), args.model_name, reason=args.reason,
                            recorder=recorder_for(args))
    if out.status == "unchanged":
        print(f"unchanged: production = v{out.production}; {out.reason}")
        return 1
    print(f"rolled back: production = v{out.production} (restored; was v{out.rolled_back})"
          f", reason: {args.reason}\nserving follows at the next reload (`ctr reload`)")
    return 0


def format_history(events: list[AuditEvent]) -> str:
    header = ("time", "kind", "version", "production", "previous", "actor", "reason")
    rows = [header]

    def v(n: int | None) -> str:
        return "-" if n is None else f"v{n}"

    for e in events:
        rows.append((e.time, e.kind, v(e.version),
                     f"{v(e.production_before)}->{v(e.production_after)}",
                     f"{v(e.previous_before)}->{v(e.previous_after)}", e.actor,
                     e.reason[:80]))
    return fixed_width(rows)


def cmd_history(args: argparse.Namespace) -> int:
    from ctr.errors import ConfigError
    from ctr.registry.audit import list_events

    target = audit_target(args)
    if target is None:
        raise ConfigError("no audit bucket: pass --bucket, set CTR_BUCKET, or start the "
                          "local cloud (make up)")
    events = list_events(target[0], args.model_name)
    if args.limit is not None:
        events = events[-args.limit:] if args.limit > 0 else []
    show(events, args.json, f"{args.model_name}: no registry events recorded yet",
         format_history)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ctr_infra.bench import train as bench_train

    results = bench_train.run(rows=args.rows, holdout_share=args.holdout_share, seed=args.seed,
                              nthread=args.nthread)
    print(bench_train.to_markdown(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0
