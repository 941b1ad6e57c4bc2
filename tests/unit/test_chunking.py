"""ctr.chunking: exactly-once, O(chunk) chunking of raw/ into chunks/."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Any

import pytest

from ctr import chunking, layout
from ctr.errors import ConflictError, DataError, TransientError
from ctr.steps import ChunkResult
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.concurrency import run_until_done_in_threads


def _lines(n: int, start: int = 0, width: int = 0) -> bytes:
    """Distinct, recognisable lines ("line 000123 xxx..."), optionally of varying width."""
    return b"".join(f"line {i:06d} {'x' * ((i * 7) % (width + 1))}\n".encode()
                    for i in range(start, start + n))


class CountingS3(MemoryS3):
    """MemoryS3 that counts the bytes each GET returns (to check O(chunk) reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0

    def get_object(self, Bucket: str, Key: str, Range: str | None = None, **kw: Any):
        resp = super().get_object(Bucket=Bucket, Key=Key, Range=Range, **kw)
        self.bytes_read += resp["ContentLength"]
        return resp


class SlowS3(MemoryS3):
    """MemoryS3 whose reads yield the GIL, so concurrent runs really interleave."""

    def get_object(self, *args: Any, **kw: Any):
        time.sleep(0.002)
        return super().get_object(*args, **kw)


def _chunks(store: Store) -> list[bytes]:
    keys = sorted(store.list_keys(layout.CHUNKS_PREFIX))
    assert keys == [layout.chunk_key(i) for i in range(len(keys))], "gap in chunk indices"
    return [store.get(k).body for k in keys]


def _run_until_exhausted(store: Store, chunk_lines: int, **kw: Any) -> list[ChunkResult]:
    results = []
    for _ in range(1000):
        result = chunking.cut_chunk(store, chunk_lines, **kw)
        results.append(result)
        if result.status == "exhausted":
            return results
    raise AssertionError("never exhausted")


def test_chunks_cover_every_source_exactly_once_in_key_order() -> None:
    store = Store(MemoryS3(), "bucket")
    a, b = _lines(250), _lines(40, start=1000)
    store.put("raw/src/b.txt", b)
    store.put("raw/src/a.txt.gz", gzip.compress(a))
    results = _run_until_exhausted(store, 100)
    chunked = [r for r in results if r.status == "chunked"]
    assert [r.lines for r in chunked] == [100, 100, 50, 40]    # no chunk spans two files
    assert [r.chunk_index for r in chunked] == [0, 1, 2, 3]
    assert b"".join(_chunks(store)) == a + b
    assert chunked[0].to_payload()["transcoded"] == {
        "from": "raw/src/a.txt.gz", "to": "state/decompressed/raw/src/a.txt",
        "seconds": chunked[0].transcoded.seconds}
    assert chunked[2].source_finished and chunked[3].source_finished
    exhausted = results[-1]
    assert exhausted.to_payload() == {"status": "exhausted", "next_chunk": 4,
                                      "lines_total": 290, "bytes_total": len(a) + len(b),
                                      "sources_done": 2, "cursor": None}
    # nothing left: a further run is exhausted too and writes nothing
    writes = store.s3.calls.count("put_object")
    assert chunking.cut_chunk(store, 100).status == "exhausted"
    assert store.s3.calls.count("put_object") == writes


def test_new_raw_files_are_picked_up_after_exhaustion() -> None:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/1.txt", _lines(10))
    _run_until_exhausted(store, 100)
    store.put("raw/s/0-late.txt", _lines(5, start=50))             # sorts first, still new
    results = _run_until_exhausted(store, 100)
    assert [r.lines for r in results[:-1]] == [5]
    assert b"".join(_chunks(store)) == _lines(10) + _lines(5, start=50)


def test_each_run_reads_about_one_chunk_wherever_the_cursor_is() -> None:
    s3 = CountingS3()
    store = Store(s3, "bucket")
    data = _lines(20_000, width=40)
    store.put("raw/s/big.txt", data)
    reads = []
    for _ in range(10):
        before = s3.bytes_read
        result = chunking.cut_chunk(store, 2000)
        reads.append((s3.bytes_read - before) / result.bytes)
    # Beyond the chunk, a run reads the cursor JSON and the estimate's overshoot; the
    # first run's estimate is a default line length, later ones use the measured one.
    # The amount does not grow with the position in the file (the seed's did).
    assert all(1.0 <= r < 1.15 for r in reads[1:]), reads
    assert reads[-2] <= reads[1] * 1.01, reads


def test_lines_longer_than_estimated_are_read_in_a_second_range() -> None:
    store = Store(MemoryS3(), "bucket")
    short = b"".join(f"{i}\n".encode() for i in range(100))
    long = b"".join(f"{i} {'y' * 3000}\n".encode() for i in range(100))
    store.put("raw/s/mixed.txt", short + long)
    results = _run_until_exhausted(store, 100)
    assert [r.lines for r in results[:-1]] == [100, 100]
    assert _chunks(store) == [short, long]


def test_last_line_without_newline_and_empty_source() -> None:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a-empty.txt", b"")
    store.put("raw/s/b.txt", b"one\ntwo\nthree")
    results = _run_until_exhausted(store, 2)
    assert [r.lines for r in results[:-1]] == [2, 1]
    assert _chunks(store) == [b"one\ntwo\n", b"three"]
    cursor, _ = chunking.load_cursor(store)
    assert [d.raw_key for d in cursor.done] == ["raw/s/a-empty.txt", "raw/s/b.txt"]


def test_the_cursor_document_keeps_its_keys_and_an_older_one_is_resumed() -> None:
    """state/chunk_cursor.json is read by whatever version runs next: the typed cursor
    writes the keys the dict-built one wrote, and resumes from a document written by it."""
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(10))
    store.put("raw/s/b.txt", _lines(30, start=10))
    chunking.cut_chunk(store, 10)
    chunking.cut_chunk(store, 10)
    doc, _ = store.get_json(chunking.CURSOR_KEY)
    assert set(doc) == {"format", "next_chunk", "lines", "bytes", "source", "done",
                        "bytes_per_line", "updated_at", "quarantined"}   # one key added
    assert set(doc["source"]) == {"raw_key", "read_key", "etag", "size", "offset", "lines",
                                  "first_chunk"}
    assert doc["done"] == [{"raw_key": "raw/s/a.txt", "lines": 10, "bytes": len(_lines(10)),
                            "first_chunk": 0, "end_chunk": 1}]
    assert (doc["source"]["offset"], doc["next_chunk"]) == (len(_lines(10, start=10)), 2)

    # the same position as the older code wrote it (plain dict, same keys)
    older = Store(MemoryS3(), "bucket")
    older.put("raw/s/a.txt", _lines(10))
    older.put("raw/s/b.txt", _lines(30, start=10))
    older.put(layout.chunk_key(0), _lines(10))
    older.put(layout.chunk_key(1), _lines(10, start=10))
    etag = older.head("raw/s/b.txt")["ETag"]
    older.put_json_if_match(chunking.CURSOR_KEY, {
        "format": 1, "next_chunk": 2, "lines": 20, "bytes": 2 * len(_lines(10)),
        "source": {"raw_key": "raw/s/b.txt", "read_key": "raw/s/b.txt", "etag": etag,
                   "size": len(_lines(30)), "offset": len(_lines(10)), "lines": 10,
                   "first_chunk": 1},
        "done": doc["done"], "bytes_per_line": 14.0, "updated_at": "2026-01-01T00:00:00+00:00",
    }, None)
    assert [r.lines for r in _run_until_exhausted(older, 10)[:-1]] == [10, 10]
    assert b"".join(_chunks(older)) == _lines(40)


@pytest.fixture
def arm_fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Callable[[], None]:
    """Arms ctr.faults' `chunk.after_write` point for one hit (the integration test uses
    `crash`, which would end this test process)."""
    def arm() -> None:
        monkeypatch.setenv("CTR_FAULTS", f"{chunking.FAULT_AFTER_WRITE}=Killed*1")
        monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    return arm


def test_crash_between_chunk_write_and_cursor_update_then_retry(
        arm_fault: Callable[[], None]) -> None:
    store = Store(MemoryS3(), "bucket")
    data = _lines(350)
    store.put("raw/s/a.txt", data)
    chunking.cut_chunk(store, 100)
    arm_fault()
    with pytest.raises(RuntimeError, match=r"injected fault at chunk\.after_write"):
        chunking.cut_chunk(store, 100)
    assert store.exists(layout.chunk_key(1))
    assert chunking.load_cursor(store)[0].next_chunk == 1      # cursor not moved
    retry = chunking.cut_chunk(store, 100)
    assert retry.chunk_index == 1 and retry.reused_existing_chunk
    _run_until_exhausted(store, 100)
    assert b"".join(_chunks(store)) == data                        # no duplicate, no gap


def test_s3_error_on_the_cursor_write_then_retry() -> None:
    store = Store(MemoryS3(), "bucket")
    data = _lines(300)
    store.put("raw/s/a.txt", data)
    chunking.cut_chunk(store, 100)
    real = store.put_json_if_match
    calls = {"n": 0}

    def failing_once(key: str, doc: dict[str, Any], etag: str | None) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientError("S3 is throttling or unavailable: SlowDown")
        return real(key, doc, etag)

    store.put_json_if_match = failing_once  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        chunking.cut_chunk(store, 100)
    store.put_json_if_match = real  # type: ignore[method-assign]
    _run_until_exhausted(store, 100)
    assert b"".join(_chunks(store)) == data


def test_transient_read_error_fails_the_run_without_side_effects() -> None:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(200))
    chunking.cut_chunk(store, 100)
    store.s3.fail_next.append(("get_object", "SlowDown"))           # the cursor read
    with pytest.raises(TransientError):
        chunking.cut_chunk(store, 100)
    assert chunking.load_cursor(store)[0].next_chunk == 1
    _run_until_exhausted(store, 100)
    assert b"".join(_chunks(store)) == _lines(200)


def test_retry_with_another_chunk_size_adopts_the_written_chunk(
        arm_fault: Callable[[], None]) -> None:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(300))
    arm_fault()
    with pytest.raises(RuntimeError, match="injected fault"):
        chunking.cut_chunk(store, 120)
    retry = chunking.cut_chunk(store, 50)
    assert retry.reused_existing_chunk and retry.lines == 120
    _run_until_exhausted(store, 50)
    assert b"".join(_chunks(store)) == _lines(300)


def test_a_chunk_that_does_not_match_the_source_is_refused() -> None:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(300))
    store.put(layout.chunk_key(0), b"something else\n")
    with pytest.raises(DataError, match="does not match"):
        chunking.cut_chunk(store, 100)


def test_raw_object_replaced_under_the_cursor_is_quarantined_with_what_was_cut() -> None:
    """Raw objects must be immutable; one that changes mid-way is set aside (it used to
    stop every run) and its lines already cut stay accounted to it: the line account
    counts them from its chunks, nothing is lost or doubled."""
    from ctr_infra.invariants import account

    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(300))
    store.put("raw/s/b.txt", _lines(50, start=1000))
    chunking.cut_chunk(store, 100)
    store.put("raw/s/a.txt", _lines(300, start=5))

    result = chunking.cut_chunk(store, 100)

    assert result.status == "chunked" and result.cursor.raw_key == "raw/s/b.txt"
    (q,) = chunking.load_cursor(store)[0].quarantined
    assert q.raw_key == "raw/s/a.txt" and "changed under the chunk cursor" in q.reason
    assert (q.lines, q.first_chunk, q.end_chunk) == (100, 0, 1)
    assert _chunks(store) == [_lines(100), _lines(50, start=1000)]
    assert chunking.cut_chunk(store, 100).status == "exhausted"
    acc = account(store, allow_pending=True, complete=True)
    assert acc.ok, acc.problems
    assert (acc.source_lines, acc.quarantined_sources) == (150, ("raw/s/a.txt",))


def test_a_run_that_loses_the_cursor_race_cuts_the_next_chunk() -> None:
    """Run A writes chunk 1; before A moves the cursor, run B does a whole run (it adopts
    chunk 1 and moves the cursor). A's cursor write then fails, A re-reads and cuts 2."""
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(400))
    chunking.cut_chunk(store, 100)
    real = store.put_json_if_match
    interleaved = {"done": False}
    b_results: list[ChunkResult] = []

    def put_with_interleaving(key: str, doc: dict[str, Any], etag: str | None) -> str:
        if not interleaved["done"]:
            interleaved["done"] = True
            b_results.append(chunking.cut_chunk(store, 100))      # run B, complete
        return real(key, doc, etag)

    store.put_json_if_match = put_with_interleaving  # type: ignore[method-assign]
    a_result = chunking.cut_chunk(store, 100)
    assert b_results[0].chunk_index == 1 and b_results[0].reused_existing_chunk
    assert a_result.chunk_index == 2 and not a_result.reused_existing_chunk
    store.put_json_if_match = real  # type: ignore[method-assign]
    _run_until_exhausted(store, 100)
    assert b"".join(_chunks(store)) == _lines(400)


def test_concurrent_chunkers_produce_each_line_exactly_once() -> None:
    store = Store(SlowS3(), "bucket")
    data = _lines(3000, width=10)
    store.put("raw/s/a.txt", data[: len(data) // 2])
    store.put("raw/s/b.txt.gz", gzip.compress(data[len(data) // 2:]))
    results: list[ChunkResult]
    results, errors = run_until_done_in_threads(
        lambda: chunking.cut_chunk(store, 97), lambda r: r.status == "exhausted",
        threads=4, attempts=200)
    assert errors == []
    assert b"".join(_chunks(store)) == data
    indices = [r.chunk_index for r in results if r.status == "chunked"]
    # each index is reported by at most two runs (the writer and, after a lost race, an
    # adopter), and every index is reported at least once
    assert set(indices) == set(range(len(_chunks(store))))


def test_cursor_conflicts_are_retried_then_raised() -> None:
    store = Store(MemoryS3(), "bucket")
    store.put("raw/s/a.txt", _lines(10))

    def always_conflict(key: str, doc: dict[str, Any], etag: str | None) -> str:
        raise ConflictError("lost")

    store.put_json_if_match = always_conflict  # type: ignore[method-assign]
    with pytest.raises(ConflictError):
        chunking.cut_chunk(store, 5, max_attempts=3)


def test_source_url_is_fetched_only_when_raw_is_empty() -> None:
    store = Store(MemoryS3(), "bucket")
    fetched: list[str] = []

    def fake_fetch(target: Store, url: str) -> dict[str, Any]:
        fetched.append(url)
        target.put("raw/example.org/train.txt", _lines(30))
        return {"status": "uploaded", "key": "raw/example.org/train.txt", "bytes": 1}

    first = chunking.cut_chunk(store, 20, source_url="https://example.org/train.txt",
                               fetch=fake_fetch)
    assert first.downloaded.key == "raw/example.org/train.txt"
    _run_until_exhausted(store, 20, source_url="https://example.org/train.txt", fetch=fake_fetch)
    assert fetched == ["https://example.org/train.txt"]
    assert b"".join(_chunks(store)) == _lines(30)


def test_without_data_or_url_the_run_is_exhausted() -> None:
    store = Store(MemoryS3(), "bucket")
    assert chunking.cut_chunk(store, 10).status == "exhausted"
    with pytest.raises(ValueError, match="chunk_lines"):
        chunking.cut_chunk(store, 0)


def test_large_gzip_transcode_uses_multipart_and_multi_member_files() -> None:
    s3 = MemoryS3()
    store = Store(s3, "bucket")
    part1, part2 = _lines(4000, width=30), _lines(4000, start=4000, width=30)
    store.put("raw/s/x.txt.gz", gzip.compress(part1) + gzip.compress(part2))   # 2 members
    plain_key = chunking._transcode(store, "raw/s/x.txt.gz", part_size=64 * 1024)
    assert s3.uploads == {}                                   # the multipart upload completed
    assert store.get(plain_key).body == part1 + part2
    assert chunking._transcode(store, "raw/s/x.txt.gz") == plain_key      # done once
    _run_until_exhausted(store, 1000)
    assert b"".join(_chunks(store)) == part1 + part2
