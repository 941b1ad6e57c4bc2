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
from typing import NamedTuple

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


class _Segment(NamedTuple):
    """A stretch of consumed source, in chunk order: `raw_key`'s bytes up to `end`
    (None: all of them), or -- for a quarantined source -- its chunks
    [first_chunk, end_chunk), which are what was consumed from it."""

    first_chunk: int
    raw_key: str
    end: int | None = None
    quarantined_until: int | None = None


def _consumed_segments(store: Store) -> list[_Segment]:
    cursor, _ = chunking.load_cursor(store)
    segments = [_Segment(d.first_chunk, d.raw_key) for d in cursor.done]
    segments += [_Segment(q.first_chunk, q.raw_key, quarantined_until=q.end_chunk)
                 for q in cursor.quarantined]
    if cursor.source is not None:
        segments.append(_Segment(cursor.source.first_chunk, cursor.source.raw_key,
                                 end=cursor.source.offset))
    return sorted(segments, key=lambda seg: seg.first_chunk)


def _chunks_of(store: Store, seg: _Segment) -> Iterator[bytes]:
    assert seg.quarantined_until is not None
    return (store.get(layout.chunk_key(i)).body
            for i in range(seg.first_chunk, seg.quarantined_until))


def _consumed_source(store: Store) -> tuple[list[bytes], int]:
    """(consumed source bytes per raw object in chunk order, lines not yet consumed).
    A quarantined source's consumed bytes are its chunks (module docstring)."""
    consumed: list[bytes] = []
    unconsumed = 0
    segments = _consumed_segments(store)
    for seg in segments:
        if seg.quarantined_until is not None:
            consumed.append(b"".join(_chunks_of(store, seg)))
            continue
        data = _raw_bytes(store, seg.raw_key)
        if seg.end is not None:
            unconsumed += len(lines_of(data[seg.end:]))
            data = data[:seg.end]
        consumed.append(data)
    seen = {seg.raw_key for seg in segments}
    for key in sorted(k for k in store.list_keys(layout.RAW_PREFIX) if not k.endswith("/")):
        if key not in seen:
            unconsumed += len(lines_of(_raw_bytes(store, key)))
    return consumed, unconsumed


class _Downstream(NamedTuple):
    """The chunks by key, and per chunk index its part, its rejects file, and whether a
    quarantine marker names it."""

    chunk_keys: list[str]
    parts: dict[int, str]
    reject_keys: dict[int, str]
    markers: set[int]

    @classmethod
    def read(cls, store: Store) -> _Downstream:
        return cls(sorted(k for k in store.list_keys(layout.CHUNKS_PREFIX)
                          if not k.endswith("/")),
                   {layout.index_of(k): k for k in store.list_keys(layout.PARQUET_PREFIX)},
                   {layout.index_of(k): k for k in store.list_keys(layout.REJECTS_PREFIX)
                    if layout.is_chunk_rejects_key(k)},
                   {layout.index_of(k)
                    for k in store.list_keys(layout.QUARANTINED_CHUNKS_PREFIX)})

    def problems(self) -> list[str]:
        out = []
        if self.chunk_keys != [layout.chunk_key(i) for i in range(len(self.chunk_keys))]:
            out.append(f"chunk keys are not contiguous from 0: {self.chunk_keys}")
        chunks = {layout.index_of(k) for k in self.chunk_keys}
        if stray := sorted((set(self.parts) | set(self.reject_keys) | self.markers) - chunks):
            out.append(f"parts, rejects or quarantine markers without a chunk: {stray}")
        return out


class _Fate(NamedTuple):
    """What became of one chunk's lines: `lines` are where they are now (the part's rows
    and the rejected texts; the chunk's own lines while it has no part)."""

    lines: list[bytes]
    rows: int = 0
    rejected: int = 0
    held: bool = False             # quarantined: no part, lines kept in chunks/
    pending: bool = False          # waiting for aggregation
    problems: tuple[str, ...] = ()


def _fate(store: Store, down: _Downstream, index: int, chunk_lines: list[bytes]) -> _Fate:
    if index not in down.parts:
        if index not in down.markers:
            return _Fate(chunk_lines, pending=True)
        if index not in down.reject_keys:
            problems = [f"chunk {index}: quarantined without a rejects file"]
        else:
            problems = _check_rejects(index, chunk_lines,
                                      _rejects(store, down.reject_keys[index]))
        return _Fate(chunk_lines, held=True, problems=tuple(problems))
    part = _part_lines(store, down.parts[index])
    rejects = _rejects(store, down.reject_keys[index]) if index in down.reject_keys else []
    return _Fate(part + [r.text.removesuffix(b"\r") for r in rejects], rows=len(part),
                 rejected=len(rejects),
                 problems=tuple(_check_chunk(index, chunk_lines, part, rejects)))


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

    down = _Downstream.read(store)
    problems += down.problems()
    chunk_bytes = {layout.index_of(k): store.get(k).body for k in down.chunk_keys}
    if b"".join(chunk_bytes[i] for i in sorted(chunk_bytes)) != b"".join(consumed):
        problems.append("the chunks, concatenated, are not the raw bytes the cursor consumed")
    fates = {i: _fate(store, down, i, lines_of(chunk)) for i, chunk in sorted(chunk_bytes.items())}
    held = tuple(i for i, f in fates.items() if f.held)
    pending = tuple(i for i, f in fates.items() if f.pending)
    if pending and not allow_pending:
        problems.append(f"chunks not aggregated: {list(pending)}")
    if complete and unconsumed:
        problems.append(f"{unconsumed} raw lines were never cut into a chunk")
    downstream: Counter[bytes] = Counter()
    for f in fates.values():
        downstream.update(f.lines)
        problems += f.problems
    rows = sum(f.rows for f in fates.values())
    rejected = sum(f.rejected for f in fates.values())
    held_lines = sum(len(f.lines) for f in fates.values() if f.held)

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


def _stream_raw(store: Store, key: str, end: int | None = None) -> Iterator[bytes]:
    """The first `end` bytes (None: all) of a raw object (ranged GETs: `Store.stream`),
    gunzipped here with zlib, member after member (not by the product's transcode)."""
    at = 0
    for block in _gunzipped(store.stream(key)) if key.endswith(".gz") else store.stream(key):
        if end is not None and at + len(block) >= end:
            yield block[:end - at]
            return
        yield block
        at += len(block)


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
    raw_hash, chunk_hash = hashlib.sha256(), hashlib.sha256()
    source_bytes = 0
    for seg in _consumed_segments(store):
        blocks = (_chunks_of(store, seg) if seg.quarantined_until is not None
                  else _stream_raw(store, seg.raw_key, seg.end))
        for block in blocks:
            raw_hash.update(block)
            source_bytes += len(block)

    down = _Downstream.read(store)
    problems += down.problems()
    lines = rows = rejected = held_lines = lost = duplicated = 0
    pending: list[int] = []
    for key in down.chunk_keys:
        index = layout.index_of(key)
        chunk = store.get(key).body
        chunk_hash.update(chunk)
        chunk_lines = lines_of(chunk)
        fate = _fate(store, down, index, chunk_lines)
        lines += len(chunk_lines)
        rows, rejected = rows + fate.rows, rejected + fate.rejected
        held_lines += len(chunk_lines) if fate.held else 0
        if fate.pending:
            pending.append(index)
        problems += fate.problems
        expected, found = Counter(chunk_lines), Counter(fate.lines)
        lost += sum((expected - found).values())
        duplicated += sum((found - expected).values())
    if raw_hash.digest() != chunk_hash.digest():
        problems.append("the chunks, concatenated, are not the raw bytes the cursor consumed "
                        "(SHA-256 differs)")
    if pending and not allow_pending:
        problems.append(f"chunks not aggregated: {pending}")
    if lost or duplicated:
        problems.append(f"chunks vs parquet + rejects: {lost} lines lost, "
                        f"{duplicated} duplicated")
    return StreamedAccount(source_lines=lines, source_bytes=source_bytes,
                           chunks=len(down.chunk_keys), parquet_rows=rows,
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
