"""The local cloud itself: the process Lambda executor through the Lambda API, Step
Functions and API Gateway; errors, timeouts, concurrency, code updates, logs."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
import zipfile

import pytest

PROBE = '''
import json, os, time

def ok(event, context):
    print("probe says hi", event.get("tag"))
    return {"pid": os.getpid(), "event": event, "fn": context.function_name,
            "version": "one"}

class BadThing(Exception):
    pass

def boom(event, context):
    raise BadThing("probe failed on purpose")

def sleepy(event, context):
    time.sleep(float(event.get("seconds", 30)))
    return {"slept": event.get("seconds"), "pid": os.getpid()}

def s3_roundtrip(event, context):
    import boto3  # reaches the emulator through AWS_ENDPOINT_URL set by LocalStack
    s3 = boto3.client("s3")
    s3.put_object(Bucket=event["bucket"], Key="it/probe.txt", Body=b"from lambda")
    return s3.get_object(Bucket=event["bucket"], Key="it/probe.txt")["Body"].read().decode()
'''


def zip_of(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("probe.py", source)
    return buf.getvalue()


@pytest.fixture(scope="module")
def probe(cloud):
    """Create probe functions from a zip (the non-hot-reload code path)."""
    names = {}
    for handler, timeout in (("ok", 30), ("boom", 30), ("sleepy", 2), ("s3_roundtrip", 30)):
        name = f"it-probe-{handler.replace('_', '-')}"
        cloud.lambda_client.create_function(
            FunctionName=name, Runtime="python3.13", Handler=f"probe.{handler}",
            Role="arn:aws:iam::000000000000:role/lambda-role",
            Code={"ZipFile": zip_of(PROBE)}, Timeout=timeout, MemorySize=256)
        cloud.wait_for(f"{name} active", lambda n=name: cloud.lambda_client.get_function(
            FunctionName=n)["Configuration"]["State"] == "Active", timeout_s=60)
        names[handler] = name
    return names


def invoke(cloud, name, payload):
    resp = cloud.lambda_client.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    return resp, json.loads(resp["Payload"].read() or b"null")


def test_invoke_through_the_lambda_api(cloud, probe):
    resp, body = invoke(cloud, probe["ok"], {"tag": "lambda-api"})
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    assert body["event"] == {"tag": "lambda-api"}
    assert body["fn"] == probe["ok"]


def test_function_reaches_the_emulator_s3(cloud, probe):
    _, body = invoke(cloud, probe["s3_roundtrip"], {"bucket": cloud.bucket})
    assert body == "from lambda"


def test_handler_exception_is_a_lambda_error_with_its_type(cloud, probe):
    resp, body = invoke(cloud, probe["boom"], {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "BadThing"
    assert body["errorMessage"] == "probe failed on purpose"


def test_timeout_is_enforced_and_reported(cloud, probe):
    t0 = time.monotonic()
    resp, body = invoke(cloud, probe["sleepy"], {"seconds": 60})
    elapsed = time.monotonic() - t0
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in body["errorMessage"]
    assert elapsed < 30, f"the 2 s timeout was not enforced ({elapsed:.1f}s)"
    # and the function still works afterwards
    _, ok = invoke(cloud, probe["sleepy"], {"seconds": 0})
    assert ok["slept"] == 0


def test_concurrent_invocations_run_in_separate_environments(cloud, probe):
    results: list = [None, None]

    def run(i):
        results[i] = invoke(cloud, probe["sleepy"], {"seconds": 1.5})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    bodies = [r[1] for r in results]
    assert all("FunctionError" not in r[0] for r in results), bodies
    assert {b["slept"] for b in bodies} == {1.5}
    assert bodies[0]["pid"] != bodies[1]["pid"], "both ran in one process: not concurrent"


def test_updating_function_code_takes_effect(cloud, probe):
    name = probe["ok"]
    cloud.lambda_client.update_function_code(
        FunctionName=name, ZipFile=zip_of(PROBE.replace('"version": "one"', '"version": "two"')))
    cloud.wait_for("code update", lambda: cloud.lambda_client.get_function(FunctionName=name)[
        "Configuration"].get("LastUpdateStatus") == "Successful", timeout_s=60)
    body = cloud.wait_for("new code answering",
                          lambda: (b := invoke(cloud, name, {})[1])["version"] == "two" and b,
                          timeout_s=30)
    assert body["version"] == "two"


def test_function_output_reaches_cloudwatch_logs(cloud, probe):
    invoke(cloud, probe["ok"], {"tag": "find-me-in-logs"})
    group = f"/aws/lambda/{probe['ok']}"

    def found():
        events = cloud.logs.filter_log_events(logGroupName=group).get("events", [])
        return [e["message"] for e in events if "find-me-in-logs" in e["message"]]

    assert cloud.wait_for("log line in CloudWatch", found, timeout_s=30)
    log_file = cloud.cfg.logs_dir / "lambda" / f"{probe['ok']}.log"
    assert "find-me-in-logs" in log_file.read_text()


def test_step_functions_runs_lambda_and_catches_by_error_type(cloud, probe):
    arn = lambda n: cloud.lambda_client.get_function(FunctionName=n)["Configuration"][  # noqa: E731
        "FunctionArn"]
    definition = {
        "StartAt": "Ok",
        "States": {
            "Ok": {"Type": "Task", "Resource": arn(probe["ok"]), "ResultPath": "$.ok",
                   "Next": "Boom"},
            "Boom": {"Type": "Task", "Resource": arn(probe["boom"]),
                     "Catch": [{"ErrorEquals": ["BadThing"], "ResultPath": "$.caught",
                                "Next": "Caught"}],
                     "Next": "NotCaught"},
            "Caught": {"Type": "Succeed"},
            "NotCaught": {"Type": "Fail", "Error": "NotCaught"},
        },
    }
    sm = cloud.sfn.create_state_machine(
        name="it-probe-sm", definition=json.dumps(definition),
        roleArn="arn:aws:iam::000000000000:role/sfn-role")["stateMachineArn"]
    ex = cloud.sfn.start_execution(stateMachineArn=sm, input=json.dumps({"tag": "sfn"}))
    desc = cloud.wait_for("execution end", lambda: (d := cloud.sfn.describe_execution(
        executionArn=ex["executionArn"]))["status"] != "RUNNING" and d, timeout_s=60)
    assert desc["status"] == "SUCCEEDED", desc
    out = json.loads(desc["output"])
    assert out["ok"]["event"]["tag"] == "sfn"
    assert out["caught"]["Error"] == "BadThing"


def test_health_through_api_gateway_before_any_model(cloud):
    cloud.reset_data()        # modules before this one in the session may have served one

    def health() -> dict:
        with urllib.request.urlopen(f"{cloud.api_url}/health", timeout=60) as resp:  # noqa: S310
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("application/json")
            return dict(json.loads(resp.read()))

    # a warm predict environment notices the pointer is gone within its TTL (5 s)
    body = cloud.wait_for("the API to report no model", lambda: (
        b if (b := health())["status"] == "no_model" else None), timeout_s=60)
    assert body["model_loaded"] is False


def test_stack_outputs_name_every_piece(cloud):
    for key in ("ApiId", "StateMachineArn", "BucketName", "LocalApiUrl",
                "ChunkFunctionName", "PredictFunctionName"):
        assert cloud.outputs.get(key), key
    tags = cloud.s3.get_bucket_versioning(Bucket=cloud.bucket)
    assert tags.get("Status") == "Enabled"
