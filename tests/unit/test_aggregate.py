"""ctr.aggregate: chunks -> typed Parquet parts, malformed lines -> rejects/."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr import aggregate, chunking, criteo, layout, synth
from ctr.errors import ValidationError
from ctr.schema import PART_SCHEMA
from ctr.steps import AggregateEvent, parse_event
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.test_criteo import CORPUS


@functools.cache
def _valid(n: int, seed: int = 3) -> list[bytes]:
    table, _ = synth.generate_table(n, seed)
    return criteo.table_to_tsv(table).split(b"\n")[:-1]


BAD = [line for line, reason in CORPUS if reason is not None]


def _source_with_bad_lines() -> bytes:
    """900 valid lines with the whole bad-line corpus spread through them, CRLF on some."""
    valid = _valid(900)
    lines: list[bytes] = []
    for i, line in enumerate(valid):
        lines.append(line + (b"\r" if i % 50 == 0 else b""))
        if i % 25 == 0 and i // 25 < len(BAD):
            lines.append(BAD[i // 25])
    return b"\n".join(lines) + b"\n"


def _store_with_chunks(data: bytes, chunk_lines: int) -> Store:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/test/source.txt", data)
    while chunking.cut_chunk(store, chunk_lines).status == "chunked":
        pass
    return store


def _parquet_lines(store: Store) -> list[bytes]:
    lines: list[bytes] = []
    for key in store.list_keys(layout.PARQUET_PREFIX):
        table = pq.read_table(pa.BufferReader(store.get(key).body))
        assert table.schema.equals(PART_SCHEMA, check_metadata=True), key
        lines += criteo.table_to_tsv(table).split(b"\n")[:-1] if table.num_rows else []
    return lines


def _rejects(store: Store) -> list[tuple[int, criteo.Reject]]:
    out = []
    for key in filter(layout.is_chunk_rejects_key, store.list_keys(layout.REJECTS_PREFIX)):
        body = store.get(key).body
        assert body.endswith(b"\n")
        out += [(layout.index_of(key), criteo.Reject.from_bytes(line))
                for line in body[:-1].split(b"\n")]
    return out


def _source_lines(data: bytes) -> list[bytes]:
    return [line.removesuffix(b"\r") for line in data.split(b"\n")[:-1]]


def test_every_line_ends_in_parquet_or_rejects_exactly_once() -> None:
    data = _source_with_bad_lines()
    store = _store_with_chunks(data, 200)
    result = aggregate.aggregate(store, max_reject_share=0.2)
    rejects = _rejects(store)
    parquet = _parquet_lines(store)
    source = _source_lines(data)
    assert Counter(parquet) + Counter(r.text for _, r in rejects) == Counter(source)
    assert sorted(r.text for _, r in rejects) == sorted(BAD)
    assert result.rows_in == len(source)
    assert result.rows_out == len(parquet) == 900
    assert result.rows_rejected == len(BAD)
    assert result.converted == list(range(-(-len(source) // 200)))
    assert result.quarantined == [] and result.skipped == []
    # each reject names its line inside its chunk and why
    for index, reject in rejects:
        chunk_lines = store.get(layout.chunk_key(index)).body.split(b"\n")
        assert chunk_lines[reject.line_no - 1].removesuffix(b"\r") == reject.text
        assert reject.reason


def test_rerun_is_a_no_op() -> None:
    store = _store_with_chunks(b"\n".join(_valid(300)) + b"\n", 100)
    first = aggregate.aggregate(store)
    assert first.converted == [0, 1, 2]
    assert aggregate.plan(store).pending == []
    puts = store.s3.calls.count("put_object")
    again = aggregate.aggregate(store)
    assert again.converted == [] and again.rows_in == 0
    explicit = aggregate.aggregate(store, [0, 1, 2])
    assert explicit.skipped == [0, 1, 2]
    assert store.s3.calls.count("put_object") == puts


def test_plan_lists_chunks_without_parts() -> None:
    store = _store_with_chunks(b"\n".join(_valid(500)) + b"\n", 100)
    assert aggregate.plan(store).pending == [0, 1, 2, 3, 4]
    aggregate.aggregate(store, [1, 3])
    assert aggregate.plan(store).pending == [0, 2, 4]
    aggregate.aggregate_chunk(store, 4)
    assert aggregate.plan(store).pending == [0, 2]


def test_crash_between_rejects_and_parquet_is_repaired_by_the_next_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store_with_chunks(_source_with_bad_lines(), 2000)
    real = aggregate.parquet_bytes

    def crash(table: pa.Table) -> bytes:
        raise RuntimeError("killed")

    monkeypatch.setattr(aggregate, "parquet_bytes", crash)
    with pytest.raises(RuntimeError):
        aggregate.aggregate(store, max_reject_share=0.2)
    assert store.exists(layout.rejects_key(0)) and not store.exists(layout.parquet_key(0))
    monkeypatch.setattr(aggregate, "parquet_bytes", real)
    result = aggregate.aggregate(store, max_reject_share=0.2)
    assert result.converted == [0]
    assert Counter(_parquet_lines(store)) + Counter(r.text for _, r in _rejects(store)) == \
        Counter(_source_lines(_source_with_bad_lines()))


def test_too_many_rejects_quarantine_that_chunk_and_the_others_go_on() -> None:
    good = _valid(200)
    data = b"\n".join(good[:100]) + b"\n" + b"\n".join([b"garbage"] * 30) + b"\n" + \
        b"\n".join(good[100:]) + b"\n"
    store = _store_with_chunks(data, 100)                       # chunk 1 is 30% garbage
    summary = aggregate.aggregate(store, max_reject_share=0.1)
    assert summary.quarantined == [1] and summary.converted == [0, 2]
    assert not store.exists(layout.parquet_key(1))
    assert store.exists(layout.rejects_key(1))                   # kept for inspection
    assert store.get(layout.chunk_key(1)).body.count(b"garbage") == 30   # nothing lost
    marker = aggregate.load_quarantine(store, 1)
    assert marker is not None and marker.rows_in == 100 and marker.rows_rejected == 30
    assert marker.max_reject_share == 0.1 and "30 of 100 lines rejected" in marker.reason
    assert aggregate.plan(store).pending == []                   # no longer pending
    again = aggregate.aggregate(store, [1], max_reject_share=0.1)  # a Map child naming it
    assert again.chunks[0].status == "skipped" and again.chunks[0].quarantined is True
    assert aggregate.load_quarantine(store, 1) == marker         # create-only: unchanged


def test_a_quarantined_chunk_is_released_with_a_higher_threshold() -> None:
    good = _valid(200)
    data = b"\n".join(good[:100]) + b"\n" + b"\n".join([b"garbage"] * 30) + b"\n" + \
        b"\n".join(good[100:]) + b"\n"
    store = _store_with_chunks(data, 100)
    aggregate.aggregate(store, max_reject_share=0.1)
    still = aggregate.aggregate(store, [1], max_reject_share=0.2, include_quarantined=True)
    assert still.quarantined == [1] and not store.exists(layout.parquet_key(1))
    released = aggregate.aggregate(store, [1], max_reject_share=0.5, include_quarantined=True)
    assert released.converted == [1] and released.rows_rejected == 30
    assert released.rows_out == 70 and store.exists(layout.parquet_key(1))
    assert aggregate.plan(store).pending == []
    assert Counter(_parquet_lines(store)) + Counter(r.text for _, r in _rejects(store)) == \
        Counter(_source_lines(data))


@pytest.mark.parametrize(("event", "expected"), [
    ({}, None),
    ({"indices": [3, "4"]}, [3, 4]),
    ({"index": 2}, [2]),
    ({"Items": [{"Key": "chunks/chunk_000003.txt", "Size": 10},
                {"Key": "chunks/chunk_000011.txt", "Size": 10}],
      "BatchInput": {"x": 1}}, [3, 11]),
    ({"Key": "chunks/chunk_000007.txt", "Size": 5}, [7]),
    ({"action": "aggregate", "key": "chunks/chunk_000005.txt"}, [5]),
])
def test_the_event_names_its_chunks_in_any_of_five_shapes(
        event: dict[str, Any], expected: list[int] | None) -> None:
    assert parse_event(AggregateEvent, event).indices == expected


@pytest.mark.parametrize("event", [
    {"Items": [{"Key": "chunks/chunk_x.txt"}]},
    {"Items": [{"Size": 3}]},
    {"Items": "chunks/chunk_000001.txt"},
    {"key": 3},
    {"index": "three"},
    {"indices": [1, None]},
])
def test_an_event_with_unreadable_chunks_is_a_validation_error(event: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event(AggregateEvent, event)
    assert caught.value.details["errors"]


def test_distributed_map_batches_convert_their_items() -> None:
    store = _store_with_chunks(b"\n".join(_valid(400)) + b"\n", 100)
    keys = sorted(store.list_keys(layout.CHUNKS_PREFIX))
    batch = {"Items": [{"Key": k} for k in keys[:2]]}
    indices = parse_event(AggregateEvent, batch).indices
    assert aggregate.aggregate(store, indices).converted == [0, 1]
    assert aggregate.plan(store).pending == [2, 3]


def test_results_are_the_json_the_state_machine_and_tests_read() -> None:
    good = _valid(200)
    data = b"\n".join(good[:100]) + b"\n" + b"\n".join([b"garbage"] * 30) + b"\n" + \
        b"\n".join(good[100:]) + b"\n"
    store = _store_with_chunks(data, 100)                       # chunk 1 is 30% garbage
    aggregate.aggregate(store, [0])
    assert aggregate.plan(store).to_payload() == {"pending": [1, 2], "pending_count": 2}
    payload = aggregate.aggregate(store, [0, 1, 2], max_reject_share=0.1).to_payload()
    assert set(payload) == {"converted", "skipped", "quarantined", "rows_in", "rows_out",
                            "rows_rejected", "bytes", "seconds", "bytes_per_second", "chunks"}
    assert (payload["converted"], payload["skipped"], payload["quarantined"]) == ([2], [0], [1])
    skipped, held, converted = payload["chunks"]
    assert skipped == {"index": 0, "status": "skipped", "key": layout.parquet_key(0)}
    parsed = {"index", "key", "rows_in", "rows_out", "rows_rejected", "reject_share", "bytes",
              "careful_parse", "status", "seconds", "bytes_per_second"}
    assert set(held) == parsed | {"rejects_key", "reason", "quarantine_key"}
    assert held["rejects_key"] == layout.rejects_key(1) and held["status"] == "quarantined"
    assert held["quarantine_key"] == layout.quarantined_chunk_key(1)
    assert aggregate.plan(store).to_payload() == {"pending": [], "pending_count": 0}
    assert set(converted) == parsed and converted["status"] == "converted"
