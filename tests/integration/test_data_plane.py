"""The data plane on the local cloud: the deployed chunk and aggregate functions against
the emulator's S3 (conditional writes, ranged GETs, multipart uploads).

Each test starts from an empty bucket and uses small chunks (`{"chunk_lines": N}` in the
event). The invariant checked everywhere: the chunks concatenate to the source, and the
multiset of lines in Parquet plus rejects equals the multiset of source lines."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr import chunking, criteo, ingest, layout, synth
from ctr.schema import PART_SCHEMA
from ctr_infra import localcloud
from ctr_infra.cli import main
from ctr_infra.invariants import account
from tests.cloud import LambdaError
from tests.concurrency import run_until_done_in_threads
from tests.invariants import MALFORMED

CHUNK = 400

BAD_LINES = MALFORMED  # one line of each malformed kind


def _source(tmp_path: Path, lines: int, seed: int, bad: bool = False) -> bytes:
    """`lines` synthetic Criteo lines; with `bad`, some replaced by malformed ones (and
    one CRLF ending), keeping the line count."""
    path = tmp_path / f"source-{seed}.txt"
    synth.write_tsv(path, lines, seed=seed, progress=False, sidecar=False)
    data = path.read_bytes()
    if not bad:
        return data
    rows = data.split(b"\n")[:-1]
    step = len(rows) // (len(BAD_LINES) + 1)
    for i, line in enumerate(BAD_LINES):
        rows[(i + 1) * step] = line
    rows[5] += b"\r"
    return b"\n".join(rows) + b"\n"


def _ingest(cloud: Any, tmp_path: Path, data: bytes, name: str = "train.txt") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(ingest.put(cloud.store, str(path), source_name="it")["key"])


def _chunk_until_exhausted(cloud: Any, chunk_lines: int = CHUNK) -> list[dict[str, Any]]:
    results = []
    for _ in range(50):
        result = cloud.invoke("ChunkFunction", {"chunk_lines": chunk_lines})
        results.append(result)
        if result["status"] == "exhausted":
            return results
    pytest.fail(f"chunking never reported exhausted: {results[-3:]}")


def _chunks(cloud: Any) -> list[bytes]:
    keys = sorted(cloud.store.list_keys(layout.CHUNKS_PREFIX))
    assert keys == [layout.chunk_key(i) for i in range(len(keys))], "gap or stray key"
    return [cloud.store.get(key).body for key in keys]


def _lines_in_parquet_and_rejects(cloud: Any) -> tuple[list[bytes], list[bytes]]:
    parquet: list[bytes] = []
    for key in cloud.store.list_keys(layout.PARQUET_PREFIX):
        table = pq.read_table(pa.BufferReader(cloud.store.get(key).body))
        assert table.schema.equals(PART_SCHEMA, check_metadata=True), key
        if table.num_rows:
            parquet += criteo.table_to_tsv(table).split(b"\n")[:-1]
    rejects: list[bytes] = []
    for key in filter(layout.is_chunk_rejects_key, cloud.store.list_keys(layout.REJECTS_PREFIX)):
        body = cloud.store.get(key).body
        rejects += [criteo.Reject.from_bytes(line).text for line in body[:-1].split(b"\n")]
    return parquet, rejects


def _source_lines(data: bytes) -> list[bytes]:
    return [line.removesuffix(b"\r") for line in data.split(b"\n")[:-1]]


def test_chunk_until_exhausted_then_aggregate_keeps_every_line(cloud, tmp_path):
    cloud.reset_data()
    data = _source(tmp_path, 3 * CHUNK, seed=21, bad=True)
    _ingest(cloud, tmp_path, data)
    results = _chunk_until_exhausted(cloud)
    chunked = [r for r in results if r["status"] == "chunked"]
    assert [r["lines"] for r in chunked] == [CHUNK] * 3
    assert [r["chunk_index"] for r in chunked] == [0, 1, 2]
    assert results[-1]["status"] == "exhausted" and results[-1]["lines_total"] == 3 * CHUNK
    assert b"".join(_chunks(cloud)) == data

    plan = cloud.invoke("AggregateFunction", {"action": "plan"})
    assert plan == {"pending": [0, 1, 2], "pending_count": 3}
    summary = cloud.invoke("AggregateFunction", {"action": "aggregate"})
    assert summary["converted"] == [0, 1, 2]
    assert summary["rows_in"] == 3 * CHUNK
    assert summary["rows_rejected"] == len(BAD_LINES)
    parquet, rejects = _lines_in_parquet_and_rejects(cloud)
    assert sorted(rejects) == sorted(BAD_LINES)
    assert Counter(parquet) + Counter(rejects) == Counter(_source_lines(data))

    again = cloud.invoke("AggregateFunction", {"action": "aggregate"})
    assert again["converted"] == [] and again["rows_in"] == 0          # re-run: no-op
    item = cloud.invoke("AggregateFunction", {"action": "aggregate",
                                              "key": layout.chunk_key(1)})
    assert item["skipped"] == [1]


def test_gzip_source_is_transcoded_once_and_chunked(cloud, tmp_path):
    cloud.reset_data()
    data = _source(tmp_path, 2 * CHUNK + 7, seed=22)
    _ingest(cloud, tmp_path, gzip.compress(data), name="train.txt.gz")
    results = _chunk_until_exhausted(cloud)
    assert "transcoded" in results[0]
    assert all("transcoded" not in r for r in results[1:])
    assert [r["lines"] for r in results[:-1]] == [CHUNK, CHUNK, 7]
    assert b"".join(_chunks(cloud)) == data


def test_concurrent_chunk_invocations_cut_each_line_once(cloud, tmp_path):
    cloud.reset_data()
    data = _source(tmp_path, 8 * 150, seed=23)
    _ingest(cloud, tmp_path, data)
    results, errors = run_until_done_in_threads(
        lambda: cloud.invoke("ChunkFunction", {"chunk_lines": 150}),
        lambda r: r["status"] == "exhausted", threads=3, attempts=20, join_timeout=600)
    assert errors == []
    assert b"".join(_chunks(cloud)) == data
    assert len(_chunks(cloud)) == 8
    reported = {r["chunk_index"] for r in results if r["status"] == "chunked"}
    assert reported == set(range(8))
    cursor, _ = chunking.load_cursor(cloud.store)
    assert cursor.next_chunk == 8 and cursor.lines == 8 * 150


def test_killed_between_chunk_write_and_cursor_update_then_retried(cloud, tmp_path):
    cloud.reset_data()
    data = _source(tmp_path, 3 * CHUNK, seed=24)
    _ingest(cloud, tmp_path, data)
    assert cloud.invoke("ChunkFunction", {"chunk_lines": CHUNK})["chunk_index"] == 0
    # the process dies (os._exit) right after writing chunk 1, before the cursor moves
    cloud.set_env("ChunkFunction", CTR_FAULTS=f"{chunking.FAULT_AFTER_WRITE}=crash*1",
                  CTR_FAULTS_DIR=str(tmp_path / "faults"))
    try:
        with pytest.raises(LambdaError):
            cloud.invoke("ChunkFunction", {"chunk_lines": CHUNK})
    finally:
        cloud.set_env("ChunkFunction", CTR_FAULTS=None, CTR_FAULTS_DIR=None)
    assert cloud.store.exists(layout.chunk_key(1))
    assert chunking.load_cursor(cloud.store)[0].next_chunk == 1
    retry = cloud.invoke("ChunkFunction", {"chunk_lines": CHUNK})
    assert retry["chunk_index"] == 1 and retry["reused_existing_chunk"] is True
    _chunk_until_exhausted(cloud)
    assert b"".join(_chunks(cloud)) == data                   # no duplicate, no gap


def test_too_many_rejects_quarantine_the_chunk_and_a_person_releases_it(
        cloud, tmp_path, capsys):
    """Issue 15: a chunk over MaxRejectShare used to fail every later execution; it is
    quarantined (marker, rejects, lines kept), the step succeeds, and `ctr data release`
    converts it with a threshold a person chose."""
    cloud.reset_data()
    good = _source(tmp_path, 100, seed=25)
    _ingest(cloud, tmp_path, good + b"garbage\n" * 20)
    _chunk_until_exhausted(cloud, chunk_lines=1000)
    held = cloud.invoke("AggregateFunction", {"action": "aggregate", "max_reject_share": 0.05})
    assert held["quarantined"] == [0] and held["converted"] == []
    assert cloud.store.exists(layout.rejects_key(0))
    assert cloud.store.exists(layout.quarantined_chunk_key(0))
    assert not cloud.store.exists(layout.parquet_key(0))
    assert cloud.invoke("AggregateFunction", {"action": "plan"})["pending_count"] == 0
    assert account(cloud.store).quarantined_lines == 120          # nothing lost
    with localcloud.aws_env_applied(cloud.cfg):
        argv = ["data", "release", "0", "--max-reject-share", "0.5",
                "--bucket", cloud.bucket, "--endpoint-url", cloud.cfg.endpoint_url]
        assert main(argv) == 0
    assert "chunk 0: released, 100 rows" in capsys.readouterr().out
    parquet, rejects = _lines_in_parquet_and_rejects(cloud)
    assert len(parquet) == 100 and rejects == [b"garbage"] * 20
    assert account(cloud.store).ok
