"""tests/invariants.py, the line accounting the reliability tests rely on, can fail: it
notices a lost, a duplicated or a changed line wherever it happens (chunks, Parquet,
rejects), pending chunks and raw data never cut."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr import aggregate, chunking, layout
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.invariants import (
    MALFORMED,
    account,
    account_streamed,
    assert_lines_intact,
    source_with_rejects,
)

CHUNK = 120


def _pipeline(data: bytes, name: str = "raw/it/a.txt") -> Store:
    store = Store(MemoryS3(), "bucket")
    store.put(name, data)
    while chunking.cut_chunk(store, CHUNK).status == "chunked":
        pass
    aggregate.aggregate(store)
    return store


@pytest.fixture(scope="module")
def data() -> bytes:
    return source_with_rejects(400, seed=5, bad_every=40)


def test_source_has_the_promised_shape(data):
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 400 + 10
    assert sum(line.endswith(b"\r") for line in lines) == 8
    assert lines[40] == MALFORMED[0] and lines[81] == MALFORMED[1]


def test_an_intact_pipeline_balances_exactly(data):
    result = assert_lines_intact(_pipeline(data), complete=True)
    assert (result.source_lines, result.parquet_rows, result.rejected_lines) == (410, 400, 10)
    assert (result.lost, result.duplicated, result.chunks) == (0, 0, 4)


def test_gzip_sources_are_read_through_their_decompressed_lines(data):
    store = _pipeline(gzip.compress(data), "raw/it/a.txt.gz")
    assert assert_lines_intact(store, complete=True).source_lines == 410


def _rewrite_part(store: Store, index: int, edit) -> None:
    key = layout.parquet_key(index)
    table = pq.read_table(pa.BufferReader(store.get(key).body))
    store.put(key, aggregate.parquet_bytes(edit(table)))


def test_a_duplicated_parquet_row_is_counted(data):
    store = _pipeline(data)
    _rewrite_part(store, 1, lambda t: pa.concat_tables([t, t.slice(3, 1)]))
    result = account(store)
    assert (result.lost, result.duplicated) == (0, 1) and not result.ok
    assert any("chunk 1: part has" in p for p in result.problems)


def test_a_lost_parquet_row_is_counted(data):
    store = _pipeline(data)
    _rewrite_part(store, 2, lambda t: t.slice(1))
    result = account(store)
    assert (result.lost, result.duplicated) == (1, 0) and not result.ok


def test_a_changed_value_counts_as_lost_and_duplicated(data):
    store = _pipeline(data)

    def flip_label(t: pa.Table) -> pa.Table:
        labels = t.column("label").to_pylist()
        labels[0] = 1 - labels[0]
        return t.set_column(0, "label", pa.array(labels, pa.int8()))
    _rewrite_part(store, 0, flip_label)
    assert (account(store).lost, account(store).duplicated) == (1, 1)


def test_lost_rejects_are_counted(data):
    store = _pipeline(data)
    store.delete(layout.rejects_key(0))
    result = account(store)
    assert result.lost == 2 and not result.ok            # lines 41 and 82 of chunk 0


def test_a_chunk_cut_twice_is_noticed(data):
    """What a cursor moved without its chunk (or a chunk written twice) looks like."""
    store = _pipeline(data)
    store.put(layout.chunk_key(4), store.get(layout.chunk_key(3)).body)
    aggregate.aggregate(store)
    result = account(store)
    assert result.duplicated > 0
    assert any("not the raw bytes the cursor consumed" in p for p in result.problems)


def _two_chunks_one_part(data: bytes) -> Store:
    """Two chunks cut from `data`, only the first aggregated, the rest not cut yet."""
    store = Store(MemoryS3(), "bucket")
    store.put("raw/it/a.txt", data)
    chunking.cut_chunk(store, CHUNK)
    chunking.cut_chunk(store, CHUNK)
    aggregate.aggregate(store, [0])
    return store


def test_pending_chunks_and_uncut_lines_are_problems_unless_allowed(data):
    store = _two_chunks_one_part(data)
    partial = account(store)
    assert partial.pending_chunks == (1,) and not partial.ok
    assert partial.unconsumed_lines == 410 - 2 * CHUNK
    assert account(store, allow_pending=True).ok          # a consistent prefix
    assert not account(store, allow_pending=True, complete=True).ok


def test_a_quarantined_chunk_keeps_its_lines_and_balances():
    clean = source_with_rejects(240, seed=5, bad_every=10**9)    # two clean chunks
    heavy = source_with_rejects(200, seed=6, bad_every=9)         # then 10% malformed
    store = _pipeline(clean + heavy)
    held = sorted(aggregate.quarantined(store))
    assert held == [2, 3], "the chunks above MaxRejectShare should be quarantined"
    result = assert_lines_intact(store, complete=True)
    assert result.quarantined_chunks == (2, 3) and result.pending_chunks == ()
    assert result.quarantined_lines == len(heavy.split(b"\n")) - 1
    assert (result.parquet_rows, result.rejected_lines) == (240, 0)
    assert result.source_lines == result.parquet_rows + result.quarantined_lines


def test_a_quarantined_chunk_whose_rejects_do_not_match_is_a_problem():
    store = _pipeline(source_with_rejects(200, seed=6, bad_every=9))
    index = min(aggregate.quarantined(store))
    first, rest = store.get(layout.rejects_key(index)).body.split(b"\n", 1)
    number, tail = first.split(b"\t", 1)
    store.put(layout.rejects_key(index), str(int(number) + 1).encode() + b"\t" + tail
              + b"\n" + rest)
    assert any(f"chunk {index}: reject for line" in p
               for p in account(store, complete=True).problems)


# --- account_streamed: the same verdicts in bounded memory (the full-size run's check) ---

def _agree(store: Store, **kwargs) -> None:
    full = account(store, **kwargs)
    streamed = account_streamed(store, **kwargs)
    assert (streamed.ok, streamed.lost, streamed.duplicated) == (full.ok, full.lost,
                                                                 full.duplicated)
    assert (streamed.parquet_rows, streamed.rejected_lines, streamed.quarantined_lines,
            streamed.pending_chunks, streamed.chunks) == (
        full.parquet_rows, full.rejected_lines, full.quarantined_lines, full.pending_chunks,
        full.chunks)
    if full.unconsumed_lines == 0:
        assert streamed.source_lines == full.source_lines


def test_streamed_account_agrees_on_an_intact_pipeline(data):
    _agree(_pipeline(data))
    _agree(_pipeline(gzip.compress(data), "raw/it/a.txt.gz"))
    assert account_streamed(_pipeline(data)).summary().startswith("410 source lines = 400")


def test_streamed_account_agrees_on_lost_and_duplicated_rows(data):
    store = _pipeline(data)
    _rewrite_part(store, 1, lambda t: pa.concat_tables([t, t.slice(3, 1)]))
    _rewrite_part(store, 2, lambda t: t.slice(1))
    _agree(store)
    assert (account_streamed(store).lost, account_streamed(store).duplicated) == (1, 1)


def test_streamed_account_notices_a_chunk_cut_twice(data):
    store = _pipeline(data)
    store.put(layout.chunk_key(4), store.get(layout.chunk_key(3)).body)
    aggregate.aggregate(store)
    assert any("SHA-256 differs" in p for p in account_streamed(store).problems)


def test_streamed_account_agrees_on_pending_and_quarantined_chunks(data):
    store = _two_chunks_one_part(data)
    _agree(store)
    _agree(store, allow_pending=True)
    heavy = _pipeline(source_with_rejects(240, seed=5, bad_every=10**9)
                      + source_with_rejects(200, seed=6, bad_every=9))
    _agree(heavy)
    assert account_streamed(heavy).quarantined_lines > 0
