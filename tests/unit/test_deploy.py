"""template.yaml is valid for AWS (cfn-lint), and the local deploy changes only
packaging: every function becomes a zip function of its source directory (image
functions included), dependency layers are dropped, the state machine is inlined."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ctr_infra import deploy
from ctr_infra.deploy import (
    HOT_RELOAD_BUCKET,
    IMAGE_METADATA,
    LOCAL_HANDLER,
    LOCAL_RUNTIME,
    check_api_parameters,
    load_template,
    localize,
)
from ctr_infra.localcloud import CloudError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
LOCAL = localize(TEMPLATE, ROOT)


def functions(tpl: dict) -> dict[str, dict]:
    return {n: r for n, r in tpl["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def refs(node: object) -> set[str]:
    """Every name a Ref or Fn::GetAtt points at, anywhere below `node`."""
    if isinstance(node, dict):
        found = {str(node["Ref"]).split(".")[0]} if "Ref" in node else set()
        if "Fn::GetAtt" in node:
            target = node["Fn::GetAtt"]
            found.add((target[0] if isinstance(target, list) else target).split(".")[0])
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def test_cfn_lint_is_clean():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run([str(cfn_lint), str(ROOT / "template.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_localize_changes_only_packaging():
    dropped = {n for n, r in TEMPLATE["Resources"].items()
               if "BuildMethod" in r.get("Metadata", {})}
    assert dropped == {"DepsDataLayer", "DepsServeLayer"}
    assert set(LOCAL["Resources"]) == set(TEMPLATE["Resources"]) - dropped
    changed = set()
    for name, res in LOCAL["Resources"].items():
        before = TEMPLATE["Resources"][name]
        props, lprops = before.get("Properties", {}), res.get("Properties", {})
        changed |= {(res["Type"], k) for k in set(props) | set(lprops)
                    if props.get(k) != lprops.get(k)}
        if before.get("Metadata") != res.get("Metadata"):
            kept = {k: v for k, v in before.get("Metadata", {}).items()
                    if k not in IMAGE_METADATA}
            assert res.get("Metadata", {}) == kept, name
        assert {k: v for k, v in res.items() if k not in ("Properties", "Metadata")} == \
            {k: v for k, v in before.items() if k not in ("Properties", "Metadata")}, name
    fn = "AWS::Serverless::Function"
    assert changed <= {(fn, "CodeUri"), (fn, "PackageType"), (fn, "Runtime"), (fn, "Handler"),
                       (fn, "Layers"), (fn, "ImageUri"), (fn, "ImageConfig"),
                       ("AWS::Serverless::LayerVersion", "ContentUri"),
                       ("AWS::Serverless::StateMachine", "DefinitionUri"),
                       ("AWS::Serverless::StateMachine", "Definition"),
                       ("AWS::Serverless::Api", "AlwaysDeploy")}
    assert {k: v for k, v in TEMPLATE.items() if k != "Resources"} == \
        {k: v for k, v in LOCAL.items() if k != "Resources"}
    sm = LOCAL["Resources"]["PipelineStateMachine"]["Properties"]
    assert sm["Definition"] == json.loads((ROOT / "statemachine/pipeline.asl.json").read_text())


def test_localize_makes_every_function_a_hot_reload_zip_function():
    layers = {n: r for n, r in LOCAL["Resources"].items()
              if r["Type"] == "AWS::Serverless::LayerVersion"}
    assert set(layers) == {"CtrLayer"}
    assert Path(layers["CtrLayer"]["Properties"]["ContentUri"]["Key"],
                "python", "ctr", "__init__.py").exists()
    images = {n for n, r in functions(TEMPLATE).items()
              if r["Properties"].get("PackageType") == "Image"}
    assert images == {"TrainFunction", "ReloadFunction", "MonitorFunction"}
    for name, res in functions(LOCAL).items():
        props = res["Properties"]
        assert props.get("PackageType", "Zip") == "Zip", name
        assert not {"ImageUri", "ImageConfig"} & set(props), name
        assert not set(IMAGE_METADATA) & set(res.get("Metadata", {})), name
        code = props["CodeUri"]
        directory = ROOT / "functions" / name.removesuffix("Function").lower()
        assert code == {"Bucket": HOT_RELOAD_BUCKET, "Key": str(directory)}, name
        assert (props["Runtime"], props["Handler"]) == (LOCAL_RUNTIME, LOCAL_HANDLER), name
        assert (directory / f"{props['Handler'].rsplit('.', 1)[0]}.py").is_file(), name
        assert props["Layers"] == [{"Ref": "CtrLayer"}], name
    known = set(LOCAL["Resources"]) | set(LOCAL["Parameters"])
    dangling = {ref for ref in refs(LOCAL["Resources"]) if not ref.startswith("AWS::")} - known
    assert not dangling, dangling
    assert "AlwaysDeploy" not in LOCAL["Resources"]["PredictApi"]["Properties"]


def test_localize_needs_the_function_directory_of_an_image_function():
    tpl = json.loads(json.dumps(TEMPLATE))
    del tpl["Resources"]["TrainFunction"]["Metadata"]["DockerBuildArgs"]["FUNCTION"]
    with pytest.raises(CloudError, match="TrainFunction: an image function needs"):
        localize(tpl, ROOT)


def test_api_key_setting_cannot_silently_change_on_an_existing_local_stack():
    check_api_parameters(TEMPLATE, {"RequireApiKey": "false"}, {})       # default: false
    check_api_parameters(TEMPLATE, {}, {"RequireApiKey": "false"})      # older stack
    check_api_parameters(TEMPLATE, {"RequireApiKey": "true"}, {"RequireApiKey": "true"})
    with pytest.raises(CloudError, match=r"RequireApiKey is false .* cannot become true"):
        check_api_parameters(TEMPLATE, {"RequireApiKey": "false"}, {"RequireApiKey": "true"})
    with pytest.raises(CloudError, match=r"RequireApiKey is true .* cannot become false"):
        check_api_parameters(TEMPLATE, {"RequireApiKey": "true"}, {})


class _TemplateBucket:
    """Just what `template_source` calls: a missing bucket is a ClientError."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, bytes]] = {}

    def head_bucket(self, Bucket: str) -> None:  # boto3's argument names
        if Bucket not in self.buckets:
            raise ClientError({"Error": {"Code": "404"}}, "HeadBucket")

    def create_bucket(self, Bucket: str) -> None:
        self.buckets[Bucket] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self.buckets[Bucket][Key] = Body


def test_a_template_over_cloudformations_body_limit_goes_by_url():
    s3 = _TemplateBucket()
    small = json.dumps({"Resources": {}})
    assert deploy.template_source(s3, "http://127.0.0.1:4566", "Ctr", small) == {
        "TemplateBody": small}
    assert s3.buckets == {}
    # The real template is over the limit (it has outgrown TemplateBody).
    body = json.dumps(LOCAL, separators=(",", ":"))
    assert len(body.encode()) > deploy.TEMPLATE_BODY_LIMIT
    source = deploy.template_source(s3, "http://127.0.0.1:4566/", "Ctr", body)
    (key, stored), = s3.buckets["ctr-templates"].items()
    assert source == {"TemplateURL": f"http://127.0.0.1:4566/ctr-templates/{key}"}
    assert stored == body.encode()
    assert deploy.template_source(s3, "http://127.0.0.1:4566", "Ctr", body) == source


def test_snapstart_is_declared_for_predict_only():
    assert deploy.snapstart_functions(TEMPLATE) == {"PredictFunction": "PublishedVersions"}


class FakeLambdaForSnapStart:
    """$LATEST, published versions and aliases, as much as apply_snapstart uses."""

    def __init__(self, snapstart: str = "None") -> None:
        self.latest = {"SnapStart": {"ApplyOn": snapstart}, "LastUpdateStatus": "Successful"}
        self.versions = {"1": dict(self.latest, State="Active")}
        self.aliases = {"live": "1"}
        self.calls: list[str] = []

    def get_function_configuration(self, FunctionName, Qualifier=None):
        return self.latest if Qualifier is None else self.versions[Qualifier]

    def update_function_configuration(self, FunctionName, SnapStart):
        self.calls.append("update")
        self.latest = dict(self.latest, SnapStart=SnapStart)

    def list_aliases(self, FunctionName):
        return {"Aliases": [{"Name": n, "FunctionVersion": v} for n, v in self.aliases.items()]}

    def publish_version(self, FunctionName):
        self.calls.append("publish")
        version = str(len(self.versions) + 1)
        self.versions[version] = dict(self.latest, State="Active")
        return {"Version": version}

    def update_alias(self, FunctionName, Name, FunctionVersion):
        self.aliases[Name] = FunctionVersion


class FakeStackResources:
    def describe_stack_resource(self, StackName, LogicalResourceId):
        return {"StackResourceDetail": {"PhysicalResourceId": f"stack-{LogicalResourceId}"}}


def test_apply_snapstart_sets_it_publishes_a_version_and_moves_the_alias_once():
    lam = FakeLambdaForSnapStart()
    assert deploy.apply_snapstart(FakeStackResources(), lam, "stack", TEMPLATE) == [
        "PredictFunction"]
    assert lam.calls == ["update", "publish"]
    assert lam.aliases == {"live": "2"}
    assert lam.versions["2"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    # the next deploy finds it done (or a deploy that published with it already)
    assert deploy.apply_snapstart(FakeStackResources(), lam, "stack", TEMPLATE) == []
    assert lam.calls == ["update", "publish"]
