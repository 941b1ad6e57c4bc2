"""The data plane's invariant, read back from the bucket: every source line is in exactly
one place -- a Parquet row or a quarantined reject -- never lost, never twice.

    raw/ --(chunk cursor)--> chunks/ --(aggregate)--> parquet/ + rejects/

`account(store)` checks, independently of the code under test where it can:

1. the chunks are `chunk_000000 .. chunk_{n-1}` without a gap, and concatenated they
   are byte for byte the raw data the cursor says it consumed (raw objects are read and
   gunzipped here, not through the product's transcode);
2. per aggregated chunk: every reject's (line number, text) is that line of the chunk,
   and the part's rows, written back as TSV, are the chunk's other lines in order;
3. over everything: Counter(consumed source lines) == Counter(Parquet rows) +
   Counter(rejected lines) (+ lines of chunks still waiting for aggregation, which are
   reported as `pending` and are a problem unless allowed). `lost` and `duplicated` are
   the two sides of the multiset difference (a line changed on the way counts once in
   each).

Quarantined sources (ctr.chunking: a corrupt .gz, an object changed under the cursor)
count the lines cut from them before (their chunks) as consumed; the rest of such a
source is reported as `quarantined_sources`, never as lost. A quarantined chunk (more
rejects than MaxRejectShare: a marker under rejects/quarantined/, no part) keeps all of
its lines in chunks/: they count as `quarantined_lines`, and its rejects file must still
match its lines.

Source lines are compared as text without a trailing CR (the parser accepts CRLF);
Parquet rows are turned back into text with `ctr.criteo.table_to_tsv`, so the valid
source lines must be canonical Criteo TSV, as `ctr.synth` writes them.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ctr import chunking, criteo, layout
from ctr.storage import Store


@dataclass(frozen=True, kw_only=True)
class _Balance:
    """What both accounts report: source lines against rows, rejects and lines held in
    quarantined chunks, and the two sides of any difference."""

    source_lines: int           # consumed from raw/ (per the cursor)
    chunks: int
    parquet_rows: int
    rejected_lines: int
    pending_chunks: tuple[int, ...]
    quarantined_lines: int      # lines of quarantined chunks (kept in chunks/)
    lost: int                   # source lines found nowhere downstream
    duplicated: int             # downstream lines beyond what the source has
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def _balance(self, details: str) -> str:
        return (f"{self.source_lines} source lines = {self.parquet_rows} parquet rows + "
                f"{self.rejected_lines} rejects + {self.quarantined_lines} in quarantined "
                f"chunks ({self.chunks} chunks, {len(self.pending_chunks)} pending{details}); "
                f"lost {self.lost}, duplicated {self.duplicated}")


@dataclass(frozen=True, kw_only=True)
class LineAccount(_Balance):
    unconsumed_lines: int       # still in raw/, not cut yet
    quarantined_sources: tuple[str, ...]
    quarantined_chunks: tuple[int, ...]

    def summary(self) -> str:
        return self._balance(f", {len(self.quarantined_chunks)} quarantined, "
                             f"{self.unconsumed_lines} not cut yet, "
                             f"{len(self.quarantined_sources)} sources quarantined")


def lines_of(data: bytes) -> list[bytes]:
    """The lines of `data` as the parser sees them: split on LF, a final line without LF
    counts, a trailing CR is not part of the line."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def _raw_bytes(store: Store, key: str) -> bytes:
    body = store.get(key).body
    return gzip.decompress(body) if key.endswith(".gz") else body


def _consumed_source(store: Store) -> tuple[list[bytes], int]:
    """(consumed source bytes per raw object in chunk order, lines not yet consumed).
    A quarantined source's consumed bytes are its chunks (module docstring)."""
    cursor, _ = chunking.load_cursor(store)
    raw_keys = sorted(k for k in store.list_keys(layout.RAW_PREFIX) if not k.endswith("/"))
    consumed: list[tuple[int, bytes]] = []
    seen: set[str] = set()
    for done in cursor.done:
        consumed.append((done.first_chunk, _raw_bytes(store, done.raw_key)))
        seen.add(done.raw_key)
    for q in cursor.quarantined:
        cut = b"".join(store.get(layout.chunk_key(i)).body
                       for i in range(q.first_chunk, q.end_chunk))
        consumed.append((q.first_chunk, cut))
        seen.add(q.raw_key)
    unconsumed = 0
    if cursor.source is not None:
        key, offset = cursor.source.raw_key, cursor.source.offset
        data = _raw_bytes(store, key)
        consumed.append((cursor.source.first_chunk, data[:offset]))
        unconsumed += len(lines_of(data[offset:]))
        seen.add(key)
    for key in raw_keys:
        if key not in seen:
            unconsumed += len(lines_of(_raw_bytes(store, key)))
    return [data for _, data in sorted(consumed, key=lambda c: c[0])], unconsumed


def _part_lines(store: Store, key: str) -> list[bytes]:
    table = pq.read_table(pa.BufferReader(store.get(key).body))
    return criteo.table_to_tsv(table).split(b"\n")[:-1] if table.num_rows else []


def _rejects(store: Store, key: str) -> list[criteo.Reject]:
    body = store.get(key).body
    return [criteo.Reject.from_bytes(line) for line in body.removesuffix(b"\n").split(b"\n")]


def _check_rejects(index: int, chunk: list[bytes], rejects: list[criteo.Reject]) -> list[str]:
    problems = []
    numbers = [r.line_no for r in rejects]
    if len(set(numbers)) != len(numbers):
        problems.append(f"chunk {index}: a line is quarantined twice")
    for r in rejects:
        if not 1 <= r.line_no <= len(chunk) or chunk[r.line_no - 1] != r.text.removesuffix(b"\r"):
            problems.append(f"chunk {index}: reject for line {r.line_no} does not match it")
    return problems


def _check_chunk(index: int, chunk: list[bytes], part: list[bytes],
                 rejects: list[criteo.Reject]) -> list[str]:
    problems = _check_rejects(index, chunk, rejects)
    rejected = {r.line_no for r in rejects}
    expected = [line for n, line in enumerate(chunk, 1) if n not in rejected]
    if part != expected:
        at = next((i for i, (a, b) in enumerate(zip(part, expected, strict=False)) if a != b),
                  min(len(part), len(expected)))
        problems.append(f"chunk {index}: part has {len(part)} rows, the chunk {len(expected)} "
                        f"good lines; first difference at row {at}")
    return problems


def account(store: Store, *, complete: bool = False, allow_pending: bool = False
            ) -> LineAccount:
    """Read raw/, chunks/, parquet/ and rejects/ and account for every line (module
    docstring). `complete`: raw/ must be fully consumed too."""
    problems: list[str] = []
    consumed, unconsumed = _consumed_source(store)
    source = [line for data in consumed for line in lines_of(data)]

    chunk_keys = sorted(k for k in store.list_keys(layout.CHUNKS_PREFIX) if not k.endswith("/"))
    if chunk_keys != [layout.chunk_key(i) for i in range(len(chunk_keys))]:
        problems.append(f"chunk keys are not contiguous from 0: {chunk_keys}")
    chunk_bytes = {layout.index_of(k): store.get(k).body for k in chunk_keys}
    if b"".join(chunk_bytes[i] for i in sorted(chunk_bytes)) != b"".join(consumed):
        problems.append("the chunks, concatenated, are not the raw bytes the cursor consumed")

    parts = {layout.index_of(k): k for k in store.list_keys(layout.PARQUET_PREFIX)}
    reject_keys = {layout.index_of(k): k for k in store.list_keys(layout.REJECTS_PREFIX)
                   if layout.is_chunk_rejects_key(k)}
    markers = {layout.index_of(k) for k in store.list_keys(layout.QUARANTINED_CHUNKS_PREFIX)}
    if stray := sorted((set(parts) | set(reject_keys) | markers) - set(chunk_bytes)):
        problems.append(f"parts, rejects or quarantine markers without a chunk: {stray}")
    held = tuple(sorted((markers & set(chunk_bytes)) - set(parts)))   # quarantined, no part
    pending = tuple(sorted(set(chunk_bytes) - set(parts) - set(held)))
    if pending and not allow_pending:
        problems.append(f"chunks not aggregated: {list(pending)}")
    if complete and unconsumed:
        problems.append(f"{unconsumed} raw lines were never cut into a chunk")

    downstream: Counter[bytes] = Counter()
    rows = rejected = held_lines = 0
    for index, chunk in sorted(chunk_bytes.items()):
        chunk_lines = lines_of(chunk)
        if index not in parts:
            downstream.update(chunk_lines)           # waiting or quarantined in chunks/
            if index in held:
                held_lines += len(chunk_lines)
                if index not in reject_keys:
                    problems.append(f"chunk {index}: quarantined without a rejects file")
                else:
                    problems += _check_rejects(index, chunk_lines,
                                               _rejects(store, reject_keys[index]))
            continue
        part = _part_lines(store, parts[index])
        rejects = _rejects(store, reject_keys[index]) if index in reject_keys else []
        problems += _check_chunk(index, chunk_lines, part, rejects)
        downstream.update(part)
        downstream.update(r.text.removesuffix(b"\r") for r in rejects)
        rows += len(part)
        rejected += len(rejects)

    expected = Counter(source)
    lost = sum((expected - downstream).values())
    duplicated = sum((downstream - expected).values())
    if lost or duplicated:
        problems.append(f"source vs parquet + rejects: {lost} lines lost, "
                        f"{duplicated} duplicated")
    quarantined = tuple(q.raw_key for q in chunking.load_cursor(store)[0].quarantined)
    return LineAccount(source_lines=len(source), unconsumed_lines=unconsumed,
                       chunks=len(chunk_bytes), parquet_rows=rows, rejected_lines=rejected,
                       pending_chunks=pending, quarantined_sources=quarantined,
                       quarantined_chunks=held, quarantined_lines=held_lines,
                       lost=lost, duplicated=duplicated,
                       problems=tuple(problems))


# --- the same account in bounded memory, for the full-size run -----------------------

@dataclass(frozen=True, kw_only=True)
class StreamedAccount(_Balance):
    """`account` for data too big to hold: per chunk the same checks, and the chunks,
    concatenated, compared with the consumed raw bytes by SHA-256 instead of in memory."""

    source_bytes: int
    seconds: float

    def summary(self) -> str:
        return self._balance("")


def _stream_raw(store: Store, key: str, start: int = 0, end: int | None = None
                ) -> Iterator[bytes]:
    """The bytes [start, end) of a raw object (ranged GETs: `Store.stream`), gunzipped
    here with zlib, member after member (not by the product's transcode) for a .gz."""
    at = 0
    for block in _gunzipped(store.stream(key)) if key.endswith(".gz") else store.stream(key):
        lo, hi = max(start - at, 0), len(block) if end is None else min(end - at, len(block))
        if hi > lo:
            yield block[lo:hi]
        at += len(block)
        if end is not None and at >= end:
            return


def _gunzipped(blocks: Iterator[bytes]) -> Iterator[bytes]:
    inflate = zlib.decompressobj(wbits=31)
    for data in blocks:
        while data:
            out = inflate.decompress(data)
            if out:
                yield out
            data = b""
            if inflate.eof:                      # the next gzip member, if any
                data, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
    if tail := inflate.flush():
        yield tail


def account_streamed(store: Store, *, allow_pending: bool = False) -> StreamedAccount:
    """`account` in memory bounded by one chunk: each chunk is checked against its part
    and rejects exactly as there (a per-chunk multiset gives `lost`/`duplicated`), and
    SHA-256 of the consumed raw bytes (in chunk order) must equal SHA-256 of the chunks
    concatenated -- together the same guarantee as the whole-data Counter."""
    t0 = time.monotonic()
    problems: list[str] = []
    cursor, _ = chunking.load_cursor(store)
    raw_hash, chunk_hash = hashlib.sha256(), hashlib.sha256()
    # (first chunk, raw key, consumed bytes or None for all); a quarantined source's
    # consumed bytes are its chunks (raw key None)
    segments: list[tuple[int, str | None, int | None, int]] = [
        (d.first_chunk, d.raw_key, None, 0) for d in cursor.done]
    segments += [(q.first_chunk, None, None, q.end_chunk) for q in cursor.quarantined]
    if cursor.source is not None:
        segments.append((cursor.source.first_chunk, cursor.source.raw_key,
                         cursor.source.offset, 0))
    source_bytes = 0
    for first, key, end, end_chunk in sorted(segments, key=lambda s: s[0]):
        blocks = (_stream_raw(store, key, 0, end) if key is not None else
                  (store.get(layout.chunk_key(i)).body for i in range(first, end_chunk)))
        for block in blocks:
            raw_hash.update(block)
            source_bytes += len(block)

    chunk_keys = sorted(k for k in store.list_keys(layout.CHUNKS_PREFIX) if not k.endswith("/"))
    if chunk_keys != [layout.chunk_key(i) for i in range(len(chunk_keys))]:
        problems.append(f"chunk keys are not contiguous from 0: {chunk_keys[:5]}...")
    parts = {layout.index_of(k): k for k in store.list_keys(layout.PARQUET_PREFIX)}
    reject_keys = {layout.index_of(k): k for k in store.list_keys(layout.REJECTS_PREFIX)
                   if layout.is_chunk_rejects_key(k)}
    markers = {layout.index_of(k) for k in store.list_keys(layout.QUARANTINED_CHUNKS_PREFIX)}
    lines = rows = rejected = held_lines = lost = duplicated = 0
    pending: list[int] = []
    for key in chunk_keys:
        index = layout.index_of(key)
        chunk = store.get(key).body
        chunk_hash.update(chunk)
        chunk_lines = lines_of(chunk)
        lines += len(chunk_lines)
        if index not in parts:
            if index in markers:
                held_lines += len(chunk_lines)
            else:
                pending.append(index)
            continue
        part = _part_lines(store, parts[index])
        rejects = _rejects(store, reject_keys[index]) if index in reject_keys else []
        problems += _check_chunk(index, chunk_lines, part, rejects)
        downstream = Counter(part) + Counter(r.text.removesuffix(b"\r") for r in rejects)
        expected = Counter(chunk_lines)
        lost += sum((expected - downstream).values())
        duplicated += sum((downstream - expected).values())
        rows += len(part)
        rejected += len(rejects)
    if raw_hash.digest() != chunk_hash.digest():
        problems.append("the chunks, concatenated, are not the raw bytes the cursor consumed "
                        "(SHA-256 differs)")
    if pending and not allow_pending:
        problems.append(f"{len(pending)} chunks not aggregated: {pending[:10]}")
    if lost or duplicated:
        problems.append(f"chunks vs parquet + rejects: {lost} lines lost, "
                        f"{duplicated} duplicated")
    return StreamedAccount(source_lines=lines, source_bytes=source_bytes,
                           chunks=len(chunk_keys), parquet_rows=rows,
                           rejected_lines=rejected, pending_chunks=tuple(pending),
                           quarantined_lines=held_lines, lost=lost, duplicated=duplicated,
                           problems=tuple(problems), seconds=time.monotonic() - t0)


# --- test data with something to quarantine --------------------------------------------

MALFORMED = [
    b"",                                                   # empty line
    b"1\t2\t3",                                            # truncated
    b"0" + b"\t" * 40,                                     # one field too many
    b"0" + b"\t1" * 13 + b"\tZZZZZZZZ" + b"\t" * 25,       # non-hex categorical
    b"0\t99999999999999999999" + b"\t" * 38,               # integer beyond int64
    b"2" + b"\t" * 39,                                     # label not 0/1
    b"\xff\xfe binary \x00 garbage",                       # invalid UTF-8
]


def source_with_rejects(valid_lines: int, seed: int, *, bad_every: int = 97,
                        start_row: int = 0) -> bytes:
    """Synthetic Criteo TSV (`ctr.synth`, canonical) with one malformed line (cycling
    through MALFORMED) after every `bad_every` valid lines and a CRLF ending on every
    50th valid line. Line count: valid_lines + valid_lines // bad_every."""
    from ctr import synth

    table, _ = synth.generate_table(valid_lines, seed, start_row=start_row)
    valid = criteo.table_to_tsv(table).split(b"\n")[:-1]
    out: list[bytes] = []
    for i, line in enumerate(valid, 1):
        out.append(line + (b"\r" if i % 50 == 0 else b""))
        if i % bad_every == 0:
            out.append(MALFORMED[(i // bad_every - 1) % len(MALFORMED)])
    return b"\n".join(out) + b"\n"
