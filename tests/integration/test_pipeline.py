"""The Step Functions pipeline on the local cloud, end to end: raw data to a promoted,
served model; no-op runs; overlapping runs; retried and permanent failures; the
scheduled rule. Tests run in file order and share one dataset (3 small chunks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ctr import ingest, layout, synth

CHUNK = 3000
CHUNKS = 9
CTR = str(Path(sys.executable).with_name("ctr"))


@pytest.fixture(scope="module")
def data(cloud, tmp_path_factory):
    cloud.reset_data()
    path = tmp_path_factory.mktemp("pipeline") / "train.txt"
    synth.write_tsv(path, CHUNK * CHUNKS, seed=11, progress=False)
    ingest.put(cloud.store, str(path), progress=False)
    # one chunk per execution (these tests count chunks per run); test_backfill.py
    # covers the parallel backfill
    cloud.set_env("ChunkFunction", CHUNK_LINES=str(CHUNK), BACKFILL_CONCURRENCY="0")
    yield path
    cloud.set_env("ChunkFunction", CHUNK_LINES=None, BACKFILL_CONCURRENCY=None)


def chunk_keys(cloud) -> list[str]:
    return sorted(cloud.store.list_keys(layout.CHUNKS_PREFIX))


def run(cloud, name=None) -> tuple[str, dict]:
    arn = cloud.start_execution(name)
    return arn, cloud.wait_execution(arn)


def test_full_execution_raw_to_promoted_and_served_model(cloud, data):
    t0 = time.monotonic()
    arn, desc = run(cloud, "it-first")
    elapsed = time.monotonic() - t0
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    out = json.loads(desc["output"])
    assert out["chunk"]["value"]["lines"] == CHUNK
    assert out["train"]["value"]["promoted"] is True
    assert out["reload"]["value"]["version"] == out["train"]["value"]["version"]
    pointer, _ = cloud.store.get_json(layout.PRODUCTION_POINTER_KEY)
    assert str(pointer["version"]) == str(out["train"]["value"]["version"])
    assert chunk_keys(cloud) == [layout.chunk_key(0)]
    print(f"\nfull execution on {CHUNK} lines: {elapsed:.1f}s; states: "
          f"{cloud.states_entered(arn)}")


def test_overlapping_executions_produce_exactly_the_chunks_one_would(cloud, data):
    before = chunk_keys(cloud)
    arns: list[str] = []
    threads = [threading.Thread(target=lambda i=i: arns.append(cloud.start_execution(
        f"it-overlap-{i}"))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    descs = [cloud.wait_execution(a) for a in arns]
    assert all(d["status"] == "SUCCEEDED" for d in descs), [d.get("cause") for d in descs]
    outs = [json.loads(d["output"]) for d in descs]
    ran = [o for o in outs if o["lease"]["value"]["acquired"]]
    skipped = [o for o in outs if not o["lease"]["value"]["acquired"]]
    # Whoever ran, each cut at most one new chunk; no chunk twice, no gap.
    after = chunk_keys(cloud)
    assert after == [layout.chunk_key(i) for i in range(len(after))]
    assert len(after) - len(before) == len(ran) >= 1
    for o in skipped:
        assert "holds the pipeline lease" in o["lease"]["value"]["reason"]


def test_transient_failure_is_retried_and_the_execution_succeeds(cloud, data, tmp_path):
    cloud.set_env("AggregateFunction", CTR_FAULTS="aggregate.start=TransientError*1",
                  CTR_FAULTS_DIR=str(tmp_path))
    try:
        arn, desc = run(cloud, "it-transient")
    finally:
        cloud.set_env("AggregateFunction", CTR_FAULTS=None, CTR_FAULTS_DIR=None)
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    events = cloud.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    failed = [e for e in events if e["type"] == "TaskFailed"]
    assert failed and "TransientError" in json.dumps(failed[0]["taskFailedEventDetails"])


def test_permanent_failure_fails_visibly_and_the_next_execution_runs(cloud, data):
    cloud.set_env("TrainFunction", CTR_FAULTS="train.start=DataError")
    try:
        _, desc = run(cloud, "it-permanent")
    finally:
        cloud.set_env("TrainFunction", CTR_FAULTS=None)
    assert desc["status"] == "FAILED"
    assert desc.get("error") == "DataError"
    env = dict(os.environ, CTR_STATE_DIR=str(cloud.cfg.state_dir),
               CTR_LOCALSTACK_PORT=str(cloud.cfg.localstack_port))
    runs = subprocess.run([CTR, "runs"], env=env, capture_output=True, text=True, timeout=120)
    assert "it-permanent" in runs.stdout and "FAILED" in runs.stdout
    assert "DataError" in runs.stdout and "injected fault at train.start" in runs.stdout
    # the failure path released the lease: the next execution is not blocked
    _, nxt = run(cloud, "it-after-failure")
    assert nxt["status"] == "SUCCEEDED", nxt.get("cause")
    assert json.loads(nxt["output"])["lease"]["value"]["acquired"] is True


def test_many_pending_chunks_fan_out_through_a_distributed_map(cloud, data):
    """Backfill: chunks cut without aggregating (e.g. `ctr run --stage chunk` in a loop)
    are converted by a Distributed Map, one child per chunk, when more than two wait."""
    cut = [cloud.invoke("ChunkFunction", {}) for _ in range(3)]
    assert all(c["status"] == "chunked" for c in cut), cut
    pending = cloud.invoke("AggregateFunction", {"action": "plan"})["pending_count"]
    assert pending >= 3
    arn, desc = run(cloud, "it-fanout")
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert "Aggregate chunks in parallel" in cloud.states_entered(arn)
    assert cloud.invoke("AggregateFunction", {"action": "plan"})["pending_count"] == 0
    chunks = chunk_keys(cloud)
    parts = sorted(cloud.store.list_keys(layout.PARQUET_PREFIX))
    assert parts == [layout.parquet_key(i) for i in range(len(chunks))]


def test_with_no_new_data_an_execution_is_a_clean_noop(cloud, data):
    for i in range(CHUNKS + 1):  # drain whatever is left
        _, desc = run(cloud, f"it-drain-{i}")
        assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert chunk_keys(cloud) == [layout.chunk_key(i) for i in range(CHUNKS)]
    arn, desc = run(cloud, "it-noop")
    assert desc["status"] == "SUCCEEDED"
    states = cloud.states_entered(arn)
    assert "Nothing new" in states and "Train model" not in states
    assert json.loads(desc["output"])["chunk"]["value"]["status"] == "exhausted"


def test_scheduled_rule_starts_executions(cloud, data):
    events = cloud.client("events")
    # SAM generates the rule (and truncates its name): find it through the stack.
    name = cloud.client("cloudformation").describe_stack_resource(
        StackName=cloud.cfg.stack_name, LogicalResourceId="PipelineStateMachineEvery10Minutes",
    )["StackResourceDetail"]["PhysicalResourceId"]
    rule = events.describe_rule(Name=name)
    assert rule["ScheduleExpression"] == "rate(10 minutes)" and rule["State"] == "DISABLED"
    targets = events.list_targets_by_rule(Rule=name)["Targets"]
    assert [t["Arn"] for t in targets] == [cloud.state_machine_arn]
    started = time.time()
    # LocalStack 2026.3 builds a rule's timer in PutTargets, from the rule's rate and
    # state at that moment (PutRule/EnableRule alone do not touch it), and the timer
    # fires to the rule's current targets. So: new rate + enabled, then PutTargets (as
    # CloudFormation does on create); to stop it, remove the targets afterwards.
    events.put_rule(Name=name, ScheduleExpression="rate(1 minute)", State="ENABLED")
    events.put_targets(Rule=name, Targets=targets)
    try:
        def scheduled():
            execs = cloud.sfn.list_executions(stateMachineArn=cloud.state_machine_arn)
            return [e for e in execs["executions"]
                    if e["startDate"].timestamp() >= started - 1
                    and not e["name"].startswith("it-")]
        found = cloud.wait_for("an execution started by the schedule", scheduled,
                               timeout_s=150, every_s=5)
    finally:
        events.remove_targets(Rule=name, Ids=[t["Id"] for t in targets])
        events.put_rule(Name=name, ScheduleExpression="rate(10 minutes)", State="DISABLED")
    desc = cloud.wait_execution(found[0]["executionArn"])
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
