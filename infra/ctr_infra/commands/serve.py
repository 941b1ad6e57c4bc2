"""`ctr predict` and `ctr reload`: ask the predict API, publish the production model.

The API is --api, else $CTR_API_URL, else the running local cloud's API Gateway URL.
`ctr predict` sends raw Criteo TSV lines (with or without the label) and prints one
probability per line, then the model that produced them (version, run, artifact).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ctr.errors import ConfigError, DomainError, TransientError, ValidationError

BATCH_LINES = 1000          # well under the API's MAX_ROWS and Lambda's 6 MB payload


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict click probabilities through the API")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--line", action="append", metavar="TSV",
                        help="a Criteo TSV line (39 or 40 tab-separated fields); repeatable")
    source.add_argument("--file", type=Path, help="a file of Criteo TSV lines ('-' = stdin)")
    p.add_argument("--api", help="base URL of the predict API (default: $CTR_API_URL or "
                                 "the local cloud's)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answers")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("reload", help="publish the registry's production model to serving")
    p.add_argument("--wait", type=float, default=15.0, metavar="SECONDS",
                   help="then wait until the API serves it (0 = do not wait; default 15)")
    p.add_argument("--api", help="base URL of the predict API for --wait")
    p.set_defaults(func=cmd_reload)


def api_base(explicit: str | None) -> str:
    url = explicit or os.environ.get("CTR_API_URL")
    if not url:
        from ctr_infra import localcloud

        url = localcloud.read_outputs(localcloud.CloudConfig()).get("LocalApiUrl")
    if not url:
        raise ConfigError("no API URL: pass --api, set CTR_API_URL, or start the local "
                          "cloud (`make up`)")
    return url.rstrip("/")


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 60.0) -> dict[str, Any]:
    """One API call; an error answer becomes the DomainError it describes."""
    import httpx

    try:
        response = httpx.request(method, f"{base}{path}", json=body, timeout=timeout)
    except httpx.HTTPError as err:
        raise TransientError(f"cannot reach the API at {base}: {err}") from err
    try:
        doc = response.json()
    except ValueError:
        doc = {"message": response.text[:300]}
    if response.status_code == 422:
        raise ValidationError(_describe(doc), errors=doc.get("errors", []))
    if response.status_code == 503:
        raise TransientError(doc.get("message", "the API has no model yet"))
    if response.status_code >= 400:
        raise DomainError(f"HTTP {response.status_code}: {doc.get('message', doc)}")
    return dict(doc)


def _describe(doc: dict[str, Any]) -> str:
    lines = [doc.get("message", "invalid request")]
    lines += [f"  {'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}"
              for e in doc.get("errors", [])[:20]]
    return "\n".join(lines)


def read_lines(args: argparse.Namespace) -> list[str]:
    if args.line:
        return [line.replace("\\t", "\t") for line in args.line]
    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    return [line for line in text.splitlines() if line.strip()]


def cmd_predict(args: argparse.Namespace) -> int:
    base = api_base(args.api)
    lines = read_lines(args)
    if not lines:
        raise ValidationError("no input lines")
    model: dict[str, Any] | None = None
    for start in range(0, len(lines), BATCH_LINES):
        answer = call(base, "POST", "/predict", {"lines": lines[start:start + BATCH_LINES]})
        if args.json:
            print(json.dumps(answer))
            continue
        if model is not None and answer["model"]["version"] != model["version"]:
            print(f"# note: the API switched to version {answer['model']['version']} "
                  f"at line {start + 1}")
        model = answer["model"]
        for i, p in enumerate(answer["predictions"], start=start + 1):
            print(f"{i}\t{p:.6f}\t{p * 100:.2f}%")
    if model is not None:
        print(format_provenance(model))
    return 0


def format_provenance(model: dict[str, Any]) -> str:
    return "\n".join([
        f"# model     {model['name']} version {model['version']} (alias {model['alias']})",
        f"# run       {model.get('run_name')} ({model['run_id']})",
        f"# artifact  {model['artifact_uri']}",
        f"# trained   {model.get('trained_at')}",
    ])


def cmd_reload(args: argparse.Namespace) -> int:
    from ctr_infra import localcloud
    from ctr_infra.commands.pipeline import invoke_stage

    cfg = localcloud.CloudConfig()
    outputs = localcloud.read_outputs(cfg)
    if not outputs or not localcloud.running_pid(cfg, "localstack"):
        raise ConfigError("the local cloud is not running: `make up` first")
    result = invoke_stage(cfg, outputs, "reload", {})
    print(f"reload: {result['status']} version {result['version']} ({result['prefix']})")
    if args.wait > 0:
        base = api_base(args.api)
        deadline = time.monotonic() + args.wait
        while True:
            health = call(base, "GET", "/health")
            if health.get("version") == result["version"]:
                print(f"the API serves version {result['version']}")
                return 0
            if time.monotonic() > deadline:
                print(f"the API still serves version {health.get('version')} after "
                      f"{args.wait:g}s", file=sys.stderr)
                return 1
            time.sleep(0.5)
    return 0
