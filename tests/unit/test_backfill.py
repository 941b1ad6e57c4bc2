"""ctr.backfill: a source's whole backlog cut in parallel into the chunks the one-chunk
cut would cut, exactly once under crashes, retries and overlapping executions."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ctr import aggregate, backfill, chunking, layout
from ctr.errors import DataError
from ctr.steps import BackfillPlan, ChunkEvent
from ctr.storage import Store
from ctr_infra.invariants import account
from ctr_infra.memory_s3 import MemoryS3
from tests.concurrency import run_until_done_in_threads
from tests.invariants import source_with_rejects


def _lines(n: int, start: int = 0, width: int = 0, end: bytes = b"\n") -> bytes:
    return b"".join(f"line {i:06d} {'x' * ((i * 7) % (width + 1))}".encode() + end
                    for i in range(start, start + n))


def _chunks(store: Store) -> list[bytes]:
    keys = sorted(store.list_keys(layout.CHUNKS_PREFIX))
    assert keys == [layout.chunk_key(i) for i in range(len(keys))], "gap in chunk indices"
    return [store.get(k).body for k in keys]


def _cursor_doc(store: Store) -> dict[str, Any]:
    doc, _ = store.get_json(chunking.CURSOR_KEY)
    return {k: v for k, v in doc.items() if k != "updated_at"}


def _sequential(sources: dict[str, bytes], chunk_lines: int) -> Store:
    store = Store(MemoryS3(), "bucket")
    for key, data in sources.items():
        store.put(key, data)
    while chunking.cut_chunk(store, chunk_lines).status == "chunked":
        pass
    return store


def _backfilled(sources: dict[str, bytes], chunk_lines: int, **kw: Any) -> tuple[Store, list]:
    store = Store(MemoryS3(), "bucket")
    for key, data in sources.items():
        store.put(key, data)
    results: list = []
    for _ in range(20):                    # executions, each backfilling what it can
        results += backfill.backfill_all(store, chunk_lines, **kw)
        if results[-1].status == "exhausted":
            return store, results
    raise AssertionError("never exhausted")


CASES = {
    "plain": {"raw/s/a.txt": _lines(1000, width=30)},
    "gzip": {"raw/s/a.txt.gz": gzip.compress(_lines(1000, width=30))},
    "crlf": {"raw/s/a.txt": _lines(777, width=9, end=b"\r\n")},
    "no trailing newline": {"raw/s/a.txt": _lines(500, width=5)[:-1]},
    "empty lines": {"raw/s/a.txt": b"\n" * 300 + _lines(200) + b"\n\n"},
    "several raw objects": {"raw/s/a.txt": _lines(450, width=12),
                            "raw/s/b.txt.gz": gzip.compress(_lines(333, start=450)),
                            "raw/s/c.txt": b"", "raw/s/d.txt": _lines(40, start=900),
                            "raw/s/e.txt": _lines(260, start=1000)[:-1]},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk_lines", [1, 7, 100])
def test_backfilled_chunks_and_cursor_are_those_of_the_sequential_cut(case, chunk_lines):
    sources = CASES[case]
    sequential = _sequential(sources, chunk_lines)
    parallel, results = _backfilled(sources, chunk_lines, piece_bytes=97)
    assert _chunks(parallel) == _chunks(sequential)
    assert _cursor_doc(parallel) == _cursor_doc(sequential)
    assert any(r.status == "planned" for r in results), "nothing was backfilled"


@pytest.mark.parametrize("seed", range(6))
def test_scanned_spans_are_the_boundaries_read_lines_finds(seed):
    """Random line lengths (empty ones too), random pieces: every span is exactly the
    next `chunk_lines` lines as `chunking.read_lines` reads them."""
    rng = random.Random(seed)
    data = b"".join(b"y" * rng.choice([0, 0, 1, 3, 40, 200]) + rng.choice([b"\n", b"\r\n"])
                    for _ in range(rng.randint(50, 900)))
    if seed % 2:
        data += b"tail without newline"
    start = rng.randint(0, 50)
    start = data.index(b"\n", start) + 1                   # a line start, as the cursor
    store = Store(MemoryS3(), "bucket")
    store.put("raw/x.txt", data)
    chunk_lines = rng.randint(1, 60)
    spans = backfill.scan_spans(store, "raw/x.txt", start, len(data), chunk_lines,
                                piece_bytes=rng.randint(1, 300))
    position = start
    for span_start, span_end, lines in spans:
        cut, n = chunking.read_lines(store, "raw/x.txt", position, len(data), chunk_lines, 8.0)
        assert (span_start, span_end, lines) == (position, position + len(cut), n)
        position = span_end
    assert position == len(data)


class CountingS3(MemoryS3):
    def __init__(self) -> None:
        super().__init__()
        self.largest_get = 0

    def get_object(self, Bucket: str, Key: str, Range: str | None = None, **kw: Any):
        resp = super().get_object(Bucket=Bucket, Key=Key, Range=Range, **kw)
        if Key.startswith("raw/"):
            self.largest_get = max(self.largest_get, resp["ContentLength"])
        return resp


def test_the_plan_scan_streams_ranged_gets_never_the_whole_object():
    s3 = CountingS3()
    store = Store(s3, "bucket")
    data = _lines(5000, width=20)
    store.put("raw/s/a.txt", data)
    planned = backfill.plan(store, 300, piece_bytes=4096)
    assert planned.status == "planned" and planned.chunks == 17
    assert s3.largest_get <= 4096 < len(data)
    # the plan is a JSON array of Map items in S3, create-only, and re-planning the same
    # position finds the identical object
    items = json.loads(store.get(planned.plan_key).body)
    assert [i["index"] for i in items] == list(range(17))
    assert items[0]["start"] == 0 and items[-1]["end"] == len(data)
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(items))
    assert planned.plan_key.startswith(layout.BACKFILL_PREFIX)
    again = backfill.plan(store, 300, piece_bytes=999)
    assert again.plan_key == planned.plan_key and again.chunks == planned.chunks


def test_no_plan_when_one_cut_will_do():
    store = Store(MemoryS3(), "bucket")
    assert backfill.plan(store, 10).reason == "every raw object is consumed"
    store.put("raw/s/a.txt", _lines(10))
    assert backfill.plan(store, 10).status == "none"          # exactly one chunk
    assert backfill.plan(store, 10, max_concurrency=0).status == "none"
    assert chunking.cut_chunk(store, 10).lines == 10
    store.put("raw/s/b.txt", _lines(50, start=10))
    assert backfill.plan(store, 10, max_concurrency=0).status == "none"   # off
    planned = backfill.plan(store, 10)
    assert (planned.status, planned.first_chunk, planned.end_chunk) == ("planned", 1, 6)


def test_a_chunk_cut_with_another_size_is_left_to_the_one_chunk_cut(arm_fault):
    """A crashed one-chunk cut with another ChunkLines left chunk 0 of 120 lines: the
    plan (50 lines a chunk) would not match it, so no plan; the cut adopts it and the
    next plan starts after it."""
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(300))
    arm_fault(chunking.FAULT_AFTER_WRITE)
    with pytest.raises(RuntimeError, match="injected fault"):
        chunking.cut_chunk(store, 120)
    planned = backfill.plan(store, 50)
    assert planned.status == "none" and "another chunk size" in planned.reason
    assert chunking.cut_chunk(store, 50).lines == 120
    backfill.backfill_all(store, 50)
    assert b"".join(_chunks(store)) == _lines(300)
    assert [len(c.splitlines()) for c in _chunks(store)] == [120, 50, 50, 50, 30]


@pytest.fixture
def arm_fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Callable[[str], None]:
    """Arms a ctr.faults point for one hit (a raised error: `crash` would end pytest)."""
    def arm(point: str) -> None:
        monkeypatch.setenv("CTR_FAULTS", f"{point}=Killed*1")
        monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    return arm


def _criteo_store(valid_lines: int = 900) -> tuple[Store, bytes]:
    store = Store(MemoryS3(), "bucket")
    data = source_with_rejects(valid_lines, seed=3)
    store.put("raw/it/a.txt", data)
    return store, data


def _check_invariant(store: Store) -> None:
    aggregate.aggregate(store)
    result = account(store, complete=True)
    assert result.ok, result.problems
    assert result.lost == result.duplicated == 0


def test_a_child_crash_then_the_retried_execution_adopts_what_was_written(arm_fault):
    store, data = _criteo_store()
    planned = backfill.plan(store, 100)
    ranges = backfill.load_ranges(store, planned)
    assert len(ranges) == 10
    arm_fault(backfill.FAULT_AFTER_WRITE)
    done, failed = [], []
    for r in ranges:                       # the Map: one child fails after its write
        try:
            done.append(backfill.cut_range(store, r))
        except RuntimeError:
            failed.append(r.index)
    assert len(failed) == 1 and len(done) == 9
    cursor_before = _cursor_doc(store)
    assert cursor_before["next_chunk"] == 0          # the execution failed before finish

    again = backfill.plan(store, 100)                # the next execution: the same plan
    assert again.plan_key == planned.plan_key
    cut = [backfill.cut_range(store, r) for r in backfill.load_ranges(store, again)]
    assert all(c.reused_existing_chunk for c in cut)  # every chunk was already written
    finished = backfill.finish(store, again)
    assert (finished.status, finished.next_chunk, finished.source_finished) == (
        "finished", 10, True)
    assert b"".join(_chunks(store)) == data
    assert chunking.cut_chunk(store, 100).status == "exhausted"
    _check_invariant(store)


def test_a_crash_before_finish_is_healed_by_one_chunk_cuts_too():
    """Chunks written, cursor not moved, and no backfill next time (e.g. turned off):
    the one-chunk cut adopts the backfill's chunks one by one."""
    store, data = _criteo_store(500)
    planned = backfill.plan(store, 100)
    for r in backfill.load_ranges(store, planned):
        backfill.cut_range(store, r)
    results = []
    while (result := chunking.cut_chunk(store, 100)).status == "chunked":
        results.append(result)
    assert all(r.reused_existing_chunk for r in results) and len(results) == 6
    assert b"".join(_chunks(store)) == data
    assert backfill.finish(store, planned).status == "already_finished"
    _check_invariant(store)


def test_finish_starts_where_a_concurrent_one_chunk_cut_left_the_cursor():
    store, data = _criteo_store(500)
    planned = backfill.plan(store, 100)
    for r in backfill.load_ranges(store, planned):
        backfill.cut_range(store, r)
    assert chunking.cut_chunk(store, 100).reused_existing_chunk      # took chunk 0
    finished = backfill.finish(store, planned)
    assert (finished.status, finished.next_chunk) == ("finished", 6)
    assert _cursor_doc(store) == _cursor_doc(_sequential({"raw/it/a.txt": data}, 100))
    _check_invariant(store)


def test_finish_is_idempotent_and_needs_every_chunk():
    store, data = _criteo_store(500)
    planned = backfill.plan(store, 100)
    ranges = backfill.load_ranges(store, planned)
    for r in ranges[:-1]:
        backfill.cut_range(store, r)
    with pytest.raises(DataError, match=r"chunk_000005\.txt is missing"):
        backfill.finish(store, planned)
    assert _cursor_doc(store)["next_chunk"] == 0                     # not moved
    backfill.cut_range(store, ranges[-1])
    first = backfill.finish(store, planned)
    _, etag = store.get_json(chunking.CURSOR_KEY)
    second = backfill.finish(store, planned)
    assert (first.status, second.status) == ("finished", "already_finished")
    assert store.get_json(chunking.CURSOR_KEY)[1] == etag            # nothing written
    assert first.lines == second.lines == len(data.split(b"\n")) - 1
    _check_invariant(store)


def test_a_chunk_that_is_not_the_planned_bytes_is_refused():
    store, _ = _criteo_store(300)
    planned = backfill.plan(store, 100)
    ranges = backfill.load_ranges(store, planned)
    body = store.get_range("raw/it/a.txt", ranges[1].start, ranges[1].end - 1)
    store.put(ranges[1].key, body[::-1])                             # same size, not it
    with pytest.raises(DataError, match="does not match"):
        backfill.cut_range(store, ranges[1])
    store.put("raw/it/a.txt", b"replaced\n")
    with pytest.raises(DataError, match="changed or vanished"):
        backfill.cut_range(store, ranges[0])
    assert not store.exists(ranges[0].key)


class SlowS3(MemoryS3):
    """Reads yield the GIL, so concurrent executions really interleave."""

    def get_object(self, *args: Any, **kw: Any):
        time.sleep(0.001)
        return super().get_object(*args, **kw)


def test_two_overlapping_backfills_cut_each_line_once():
    store = Store(SlowS3(), "bucket")
    data = source_with_rejects(1500, seed=9)
    cut = data.index(b"\n", len(data) * 2 // 3) + 1
    store.put("raw/it/a.txt", data[:cut])
    store.put("raw/it/b.txt.gz", gzip.compress(data[cut:]))
    _, errors = run_until_done_in_threads(
        lambda: backfill.backfill_all(store, 90, max_concurrency=3),
        lambda steps: steps[-1].status == "exhausted", threads=2, attempts=20)
    assert errors == []
    assert b"".join(_chunks(store)) == data
    _check_invariant(store)


def test_two_executions_with_the_same_plan_interleaved():
    """A and B plan the same position, cut interleaved (each adopting the other's
    chunks), A finishes, then B: B finds the cursor moved and changes nothing."""
    store, data = _criteo_store(700)
    a, b = backfill.plan(store, 100), backfill.plan(store, 100)
    assert a == b.model_copy(update={"seconds": a.seconds})
    ranges = backfill.load_ranges(store, a)
    with ThreadPoolExecutor(max_workers=4) as pool:
        cuts = list(pool.map(lambda r: backfill.cut_range(store, r), ranges + ranges[::-1]))
    assert sorted(c.index for c in cuts if not c.reused_existing_chunk) == [
        r.index for r in ranges]                          # each written once, then adopted
    assert backfill.finish(store, a).status == "finished"
    assert backfill.finish(store, b).status == "already_finished"
    assert b"".join(_chunks(store)) == data
    _check_invariant(store)


def test_the_plan_travels_through_the_chunk_event():
    store, _ = _criteo_store(300)
    planned = backfill.plan(store, 100)
    event = ChunkEvent.model_validate({"action": "finish_backfill", "execution": "x",
                                       "plan": planned.to_payload()})
    assert event.plan == planned
    item = json.loads(store.get(planned.plan_key).body)[0]
    assert ChunkEvent.model_validate({"action": "cut_range", "item": item}).item.index == 0
    assert isinstance(event.plan, BackfillPlan)


def test_a_negative_concurrency_is_a_clear_error():
    from ctr.errors import ValidationError
    from ctr.steps import parse_event

    with pytest.raises(ValidationError, match="invalid ChunkEvent"):
        parse_event(ChunkEvent, {"action": "plan_backfill", "backfill_concurrency": -1})
