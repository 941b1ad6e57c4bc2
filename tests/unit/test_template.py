"""The AWS shape of template.yaml: packaging (zip functions with their layers, image
functions with their Dockerfile, chosen by the measured sizes) and the bucket's
protections. What the local cloud makes of it is in test_deploy.py."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from ctr_infra import sizes
from ctr_infra.deploy import LOCAL_HANDLER, LOCAL_RUNTIME, load_template

ROOT = Path(__file__).resolve().parents[2]
TPL = load_template(ROOT / "template.yaml")
RES = TPL["Resources"]
FUNCTIONS = {n: r for n, r in RES.items() if r["Type"] == "AWS::Serverless::Function"}
ZIP = {n: r for n, r in FUNCTIONS.items() if r["Properties"].get("PackageType", "Zip") == "Zip"}
IMAGE = {n: r for n, r in FUNCTIONS.items() if r["Properties"].get("PackageType") == "Image"}
DOCKERFILE = ROOT / "infra" / "images" / "function.Dockerfile"


def short(logical: str) -> str:
    """`ChunkFunction` -> `chunk` (the names ctr_infra.sizes uses)."""
    return logical.removesuffix("Function").lower()


def test_globals_hold_only_what_image_functions_accept():
    # SAM rejects Runtime, Handler or Layers on a PackageType Image function, and
    # Globals apply to every function.
    assert not {"Runtime", "Handler", "Layers", "CodeUri"} & set(TPL["Globals"]["Function"])


DEPS_LAYER_OF = {"GuardFunction": "DepsDataLayer", "ChunkFunction": "DepsDataLayer",
                 "AggregateFunction": "DepsDataLayer", "PredictFunction": "DepsServeLayer",
                 "ScoreFunction": "DepsServeLayer"}


def test_zip_functions_have_runtime_handler_code_and_existing_layers():
    assert set(ZIP) == set(DEPS_LAYER_OF)
    for name, res in ZIP.items():
        props = res["Properties"]
        assert props["Runtime"] == LOCAL_RUNTIME == "python3.13", name
        module = props["Handler"].rsplit(".", 1)[0]
        assert (ROOT / props["CodeUri"] / f"{module}.py").is_file(), name
        layers = [ref["Ref"] for ref in props["Layers"]]
        assert layers == ["CtrLayer", DEPS_LAYER_OF[name]], name
    ctr = RES["CtrLayer"]["Properties"]
    assert (ROOT / ctr["ContentUri"] / "python" / "ctr" / "__init__.py").is_file()
    for layer in set(DEPS_LAYER_OF.values()):
        deps = RES[layer]
        assert (ROOT / deps["Properties"]["ContentUri"] / "requirements.txt").is_file()
        assert "BuildMethod" in deps["Metadata"]       # sam build installs it


def test_predict_uses_snapstart_behind_an_alias_the_api_invokes():
    props = RES["PredictFunction"]["Properties"]
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    alias = props["AutoPublishAlias"]
    body = str(RES["PredictApi"]["Properties"]["DefinitionBody"])
    assert body.count(f"${{PredictFunction.Arn}}:{alias}/invocations") == 2
    assert "${PredictFunction.Arn}/invocations" not in body
    permission = RES["PredictApiInvokePermission"]
    assert permission["Properties"]["FunctionName"] == {
        "Fn::Sub": f"${{PredictFunction.Arn}}:{alias}"}
    assert permission["DependsOn"] == f"PredictFunctionAlias{alias}"
    # The page ships in the zip: web/ next to the handler is the repository's page.
    assert (ROOT / props["CodeUri"] / "web" / "index.html").is_file()


def dockerfile_stages() -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", DOCKERFILE.read_text(), re.M | re.I))


def test_image_functions_build_from_the_dockerfile():
    assert set(IMAGE) == {"TrainFunction", "ReloadFunction", "MonitorFunction"}
    for name, res in IMAGE.items():
        props, meta = res["Properties"], res["Metadata"]
        assert not {"Runtime", "Handler", "Layers", "CodeUri"} & set(props), name
        assert meta["DockerContext"] == "."
        assert (ROOT / meta["DockerContext"] / meta["Dockerfile"]) == DOCKERFILE, name
        assert meta["DockerBuildTarget"] in dockerfile_stages(), name
        args = meta["DockerBuildArgs"]
        assert args["FUNCTION"] == short(name), name
        assert (ROOT / "functions" / args["FUNCTION"] / "app.py").is_file(), name
        assert (ROOT / "layers" / args["DEPS"] / "requirements.txt").is_file(), name


def test_dockerfile_matches_lambda_conventions_and_local_mode():
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    # AWS's Lambda base image for the template's runtime, then stages built on it.
    assert bases[0] == f"public.ecr.aws/lambda/python:{LOCAL_RUNTIME.removeprefix('python')}"
    assert set(bases[1:]) <= dockerfile_stages()
    # One stage: predict and score are zip functions, the page ships in their zip.
    assert dockerfile_stages() == {"function"}
    assert re.findall(r"^CMD\s+\[\"([^\"]+)\"\]", text, re.M) == [LOCAL_HANDLER]
    assert {"FUNCTION", "DEPS"} <= set(re.findall(r"^ARG\s+(\w+)", text, re.M))
    copied = re.findall(r"^COPY\s+(\S+)\s", text, re.M)
    assert copied == ["layers/${DEPS}/requirements.txt", "layers/ctr/python/ctr",
                      "functions/${FUNCTION}/app.py"]


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its
    parent directories decides; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, glob) or fnmatch.fnmatchcase(c, glob.replace("**/", ""))
               for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_images_copy():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in ("infra/images/function.Dockerfile", "functions/train/app.py",
                   "layers/deps-train/requirements.txt", "layers/deps-serve/requirements.txt",
                   "layers/ctr/python/ctr/__init__.py", "layers/ctr/python/ctr/serving/app.py"):
        assert (ROOT / needed).exists() and not docker_ignored(needed, patterns), needed
    for kept_out in (".local/venvs/dev/bin/python", ".git/HEAD", "tests/unit/test_template.py",
                     "layers/ctr/python/ctr/__pycache__/x.cpython-313.pyc", "README.md",
                     "web/index.html"):
        assert docker_ignored(kept_out, patterns), kept_out


def test_function_layers_agree_with_the_size_check():
    declared = {}
    for name, res in ZIP.items():
        deps = [ref["Ref"] for ref in res["Properties"]["Layers"] if ref["Ref"] != "CtrLayer"]
        declared[short(name)] = Path(RES[deps[0]]["Properties"]["ContentUri"]).name
    for name, res in IMAGE.items():
        declared[short(name)] = res["Metadata"]["DockerBuildArgs"]["DEPS"]
    assert declared == sizes.FUNCTION_LAYERS


def test_packaging_follows_the_measured_sizes():
    """Zip where code + layers fit Lambda's 250 MB, a container image only where not."""
    measured = sizes.measure(probe=False)["functions"]
    assert {short(n) for n in ZIP} == {f for f, m in measured.items() if m["fits"]}
    assert {short(n) for n in IMAGE} == {f for f, m in measured.items() if not m["fits"]}


def test_bucket_is_private_encrypted_versioned_and_tls_only():
    bucket = RES["DataBucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    block = props["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                     "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    policy = RES["DataBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "DataBucket"}
    (stmt,) = policy["PolicyDocument"]["Statement"]
    assert (stmt["Effect"], stmt["Principal"], stmt["Action"]) == ("Deny", "*", "s3:*")
    assert stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert stmt["Resource"] == [{"Fn::GetAtt": ["DataBucket", "Arn"]},
                                {"Fn::Sub": "${DataBucket.Arn}/*"}]
