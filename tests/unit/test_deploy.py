"""template.yaml is valid for AWS (cfn-lint) and the local deploy changes only code
locations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ctr_infra.deploy import HOT_RELOAD_BUCKET, load_template, localize

ROOT = Path(__file__).resolve().parents[2]


def test_cfn_lint_is_clean():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run([str(cfn_lint), str(ROOT / "template.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_localize_rewrites_only_code_locations():
    original = load_template(ROOT / "template.yaml")
    local = localize(original, ROOT)
    changed = []
    for name, res in original["Resources"].items():
        props, lprops = res.get("Properties", {}), local["Resources"][name].get("Properties", {})
        for key in set(props) | set(lprops):
            if props.get(key) != lprops.get(key):
                changed.append((res["Type"], key))
    assert set(changed) <= {("AWS::Serverless::Function", "CodeUri"),
                            ("AWS::Serverless::LayerVersion", "ContentUri"),
                            ("AWS::Serverless::StateMachine", "DefinitionUri"),
                            ("AWS::Serverless::StateMachine", "Definition")}
    assert {k: v for k, v in original.items() if k != "Resources"} == \
        {k: v for k, v in local.items() if k != "Resources"}
    fn = local["Resources"]["ChunkFunction"]["Properties"]["CodeUri"]
    assert fn == {"Bucket": HOT_RELOAD_BUCKET, "Key": str(ROOT / "functions" / "chunk")}
    layer = local["Resources"]["CtrLayer"]["Properties"]["ContentUri"]
    assert Path(layer["Key"], "python", "ctr", "__init__.py").exists()
    sm = local["Resources"]["PipelineStateMachine"]["Properties"]
    assert sm["Definition"] == json.loads((ROOT / "statemachine/pipeline.asl.json").read_text())


def test_every_function_code_dir_exists_with_its_handler():
    tpl = load_template(ROOT / "template.yaml")
    default_handler = tpl["Globals"]["Function"]["Handler"]
    functions = {n: r for n, r in tpl["Resources"].items()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == {"GuardFunction", "ChunkFunction", "AggregateFunction",
                              "TrainFunction",
                              "ReloadFunction", "PredictFunction"}
    for name, res in functions.items():
        handler = res["Properties"].get("Handler", default_handler)
        module = handler.rsplit(".", 1)[0]
        assert (ROOT / res["Properties"]["CodeUri"] / f"{module}.py").exists(), name


def test_bucket_is_private_encrypted_versioned_and_tls_only():
    tpl = load_template(ROOT / "template.yaml")
    bucket = tpl["Resources"]["DataBucket"]["Properties"]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    stmt = tpl["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert stmt["Effect"] == "Deny"
    assert stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
