"""TrainBackend (issue 16, part 4): the template and the two pipeline definitions under
both values. lambda (the default) deploys exactly the state machine it always did;
sagemaker deploys the generated definition whose train step is a SageMaker training job
on the train function's image, with a least-privilege execution role. SageMaker cannot
run on the local cloud: the entry point itself is tested in test_managed_train.py."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ctr import layout
from ctr_infra import asl_variants
from ctr_infra.deploy import load_template
from tests.template_render import render
from tests.unit.test_statemachine import RETRY_POLICIES, TASK_POLICIES, successors

ROOT = Path(__file__).resolve().parents[2]
TPL = load_template(ROOT / "template.yaml")
LAMBDA_TEXT = (ROOT / asl_variants.LAMBDA_ASL).read_text()
SAGEMAKER_TEXT = (ROOT / asl_variants.SAGEMAKER_ASL).read_text()
LAMBDA_ASL, SAGEMAKER_ASL = json.loads(LAMBDA_TEXT), json.loads(SAGEMAKER_TEXT)
NEW_STATES = {asl_variants.TRAIN_STATE, asl_variants.READ_STATE}
ON_LAMBDA = render(TPL)
ON_SAGEMAKER = render(TPL, TrainBackend="sagemaker",
                      TrainImageUri="123456789012.dkr.ecr.us-east-1.amazonaws.com/"
                                    "stack1a2b/trainfunction3c4d:python3.13-v1")
BUCKET = "arn:aws:s3:::bucket"


# --------------------------------------------------------------------------- definitions

def test_the_sagemaker_definition_is_generated_from_the_lambda_one():
    assert asl_variants.generated(ROOT) == SAGEMAKER_TEXT, (
        "statemachine/pipeline.sagemaker.asl.json is stale: python -m ctr_infra.asl_variants")
    assert asl_variants.main(["--check"]) == 0


def test_only_the_train_step_differs():
    lam, sm = LAMBDA_ASL["States"], SAGEMAKER_ASL["States"]
    assert set(sm) - set(lam) == {asl_variants.READ_STATE}
    for name in set(lam) - NEW_STATES:
        assert sm[name] == lam[name], name
    # Same order: the read follows the job where the Lambda task stood.
    assert [n for n in sm if n != asl_variants.READ_STATE] == list(lam)
    assert list(sm).index(asl_variants.READ_STATE) == list(sm).index("Train model") + 1
    # The job starts where the Lambda task did and continues where it did.
    train, read = sm[asl_variants.TRAIN_STATE], sm[asl_variants.READ_STATE]
    assert train["Next"] == asl_variants.READ_STATE and read["Next"] == lam["Train model"]["Next"]
    assert train["Catch"] == read["Catch"] == lam["Train model"]["Catch"]
    assert read["ResultPath"] == lam["Train model"]["ResultPath"] == "$.train"
    # The event fields are the Lambda's payload, as hyperparameters.
    assert train["Parameters"]["HyperParameters"] == lam["Train model"]["Parameters"]["Payload"]


def test_every_state_of_the_generated_definition_is_reachable():
    states = SAGEMAKER_ASL["States"]
    seen, todo = set(), [SAGEMAKER_ASL["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            assert name in states, name
            todo.extend(successors(states[name]))
    assert seen == set(states)


def test_the_new_tasks_retry_with_backoff_and_jitter_but_never_refit():
    for name in NEW_STATES:
        for retrier in SAGEMAKER_ASL["States"][name]["Retry"]:
            assert retrier["BackoffRate"] > 1 and retrier["JitterStrategy"] == "FULL", name
    train = SAGEMAKER_ASL["States"][asl_variants.TRAIN_STATE]
    errors = {e for r in train["Retry"] for e in r["ErrorEquals"]}
    assert errors == {"SageMaker.ResourceLimitExceeded", "SageMaker.ThrottlingException"}
    # The Lambda file's own policy table still covers it exactly (test_statemachine).
    assert TASK_POLICIES["Train model"] == ["train"] and "train" in RETRY_POLICIES


def format_result(expression: str, **paths: str) -> str:
    """Evaluate States.Format('<template>', $$.Execution.Name) for `paths`."""
    m = re.fullmatch(r"States\.Format\('([^']*)', (\$\$\.Execution\.Name)\)", expression)
    assert m, expression
    return m.group(1).replace("{}", paths[m.group(2)], 1)


def test_the_state_machine_reads_the_key_the_job_writes():
    read = SAGEMAKER_ASL["States"][asl_variants.READ_STATE]
    assert read["Resource"] == "arn:aws:states:::aws-sdk:s3:getObject"
    assert read["Parameters"]["Bucket"] == "${BucketName}"
    key = format_result(read["Parameters"]["Key.$"], **{"$$.Execution.Name": "exec-1"})
    assert key == layout.train_result_key("exec-1") == "train-results/exec-1.json"
    assert read["ResultSelector"] == {"value.$": "States.StringToJson($.Body)"}


def test_the_job_runs_the_train_functions_image_with_its_entry_point():
    train = SAGEMAKER_ASL["States"][asl_variants.TRAIN_STATE]
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    spec = train["Parameters"]["AlgorithmSpecification"]
    assert spec["TrainingImage"] == "${TrainImageUri}"
    # SageMaker's convention (`train` argument) on the Lambda image: its LAMBDA_TASK_ROOT
    # is /var/task, where the Dockerfile copies functions/train/app.py.
    assert spec["ContainerEntrypoint"] == ["python3", "/var/task/app.py"]
    assert spec["ContainerArguments"] == ["train"]
    dockerfile = (ROOT / "infra/images/function.Dockerfile").read_text()
    assert "COPY functions/${FUNCTION}/app.py ${LAMBDA_TASK_ROOT}/" in dockerfile
    assert "managed_train.run(argv, _train, store)" in (ROOT / "functions/train/app.py").read_text()
    meta = TPL["Resources"]["TrainFunction"]["Metadata"]
    assert meta["DockerBuildArgs"]["FUNCTION"] == "train"
    assert train["Parameters"]["OutputDataConfig"]["S3OutputPath"] == (
        f"s3://${{BucketName}}/{layout.TRAIN_JOBS_PREFIX}")
    name = train["Parameters"]["TrainingJobName.$"]
    assert name.startswith(f"States.Format('{asl_variants.JOB_PREFIX}{{}}', States.Hash(")
    # 63 characters at most: the prefix and a SHA-1 in hex.
    assert len(asl_variants.JOB_PREFIX) + 40 <= 63


def substitute(value: Any, substitutions: dict[str, Any]) -> Any:
    """The template value behind "${Name}" in a definition (else the literal)."""
    m = re.fullmatch(r"\$\{(\w+)\}", value) if isinstance(value, str) else None
    return substitutions[m.group(1)] if m else value


def test_the_job_gets_the_train_functions_environment():
    machine = ON_SAGEMAKER["Resources"]["PipelineStateMachineSageMaker"]["Properties"]
    subs = machine["DefinitionSubstitutions"]
    env = SAGEMAKER_ASL["States"][asl_variants.TRAIN_STATE]["Parameters"]["Environment"]
    function_env = {**TPL["Globals"]["Function"]["Environment"]["Variables"],
                    **TPL["Resources"]["TrainFunction"]["Properties"]["Environment"]["Variables"]}
    job_env = {k: substitute(v, subs) for k, v in env.items()}
    assert {k: job_env[k] for k in function_env} == function_env
    assert set(job_env) - set(function_env) == {"AWS_DEFAULT_REGION", "POWERTOOLS_TRACE_DISABLED"}
    assert job_env["AWS_DEFAULT_REGION"] == {"Ref": "AWS::Region"}
    resources = SAGEMAKER_ASL["States"][asl_variants.TRAIN_STATE]["Parameters"]
    assert substitute(resources["ResourceConfig"]["InstanceType"], subs) == {
        "Ref": "TrainInstanceType"}
    assert resources["StoppingCondition"] == {
        "MaxRuntimeInSeconds.$": "States.StringToJson('${TrainMaxSeconds}')"}
    assert subs["TrainMaxSeconds"] == {"Ref": "TrainMaxSeconds"}


@pytest.mark.parametrize(("machine", "text"), [("PipelineStateMachine", LAMBDA_TEXT),
                                               ("PipelineStateMachineSageMaker", SAGEMAKER_TEXT)])
def test_each_definitions_substitutions_are_exactly_the_ones_it_uses(machine, text):
    used = set(re.findall(r"\$\{(\w+)\}", text))
    defined = set(TPL["Resources"][machine]["Properties"]["DefinitionSubstitutions"])
    assert used == defined, (used - defined, defined - used)


# --------------------------------------------------------------------------- the template

def test_lambda_is_the_default_and_deploys_only_the_lambda_pipeline():
    assert TPL["Parameters"]["TrainBackend"]["Default"] == "lambda"
    assert TPL["Parameters"]["TrainBackend"]["AllowedValues"] == ["lambda", "sagemaker"]
    res = ON_LAMBDA["Resources"]
    assert "PipelineStateMachine" in res
    assert not {"PipelineStateMachineSageMaker", "SageMakerTrainRole"} & set(res)
    machine = res["PipelineStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == str(asl_variants.LAMBDA_ASL)
    assert machine["DefinitionSubstitutions"]["TrainFunctionArn"] == {
        "Fn::GetAtt": ["TrainFunction", "Arn"]}
    assert ON_LAMBDA["Outputs"]["StateMachineArn"]["Value"] == {"Ref": "PipelineStateMachine"}
    assert "sagemaker" not in json.dumps(res).lower().replace("trainonsagemaker", "")


def test_sagemaker_deploys_the_generated_pipeline_under_the_same_name():
    res = ON_SAGEMAKER["Resources"]
    assert "PipelineStateMachine" not in res
    machine = res["PipelineStateMachineSageMaker"]["Properties"]
    lam = ON_LAMBDA["Resources"]["PipelineStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == str(asl_variants.SAGEMAKER_ASL)
    # One pipeline per stack, started by the same schedule.
    assert (machine["Name"], machine["Type"], machine["Events"]) == (
        lam["Name"], lam["Type"], lam["Events"])
    # Every permission of the Lambda pipeline but invoking the train function.
    train_invoke = {"LambdaInvokePolicy": {"FunctionName": {"Ref": "TrainFunction"}}}
    kept = [p for p in lam["Policies"] if p != train_invoke]
    assert len(kept) == len(lam["Policies"]) - 1
    assert kept[:-1] == machine["Policies"][:len(kept) - 1]
    shared = kept[-1]["Statement"]
    assert machine["Policies"][len(kept) - 1]["Statement"][:len(shared)] == shared
    assert ON_SAGEMAKER["Outputs"]["StateMachineArn"]["Value"] == {
        "Ref": "PipelineStateMachineSageMaker"}
    # The train function stays (the image SageMaker runs is the one sam pushes for it).
    assert "TrainFunction" in res


def test_the_image_parameter_accepts_ecr_uris_only():
    pattern = TPL["Parameters"]["TrainImageUri"]["AllowedPattern"]
    for good in ("", "123456789012.dkr.ecr.us-east-1.amazonaws.com/a/b:python3.13-v1",
                 "123456789012.dkr.ecr.eu-west-1.amazonaws.com/repo@sha256:" + "a" * 64):
        assert re.fullmatch(pattern, good), good
    for bad in ("repo:latest", "docker.io/library/python:3.13",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/Repo:x;rm"):
        assert not re.fullmatch(pattern, bad), bad


# --------------------------------------------------------------------------- IAM

def evaluate(value: Any) -> Any:
    """The few intrinsics the IAM resources use, in a stack `stack` of account
    123456789012 in us-east-1 (Fn::Sub of pseudo parameters and DataBucket.Arn,
    Fn::Select/Fn::Split/Ref of a parameter, GetAtt of the SageMaker role)."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": "us-east-1",
              "AWS::AccountId": "123456789012", "AWS::StackName": "stack",
              "DataBucket.Arn": BUCKET}
    if isinstance(value, str):
        return value
    (fn, args), = value.items()
    if fn == "Ref":
        return ON_SAGEMAKER_PARAMS[args]
    if fn == "Fn::GetAtt":
        return {"DataBucket": BUCKET, "SageMakerTrainRole": ROLE_ARN}[args[0]]
    if fn == "Fn::Split":
        return evaluate(args[1]).split(args[0])
    if fn == "Fn::Select":
        return evaluate(args[1])[args[0]]
    if fn == "Fn::Sub":
        text, names = (args, {}) if isinstance(args, str) else (args[0], args[1])
        names = {**pseudo, **{k: evaluate(v) for k, v in names.items()}}
        return re.sub(r"\$\{([\w:.]+)\}", lambda m: names[m.group(1)], text)
    raise AssertionError(f"unexpected intrinsic {fn}")


ON_SAGEMAKER_PARAMS = {"TrainImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/"
                                        "stack1a2b/trainfunction3c4d:python3.13-v1"}
ROLE_ARN = "arn:aws:iam::123456789012:role/stack-SageMakerTrainRole-X"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements() -> list[dict[str, Any]]:
    role = ON_SAGEMAKER["Resources"]["SageMakerTrainRole"]["Properties"]
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


def machine_statements() -> list[dict[str, Any]]:
    machine = ON_SAGEMAKER["Resources"]["PipelineStateMachineSageMaker"]["Properties"]
    return [s for p in machine["Policies"] if "Statement" in p for s in p["Statement"]]


def grants(statements: list[dict[str, Any]], action: str, resource: str,
           create_only: bool = False) -> bool:
    for st in statements:
        if st["Effect"] != "Allow" or not any(fnmatch.fnmatchcase(action, a)
                                               for a in as_list(st["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, evaluate(r)) for r in as_list(st["Resource"])):
            continue
        condition = st.get("Condition")
        if condition == {"Null": {"s3:if-none-match": "false"}} and not create_only:
            continue
        return True
    return False


def test_the_execution_role_can_be_assumed_only_by_sagemaker_of_this_account():
    role = ON_SAGEMAKER["Resources"]["SageMakerTrainRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "ManagedPolicyArns" not in role


def test_the_job_may_do_what_the_train_function_may_and_little_more():
    function = [s for p in TPL["Resources"]["TrainFunction"]["Properties"]["Policies"]
                for s in p["Statement"]]
    role = role_statements()
    for st in function:
        for action in as_list(st["Action"]):
            for resource in as_list(st["Resource"]):
                sample = evaluate(resource).replace("*", "x")
                create_only = "Condition" in st
                assert grants(role, action, sample, create_only), (action, sample)
                if not create_only:
                    continue
                assert not grants(role, action, sample), ("overwrite allowed", sample)
    # What the job adds: its result, create-only; SageMaker's output archive.
    result = f"{BUCKET}/{layout.train_result_key('exec-1')}"
    assert grants(role, "s3:PutObject", result, create_only=True)
    assert not grants(role, "s3:PutObject", result)
    assert grants(role, "s3:PutObject", f"{BUCKET}/train-jobs/ctr-train-x/output/model.tar.gz")
    # Nothing that promotes serving or touches the data it trains on.
    for key in ("serving/production.json", "serving/v3/bundle.tar.gz",
                "parquet/part_000001.parquet", "raw/x.txt", "chunks/chunk_000001.txt",
                "state/lease.json"):
        assert not grants(role, "s3:PutObject", f"{BUCKET}/{key}", create_only=True), key
    s3_written = {evaluate(r).removeprefix(BUCKET + "/") for s in role
                  if "s3:PutObject" in as_list(s["Action"]) for r in as_list(s["Resource"])}
    assert s3_written == {"audit/*", "train-results/*", "serving/registry.json",
                          "mlflow-artifacts/*", "train-jobs/*"}


def test_the_roles_only_wildcard_resources_have_no_resource_level_permission():
    for st in role_statements():
        for action in as_list(st["Action"]):
            assert "*" not in action, action
        if st["Resource"] == "*":
            assert (st["Action"], st.get("Condition")) in (
                ("ecr:GetAuthorizationToken", None),
                ("cloudwatch:PutMetricData",
                 {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}}))
    pull = next(s for s in role_statements() if s.get("Sid") == "PullImage")
    # The repository of TrainImageUri (a nested name as sam creates), not every repository.
    assert evaluate(pull["Resource"]) == (
        "arn:aws:ecr:us-east-1:123456789012:repository/stack1a2b/trainfunction3c4d")
    logs = next(s for s in role_statements() if s.get("Sid") == "JobLogs")
    assert evaluate(logs["Resource"]).endswith(":log-group:/aws/sagemaker/TrainingJobs:*")


def test_the_state_machine_starts_only_its_jobs_and_passes_only_the_job_role():
    statements = machine_statements()
    job = f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{asl_variants.JOB_PREFIX}0a1b"
    for action in ("sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                   "sagemaker:StopTrainingJob"):
        assert grants(statements, action, job)
        assert not grants(statements, action, job.replace("ctr-train-", "other-"))
    (passing,) = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert evaluate(passing["Resource"]) == ROLE_ARN
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert grants(statements, "s3:GetObject", f"{BUCKET}/{layout.train_result_key('e')}")
    assert not grants(statements, "s3:GetObject", f"{BUCKET}/serving/production.json")
    assert not any(s["Action"] == "s3:PutObject" for s in statements)
    invoked = {p["LambdaInvokePolicy"]["FunctionName"]["Ref"]
               for p in ON_SAGEMAKER["Resources"]["PipelineStateMachineSageMaker"]
               ["Properties"]["Policies"] if "LambdaInvokePolicy" in p}
    assert invoked == {"GuardFunction", "ChunkFunction", "AggregateFunction",
                       "ReloadFunction", "MonitorFunction"}          # not the train function
    rule = next(s for s in statements if s.get("Sid") == "SyncRule")
    assert evaluate(rule["Resource"]).endswith(
        ":rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule")


# --------------------------------------------------------------------------- the emulator's parser

PARSE = """
import re, sys
from localstack.services.stepfunctions.asl.parse.asl_parser import AmazonStateLanguageParser
text = sys.stdin.read()
text = re.sub(r"\\$\\{(\\w+)\\}", lambda m: "arn:aws:lambda:us-east-1:000000000000:function:f"
              if m.group(1).endswith("Arn") else "14400", text)
AmazonStateLanguageParser.parse(text)
print("parsed")
"""


@pytest.mark.parametrize("text", [LAMBDA_TEXT, SAGEMAKER_TEXT, SAGEMAKER_TEXT.replace(
    "States.Hash(", "States.Hash((")], ids=["lambda", "sagemaker", "broken"])
def test_the_definitions_parse_with_the_step_functions_emulators_parser(text):
    """Offline (no cloud): LocalStack's ASL parser, intrinsic functions included. It
    cannot run the SageMaker task, but it can tell a malformed definition."""
    import subprocess

    from ctr_infra.localcloud import CloudConfig

    python = CloudConfig().venv_bin("localstack", "python")
    assert python.exists(), f"{python} is missing: `make venv` creates it"
    proc = subprocess.run([str(python), "-c", PARSE], input=text, capture_output=True,
                          text=True, timeout=300)
    broken = "States.Hash((" in text
    assert (proc.returncode == 0 and proc.stdout.strip() == "parsed") != broken, (
        proc.stdout[-2000:], proc.stderr[-2000:])
