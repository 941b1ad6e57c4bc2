"""Deploy template.yaml to the local cloud's CloudFormation (with the SAM transform).

The template is the single source of truth. For the local cloud only code locations
change: every function's CodeUri and every layer's ContentUri points at the source
directory in this checkout through LocalStack's hot-reload marker bucket, so edits take
effect without a rebuild, and the state machine's DefinitionUri is inlined (the
emulator's transform cannot read local files). Everything else goes through unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cfnlint.decode import cfn_yaml

from ctr_infra.localcloud import CloudConfig, CloudError, api_url, boto3_client, repo_root

HOT_RELOAD_BUCKET = "hot-reload"  # LocalStack's BUCKET_MARKER_LOCAL
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
FAILED = {"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE",
          "UPDATE_ROLLBACK_FAILED", "DELETE_COMPLETE", "DELETE_FAILED",
          "UPDATE_FAILED", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"}


def load_template(path: Path) -> dict[str, Any]:
    """YAML with CloudFormation tags (!Ref, !Sub, ...) -> plain JSON-able dict."""
    return json.loads(json.dumps(cfn_yaml.loads(path.read_text(), fname=str(path))))


def localize(template: dict[str, Any], root: Path) -> dict[str, Any]:
    """Rewrite code locations for the local cloud (see module docstring)."""
    out = json.loads(json.dumps(template))
    for name, res in out.get("Resources", {}).items():
        props = res.get("Properties", {})
        kind = res.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = {"Bucket": HOT_RELOAD_BUCKET,
                                "Key": str((root / props["CodeUri"]).resolve())}
        elif kind == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = {"Bucket": HOT_RELOAD_BUCKET,
                                   "Key": str((root / props["ContentUri"]).resolve())}
        elif kind == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
            uri = props.pop("DefinitionUri")
            if not isinstance(uri, str):
                raise CloudError(f"{name}: only a local DefinitionUri file is supported")
            props["Definition"] = json.loads((root / uri).read_text())
    return out


def _params(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in values.items()]


def deploy(cfg: CloudConfig, parameters: dict[str, str], timeout_s: float = 300) -> dict[str, str]:
    """Create or update the stack; wait for it; return its outputs (+ the local API URL)."""
    root = repo_root()
    body = json.dumps(localize(load_template(root / "template.yaml"), root))
    cfn = boto3_client(cfg, "cloudformation")
    kwargs = {"StackName": cfg.stack_name, "TemplateBody": body,
              "Parameters": _params(parameters),
              "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM",
                               "CAPABILITY_AUTO_EXPAND"]}
    current = _stack_status(cfn, cfg.stack_name)
    if current in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"):
        # A stack whose creation failed cannot be updated, only replaced.
        cfn.delete_stack(StackName=cfg.stack_name)
        _wait_deleted(cfn, cfg.stack_name, timeout_s)
        current = None
    if current in (None, "DELETE_COMPLETE"):
        cfn.create_stack(**kwargs)
    else:
        try:
            cfn.update_stack(**kwargs)
        except ClientError as err:
            if "No updates are to be performed" not in str(err):
                raise
    status = _wait(cfn, cfg.stack_name, timeout_s)
    if status not in DONE:
        reasons = _failure_reasons(cfn, cfg.stack_name)
        raise CloudError(f"stack {cfg.stack_name} ended in {status}:\n{reasons}")
    return stack_outputs(cfg)


def stack_outputs(cfg: CloudConfig) -> dict[str, str]:
    cfn = boto3_client(cfg, "cloudformation")
    stack = cfn.describe_stacks(StackName=cfg.stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if "ApiId" in outputs:
        outputs["LocalApiUrl"] = api_url(cfg, outputs["ApiId"], outputs.get("ApiStage", "v1"))
    return outputs


def _stack_status(cfn: Any, name: str) -> str | None:
    try:
        return str(cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])
    except ClientError as err:
        if "does not exist" in str(err):
            return None
        raise


def _wait(cfn: Any, name: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = _stack_status(cfn, name) or "MISSING"
    while time.monotonic() < deadline:
        status = _stack_status(cfn, name) or "MISSING"
        if status in DONE or status in FAILED:
            return status
        time.sleep(0.5)
    raise CloudError(f"stack {name} still {status} after {timeout_s:.0f}s")


def _wait_deleted(cfn: Any, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _stack_status(cfn, name) in (None, "DELETE_COMPLETE"):
            return
        time.sleep(0.5)
    raise CloudError(f"stack {name} was not deleted within {timeout_s:.0f}s")


def _failure_reasons(cfn: Any, name: str) -> str:
    events = cfn.describe_stack_events(StackName=name).get("StackEvents", [])
    lines = [f"  {e.get('LogicalResourceId')}: {e.get('ResourceStatus')} "
             f"{e.get('ResourceStatusReason', '')}" for e in events
             if "FAILED" in str(e.get("ResourceStatus"))]
    return "\n".join(lines[:20]) or "  (no failure events)"
