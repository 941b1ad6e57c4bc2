"""Deploy template.yaml to the local cloud's CloudFormation (with the SAM transform).

The template is the single source of truth. For the local cloud only packaging changes:
- every function's CodeUri and every layer's ContentUri points at the source directory
  in this checkout through LocalStack's hot-reload marker bucket, so edits take effect
  without a rebuild;
- container-image functions (train and reload: too big for a zip package in AWS)
  become zip functions of their source directory (`functions/<DockerBuildArgs.FUNCTION>`)
  with the runtime and handler of the image (`infra/images/function.Dockerfile`) and the
  shared code layers, since there is no Docker engine to build or run images;
- dependency layers (a layer with a `Metadata.BuildMethod`, which `sam build`
  pip-installs from its requirements.txt) are dropped: the process Lambda executor runs
  every function with the project's environment on the import path, which already holds
  those packages (what each function ships to AWS is checked by ctr_infra.sizes);
- the state machine's DefinitionUri is inlined (the emulator's transform cannot read
  local files);
- an API's `AlwaysDeploy` is dropped: with it every stack update replaces the API
  deployment resource, and LocalStack 2026.3 then ends the update with the stack's
  outputs gone (measured).
Everything else goes through unchanged.

After the stack is deployed, `apply_snapstart` gives SnapStart to the functions that
declare it: LocalStack 2026.3's CloudFormation handler for AWS::Lambda::Function drops
the `SnapStart` property (measured: the version it publishes has ApplyOn None), so it is
set through the Lambda API and, for a function behind an alias, a version is published
with it and the alias moved -- what the deploy does in AWS. The process executor then
snapshots that version (see infra/lambda_executor).

One limit of the emulator shows through: LocalStack 2026.3 does not implement updating
an API Gateway RestApi from CloudFormation (its update handler raises
NotImplementedError and the stack update still "completes"), so a change of the API's
body on an existing local stack is silently not applied. `RequireApiKey` changes the
body, so `deploy()` refuses to change it on an existing local stack (a clear error
instead of an API that stays open): create the stack with the value wanted.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cfnlint.decode import cfn_yaml

from ctr_infra.localcloud import (
    CloudConfig,
    CloudError,
    api_url,
    boto3_client,
    publish_to_aliases,
    repo_root,
)

HOT_RELOAD_BUCKET = "hot-reload"  # LocalStack's BUCKET_MARKER_LOCAL
# What an image function runs as locally: the base image's Python and the image's CMD.
LOCAL_RUNTIME = "python3.13"
LOCAL_HANDLER = "app.lambda_handler"
IMAGE_METADATA = ("Dockerfile", "DockerContext", "DockerTag", "DockerBuildTarget",
                  "DockerBuildArgs")
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
FAILED = {"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE",
          "UPDATE_ROLLBACK_FAILED", "DELETE_COMPLETE", "DELETE_FAILED",
          "UPDATE_FAILED", "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"}


def load_template(path: Path) -> dict[str, Any]:
    """YAML with CloudFormation tags (!Ref, !Sub, ...) -> plain JSON-able dict."""
    return json.loads(json.dumps(cfn_yaml.loads(path.read_text(), fname=str(path))))


def localize(template: dict[str, Any], root: Path) -> dict[str, Any]:
    """Rewrite packaging for the local cloud (see module docstring)."""
    out = json.loads(json.dumps(template))
    resources = out.get("Resources", {})
    dep_layers = {name for name, res in resources.items() if _is_dependency_layer(res)}
    for name in dep_layers:
        del resources[name]
    code_layers = [{"Ref": name} for name, res in resources.items()
                   if res.get("Type") == "AWS::Serverless::LayerVersion"]
    fn_globals = out.get("Globals", {}).get("Function", {})
    if "Layers" in fn_globals:
        fn_globals["Layers"] = _without_refs(fn_globals["Layers"], dep_layers)
    for name, res in resources.items():
        props = res.get("Properties", {})
        kind = res.get("Type")
        if kind == "AWS::Serverless::Function":
            if props.get("PackageType") == "Image":
                _image_to_zip(name, res, code_layers)
            if "Layers" in props:
                props["Layers"] = _without_refs(props["Layers"], dep_layers)
            if isinstance(props.get("CodeUri"), str):
                props["CodeUri"] = _hot_reload(root, props["CodeUri"])
        elif kind == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = _hot_reload(root, props["ContentUri"])
        elif kind == "AWS::Serverless::Api":
            props.pop("AlwaysDeploy", None)
        elif kind == "AWS::Serverless::StateMachine" and "DefinitionUri" in props:
            uri = props.pop("DefinitionUri")
            if not isinstance(uri, str):
                raise CloudError(f"{name}: only a local DefinitionUri file is supported")
            props["Definition"] = json.loads((root / uri).read_text())
    return out


def _hot_reload(root: Path, rel: str) -> dict[str, str]:
    return {"Bucket": HOT_RELOAD_BUCKET, "Key": str((root / rel).resolve())}


def _is_dependency_layer(res: dict[str, Any]) -> bool:
    return (res.get("Type") == "AWS::Serverless::LayerVersion"
            and "BuildMethod" in res.get("Metadata", {}))


def _without_refs(layers: list[Any], names: set[str]) -> list[Any]:
    return [layer for layer in layers
            if not (isinstance(layer, dict) and layer.get("Ref") in names)]


def _image_to_zip(name: str, res: dict[str, Any], code_layers: list[dict[str, str]]) -> None:
    """A container-image function -> a zip function of its source directory."""
    props = res["Properties"]
    metadata = res.get("Metadata", {})
    function = metadata.get("DockerBuildArgs", {}).get("FUNCTION")
    if not isinstance(function, str) or not function:
        raise CloudError(f"{name}: an image function needs Metadata.DockerBuildArgs.FUNCTION "
                         "(its directory under functions/) to run on the local cloud")
    for key in ("PackageType", "ImageUri", "ImageConfig"):
        props.pop(key, None)
    props.update({"CodeUri": f"functions/{function}", "Runtime": LOCAL_RUNTIME,
                  "Handler": LOCAL_HANDLER, "Layers": list(code_layers)})
    for key in IMAGE_METADATA:
        metadata.pop(key, None)
    if "Metadata" in res and not metadata:
        del res["Metadata"]


# Parameters that change the API's body, which the emulator cannot update (see above).
API_BODY_PARAMETERS = ("RequireApiKey",)


def check_api_parameters(template: dict[str, Any], deployed: dict[str, str],
                         wanted: dict[str, str]) -> None:
    """Refuse to change a parameter of API_BODY_PARAMETERS on an existing local stack."""
    defaults = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    for name in API_BODY_PARAMETERS:
        before = deployed.get(name, defaults.get(name))
        after = str(wanted.get(name, defaults.get(name)))
        if before != after:
            raise CloudError(
                f"{name} is {before} on the deployed local stack and cannot become {after} "
                "by an update: the emulator does not apply changes to an existing API. "
                "Deploy it as a new stack (CTR_STACK_NAME) or recreate this one "
                "(make down && make clean && make up).")


def _deployed_parameters(cfn: Any, name: str) -> dict[str, str]:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


def _params(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in values.items()]


# CloudFormation refuses a TemplateBody over 51,200 bytes; a larger template goes by
# TemplateURL from a bucket, as `sam deploy` does with its --s3-bucket.
TEMPLATE_BODY_LIMIT = 51_200


def template_source(s3: Any, endpoint_url: str, stack_name: str, body: str) -> dict[str, str]:
    """{"TemplateBody": body} when CloudFormation takes it inline, else the body stored
    in the `<stack>-templates` bucket (created when missing; key = content digest, so a
    redeploy of the same template writes nothing new) and {"TemplateURL": ...}."""
    data = body.encode()
    if len(data) <= TEMPLATE_BODY_LIMIT:
        return {"TemplateBody": body}
    bucket = f"{stack_name.lower()}-templates"
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
    key = f"template-{hashlib.sha256(data).hexdigest()[:16]}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return {"TemplateURL": f"{endpoint_url.rstrip('/')}/{bucket}/{key}"}


def deploy(cfg: CloudConfig, parameters: dict[str, str], timeout_s: float = 300) -> dict[str, str]:
    """Create or update the stack; wait for it; return its outputs (+ the local API URL)."""
    root = repo_root()
    template = load_template(root / "template.yaml")
    body = json.dumps(localize(template, root), separators=(",", ":"))
    cfn = boto3_client(cfg, "cloudformation")
    source = template_source(boto3_client(cfg, "s3"), cfg.endpoint_url, cfg.stack_name, body)
    kwargs = {"StackName": cfg.stack_name, **source,
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
        check_api_parameters(template, _deployed_parameters(cfn, cfg.stack_name), parameters)
        try:
            cfn.update_stack(**kwargs)
        except ClientError as err:
            if "No updates are to be performed" not in str(err):
                raise
    status = _wait(cfn, cfg.stack_name, timeout_s)
    if status not in DONE:
        reasons = _failure_reasons(cfn, cfg.stack_name)
        raise CloudError(f"stack {cfg.stack_name} ended in {status}:\n{reasons}")
    apply_snapstart(cfn, boto3_client(cfg, "lambda"), cfg.stack_name, template, timeout_s)
    return stack_outputs(cfg)


def snapstart_functions(template: dict[str, Any]) -> dict[str, str]:
    """Logical function name -> its SnapStart ApplyOn, for functions that turn it on."""
    default = template.get("Globals", {}).get("Function", {}).get("SnapStart", {})
    found = {}
    for name, res in template.get("Resources", {}).items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        apply_on = res.get("Properties", {}).get("SnapStart", default).get("ApplyOn", "None")
        if apply_on != "None":
            found[name] = apply_on
    return found


def apply_snapstart(cfn: Any, lam: Any, stack_name: str, template: dict[str, Any],
                    timeout_s: float = 300, every_s: float = 0.2) -> list[str]:
    """Set SnapStart where the template declares it and the emulator dropped it; publish a
    version with it behind the function's aliases if they point at one without. Idempotent:
    nothing happens when the live version already has it. The functions changed."""
    wanted = snapstart_functions(template)
    deadline = time.monotonic() + timeout_s
    changed = []
    for logical, apply_on in sorted(wanted.items()):
        name = cfn.describe_stack_resource(StackName=stack_name, LogicalResourceId=logical)[
            "StackResourceDetail"]["PhysicalResourceId"]
        latest = lam.get_function_configuration(FunctionName=name)
        if latest.get("SnapStart", {}).get("ApplyOn") != apply_on:
            lam.update_function_configuration(FunctionName=name,
                                              SnapStart={"ApplyOn": apply_on})
            while lam.get_function_configuration(FunctionName=name).get(
                    "LastUpdateStatus") != "Successful":
                if time.monotonic() > deadline:
                    raise CloudError(f"{name}: SnapStart update not live in time")
                time.sleep(every_s)
        aliases = lam.list_aliases(FunctionName=name).get("Aliases", [])
        live = [lam.get_function_configuration(FunctionName=name,
                                               Qualifier=a["FunctionVersion"])
                for a in aliases]
        if any(c.get("SnapStart", {}).get("ApplyOn") != apply_on for c in live):
            publish_to_aliases(lam, name, deadline, every_s)
            changed.append(logical)
    return changed


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
