"""The parallel backfill on the local cloud: a file of several chunks dropped into raw/
is cut, aggregated and trained on by ONE execution of the state machine -- the plan
read by the Distributed Map's S3 JSON ItemReader, one child per chunk -- exactly once,
with one child crashing after its write (retried, it adopts its chunk) and an
overlapping execution that planned the same backlog, cut some of its chunks before
the state machine's run and finishes after it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctr import backfill, chunking, layout
from tests.invariants import account, source_with_rejects

CHUNK = 400
VALID = 2700                        # + 27 malformed lines = 2727 lines: 6 x 400 + 327


@pytest.fixture(scope="module")
def stack(cloud):
    cloud.reset_data()
    cloud.set_env("ChunkFunction", CHUNK_LINES=str(CHUNK), BACKFILL_CONCURRENCY="3")
    yield cloud
    cloud.set_env("ChunkFunction", CHUNK_LINES=None, BACKFILL_CONCURRENCY=None,
                  CTR_FAULTS=None, CTR_FAULTS_DIR=None)


def map_run_items(cloud, arn: str) -> list[dict[str, int]]:
    """Item counts of each Map run of an execution. (LocalStack cannot list a map run's
    child executions -- ListExecutions(mapRunArn) fails with an InternalError -- so a
    child's retry is not visible one by one.)"""
    return [{k: v for k, v in cloud.sfn.describe_map_run(mapRunArn=run["mapRunArn"])
             ["itemCounts"].items() if isinstance(v, int)}
            for run in cloud.sfn.list_map_runs(executionArn=arn)["mapRuns"]]


def test_one_execution_backfills_a_file_of_several_chunks_exactly_once(stack, tmp_path: Path):
    data = source_with_rejects(VALID, seed=21)
    lines = len(data.split(b"\n")) - 1
    chunks = -(-lines // CHUNK)
    assert chunks == 7
    stack.store.put(f"{layout.RAW_PREFIX}it/backfill.txt", data, "text/plain")

    # An overlapping execution: it planned the same backlog and cut three of its
    # chunks, then stalled (it finishes after the state machine's run, below).
    other: dict[str, Any] = stack.invoke("ChunkFunction", {"action": "plan_backfill"})
    assert (other["status"], other["chunks"], other["max_concurrency"]) == (
        "planned", chunks, 3)
    items = json.loads(stack.store.get(other["plan_key"]).body)
    for item in items[:3]:
        assert stack.invoke("ChunkFunction", {"action": "cut_range", "item": item})[
            "reused_existing_chunk"] is False

    # One child of the state machine's Map crashes after writing its chunk, once.
    stack.set_env("ChunkFunction", CTR_FAULTS=f"{backfill.FAULT_AFTER_WRITE}=crash*1",
                  CTR_FAULTS_DIR=str(tmp_path / "faults"))
    try:
        arn = stack.start_execution("it-backfill")
        desc = stack.wait_execution(arn)
    finally:
        stack.set_env("ChunkFunction", CTR_FAULTS=None, CTR_FAULTS_DIR=None)
    seconds = (desc["stopDate"] - desc["startDate"]).total_seconds()
    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    entered = stack.states_entered(arn)
    print(f"\nbackfill of {chunks} chunks ({lines} lines) in one execution: {seconds:.1f}s; "
          f"states: {entered}")
    assert entered.count("Cut backlog in parallel") == 1
    assert entered.count("Finish backfill") == 1
    assert "Aggregate chunks in parallel" in entered and "Train model" in entered
    # The crash happened (only a backfill child passes that point) and the Map, which
    # tolerates no failed item, succeeded: the crashed child was retried and adopted.
    assert len(list((tmp_path / "faults").iterdir())) == 1
    runs = map_run_items(stack, arn)                   # the backfill's, the aggregation's
    print(f"\nmap runs: {runs}")
    assert len(runs) == 2 and all(r.get("failed") == 0 and r.get("succeeded") == chunks
                                  for r in runs), runs

    out = json.loads(desc["output"])
    finished = out["backfilled"]["value"]
    assert (finished["status"], finished["first_chunk"], finished["end_chunk"],
            finished["lines"]) == ("finished", 0, chunks, lines)
    assert out["chunk"]["value"]["status"] == "exhausted"       # nothing left to cut
    assert out["plan"]["value"]["pending_count"] == chunks

    # The overlapping execution finishes late: the cursor already moved, nothing changes.
    _, etag = stack.store.get_json(chunking.CURSOR_KEY)
    late = stack.invoke("ChunkFunction", {"action": "finish_backfill", "plan": other})
    assert late["status"] == "already_finished"
    assert stack.store.get_json(chunking.CURSOR_KEY)[1] == etag

    keys = sorted(stack.store.list_keys(layout.CHUNKS_PREFIX))
    assert keys == [layout.chunk_key(i) for i in range(chunks)]
    assert b"".join(stack.store.get(k).body for k in keys) == data
    result = account(stack.store, complete=True)
    print(f"\nline invariant: {result.summary()}")
    assert result.ok, "\n".join(result.problems)
    assert (result.source_lines, result.lost, result.duplicated) == (lines, 0, 0)
    assert result.parquet_rows == VALID and result.rejected_lines == lines - VALID
