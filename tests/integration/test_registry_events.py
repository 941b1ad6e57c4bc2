"""Registry events on the local cloud (issue 13, parts 4 and 5): a promote through the
domain functions and a promote and a rollback through `ctr model`, each recorded under
audit/ and published to EventBridge; the stack's rule forwards them to its SNS topic,
and an SQS queue subscribed to that topic receives them.

The versions are created directly in the registry (no training: what is tested here is
the path of the events), under a model name of this module's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from ctr import registry
from ctr.registry import audit, runlog
from ctr_infra import localcloud

MODEL = "registry_events_model"
CTR = str(Path(sys.executable).with_name("ctr"))


@pytest.fixture(scope="module")
def client(cloud) -> MlflowClient:
    mlflow = MlflowClient(tracking_uri=cloud.mlflow_uri)
    runlog.ensure_registered_model(mlflow, MODEL)
    for _ in range(2):
        # The server refuses local sources without a run; nothing reads this one.
        mlflow.create_model_version(MODEL, source=f"s3://{cloud.bucket}/nowhere",
                                    tags={"status": "candidate"})
    return mlflow


@pytest.fixture(scope="module")
def queue(cloud) -> str:
    """An SQS queue subscribed (raw delivery) to the stack's model events topic."""
    sqs, sns = cloud.client("sqs"), cloud.client("sns")
    topic = cloud.outputs["ModelEventsTopicArn"]
    url = sqs.create_queue(QueueName="ctr-model-events-test")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                  Attributes={"RawMessageDelivery": "true"}, ReturnSubscriptionArn=True)
    return str(url)


def receive(cloud, url: str, count: int) -> list[dict[str, Any]]:
    """The next `count` EventBridge events that arrived on the queue."""
    got: list[dict[str, Any]] = []

    def poll() -> bool:
        resp = cloud.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1)
        for message in resp.get("Messages", []):
            got.append(json.loads(message["Body"]))
            cloud.client("sqs").delete_message(QueueUrl=url,
                                               ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= count

    cloud.wait_for(f"{count} model events on the queue", poll, timeout_s=90, every_s=0.2)
    return got


def ctr_model(cloud, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **localcloud.aws_env(cloud.cfg), "CTR_ACTOR": "tester"}
    env.pop("CTR_BUCKET", None)
    return subprocess.run(
        [CTR, "model", *args, "--model-name", MODEL, "--bucket", cloud.bucket,
         "--endpoint-url", cloud.cfg.endpoint_url],
        capture_output=True, text=True, timeout=180, check=False, env=env)


def test_the_template_forwards_the_four_detail_types_to_the_topic(cloud):
    rules = cloud.client("events").list_rule_names_by_target(
        TargetArn=cloud.outputs["ModelEventsTopicArn"])["RuleNames"]
    assert len(rules) == 1
    pattern = json.loads(cloud.client("events").describe_rule(Name=rules[0])["EventPattern"])
    assert pattern == {"source": ["ctr.pipeline"],
                       "detail-type": ["ModelRegistered", "ModelPromoted", "ModelRejected",
                                       "ModelRolledBack"]}


def test_a_promote_reaches_the_queue(cloud, client, queue):
    recorder = audit.AuditRecorder(cloud.store, cloud.client("events"), actor="exec-events-1")
    registry.promote(client, MODEL, 1, reason="first model", recorder=recorder,
                     kind="promoted", numbers={"candidate_holdout_logloss": 0.45})
    (event,) = receive(cloud, queue, 1)
    assert (event["source"], event["detail-type"]) == ("ctr.pipeline", "ModelPromoted")
    detail = event["detail"]
    assert (detail["model_name"], detail["kind"], detail["version"], detail["actor"]) == (
        MODEL, "promoted", 1, "exec-events-1")
    assert detail["numbers"] == {"candidate_holdout_logloss": 0.45}
    (record,) = audit.list_events(cloud.store, MODEL)
    assert record.event_id == detail["event_id"]


def test_cli_promote_and_rollback_reach_the_queue_and_the_trail(cloud, client, queue):
    promoted = ctr_model(cloud, "promote", "2", "--reason", "try v2",
                         "--tracking-uri", cloud.mlflow_uri)
    assert promoted.returncode == 0, promoted.stderr
    rolled = ctr_model(cloud, "rollback", "--reason", "v2 misbehaves",
                       "--tracking-uri", cloud.mlflow_uri)
    assert rolled.returncode == 0, rolled.stderr
    assert "production = v1" in rolled.stdout
    events = receive(cloud, queue, 2)
    assert [(e["detail-type"], e["detail"]["kind"], e["detail"]["version"])
            for e in events] == [("ModelPromoted", "manual_promote", 2),
                                 ("ModelRolledBack", "rollback", 1)]
    rollback = events[1]["detail"]
    assert rollback["actor"] == "cli:tester"
    assert rollback["reason"] == "restores v1 in place of v2: v2 misbehaves"
    assert (rollback["production_before"], rollback["production_after"]) == (2, 1)

    history = ctr_model(cloud, "history", "--json")
    assert history.returncode == 0, history.stderr
    trail = json.loads(history.stdout)
    assert [(e["kind"], e["version"]) for e in trail] == [
        ("promoted", 1), ("manual_promote", 2), ("rollback", 1)]


def test_the_deployed_api_serves_the_history(cloud):
    resp = httpx.get(cloud.api_url.rstrip("/") + "/model-history", params={"limit": 5},
                        timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_name"] == os.environ.get("MODEL_NAME", "criteo_ctr_model")
    assert isinstance(body["events"], list)
