"""Backfill in one execution: cut a source's whole backlog in parallel, with the chunks
the one-chunk cut (ctr.chunking) would have cut, exactly once.

A user who drops a file of many chunks used to wait one execution per chunk. Now the
state machine asks the chunk function to plan first:

* **Plan** (`plan`): on the cursor's current source (selected, transcoded, checked
  unchanged by `chunking.prepare`, as for a cut), when more than one chunk of lines is
  left, one streaming pass of ranged GETs counts b"\\n" block by block (the object is
  never held in memory) and records where every `chunk_lines`-th line ends: chunk
  `next_chunk + i` is bytes [start_i, end_i) -- the first `chunk_lines` lines from the
  previous end, never past the object's end, the last one possibly short: byte for
  byte what the sequential cut would cut (tests/unit/test_backfill.py compares them).
  The plan is a function of (source, its ETag, cursor offset, next chunk, chunk size),
  so two overlapping executions compute the same one. Its ranges are written as a JSON
  array to `layout.backfill_plan_key` (create-only; an existing plan must be equal),
  which the Distributed Map reads with an S3 ItemReader, so the plan's size is not
  limited by the state payload. Planning is skipped (status "none": the one-chunk cut
  runs) when the backlog is about one chunk or less by the cursor's average line
  length -- a wrong guess only costs a tick, never a boundary -- and when a chunk
  already exists at a planned index with another size (cut with another ChunkLines
  before a crash): the one-chunk cut adopts it, as it always has.
* **Cut one range** (`cut_range`, one Map child each, bounded concurrency): check the
  source's ETag, GET [start, end), check the line count, write the chunk with
  If-None-Match; if it exists (a crashed attempt, an overlapping execution), adopt it
  only if it is exactly those bytes. The cursor is not touched.
* **Finish** (`finish_backfill`): every planned chunk must exist with its size; then
  the cursor moves past all of them ONCE, with If-Match on the ETag it was read with.
  A crash anywhere before leaves the old cursor: the next execution plans the same
  ranges and adopts the chunks already written -- no gap, no duplicate. If the cursor
  moved meanwhile: a concurrent finish of the same plan (or the source done) is
  "already_finished"; a one-chunk cut that took the plan's first chunks leaves the
  cursor on a later boundary of the plan, and finish moves it from there.

Test-only fault point `backfill.after_write` (ctr.faults): in a child, between writing
its chunk and answering.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ctr import chunking, faults, ingest, layout
from ctr.errors import ConflictError, DataError
from ctr.steps import (
    BackfillFinished,
    BackfillPlan,
    BackfillRange,
    ChunkExhausted,
    ChunkResult,
    RangeCut,
)
from ctr.storage import Store

DEFAULT_CONCURRENCY = 4
SCAN_PIECE_BYTES = chunking.PIECE_BYTES     # one ranged GET of the planning scan
SCAN_PREFETCH = 3                           # GETs in flight ahead of the scan
FAULT_AFTER_WRITE = "backfill.after_write"
# Plan only when the backlog looks longer than this many chunks by the average line
# length (a guess: a wrong "no" costs one more tick; the ranges are always exact).
PLAN_ABOVE_CHUNKS = 1.2

Span = tuple[int, int, int]                 # (start, end, lines) of one chunk


def _pieces(store: Store, key: str, start: int, end: int,
            piece_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of [start, end) in order, a few ranged GETs ahead."""
    bounds = [(s, min(s + piece_bytes, end)) for s in range(start, end, piece_bytes)]
    with ThreadPoolExecutor(max_workers=SCAN_PREFETCH) as pool:
        pending: deque[tuple[int, Future[bytes]]] = deque()
        for lo, hi in bounds:
            pending.append((lo, pool.submit(store.get_range, key, lo, hi - 1)))
            if len(pending) > SCAN_PREFETCH:
                offset, future = pending.popleft()
                yield offset, future.result()
        while pending:
            offset, future = pending.popleft()
            yield offset, future.result()


def scan_spans(store: Store, key: str, start: int, size: int, chunk_lines: int, *,
               piece_bytes: int = SCAN_PIECE_BYTES) -> list[Span]:
    """The chunks the sequential cut would cut from byte `start` of `key` to its end:
    every `chunk_lines` lines, the last one possibly short (a final line without
    b"\\n" counts as a line). One streaming pass; memory is a few pieces."""
    spans: list[Span] = []
    chunk_start, count, last = start, 0, b"\n"
    for offset, piece in _pieces(store, key, start, size, piece_bytes):
        if not piece:
            continue
        last = piece[-1:]
        newlines = piece.count(b"\n")
        if count + newlines < chunk_lines:
            count += newlines
            continue
        positions = np.flatnonzero(np.frombuffer(piece, dtype=np.uint8) == 10)
        k = chunk_lines - count - 1            # the newline that ends the current chunk
        while k < len(positions):
            end = offset + int(positions[k]) + 1
            spans.append((chunk_start, end, chunk_lines))
            chunk_start = end
            k += chunk_lines
        count = len(positions) - (k - chunk_lines) - 1
    if chunk_start < size:
        spans.append((chunk_start, size, count + (0 if last == b"\n" else 1)))
    return spans


def _plan_key(source: chunking.Source, first_chunk: int, chunk_lines: int) -> str:
    identity = f"{source.read_key}\n{source.etag}\n{source.offset}\n{chunk_lines}"
    return layout.backfill_plan_key(first_chunk,
                                    hashlib.sha256(identity.encode()).hexdigest()[:16])


def _existing_chunk_sizes(store: Store) -> dict[str, int]:
    return {o["Key"]: int(o["Size"]) for o in store.list_objects(layout.CHUNKS_PREFIX)}


def plan(store: Store, chunk_lines: int, max_concurrency: int = DEFAULT_CONCURRENCY, *,
         source_url: str | None = None, fetch: chunking.Fetcher = ingest.put,
         piece_bytes: int = SCAN_PIECE_BYTES,
         max_attempts: int = chunking.MAX_ATTEMPTS) -> BackfillPlan:
    """Plan the current source's backlog (module docs); status "none" when the
    one-chunk cut should run instead. A lost race on the cursor (selecting a source)
    is retried from a fresh read, as `chunking.cut_chunk` does."""
    if chunk_lines < 1:
        raise ValueError("chunk_lines must be >= 1")
    for attempt in range(max_attempts):
        try:
            return _plan_once(store, chunk_lines, max_concurrency, source_url, fetch,
                              piece_bytes)
        except ConflictError:
            if attempt == max_attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _plan_once(store: Store, chunk_lines: int, max_concurrency: int, source_url: str | None,
               fetch: chunking.Fetcher, piece_bytes: int) -> BackfillPlan:
    started = time.perf_counter()

    def none(reason: str, **notes: object) -> BackfillPlan:
        return BackfillPlan(status="none", reason=reason, chunk_lines=chunk_lines,
                            max_concurrency=max_concurrency,
                            seconds=round(time.perf_counter() - started, 3),
                            **notes)  # type: ignore[arg-type]

    if max_concurrency < 1:
        return none("backfill is off (concurrency 0)")
    prepared = chunking.prepare(store, source_url, fetch)
    if isinstance(prepared, ChunkExhausted):
        return none("every raw object is consumed", downloaded=prepared.downloaded,
                    quarantined=prepared.quarantined)
    cursor, source, selected = prepared.cursor, prepared.source, prepared.selected
    notes = {"downloaded": selected.downloaded, "transcoded": selected.transcoded,
             "quarantined": chunking._notes(selected.quarantine)}
    left = source.size - source.offset
    if left <= chunk_lines:                         # a line is at least one byte
        return none(f"{left} bytes left: one chunk at most", **notes)
    if cursor.lines and left <= chunk_lines * cursor.bytes / cursor.lines * PLAN_ABOVE_CHUNKS:
        # by the average line length so far about one chunk: not worth a scan of its
        # bytes before the cut reads them again (if there is more, the next tick plans)
        return none(f"{left} bytes left: about one chunk or less", **notes)
    spans = scan_spans(store, source.read_key, source.offset, source.size, chunk_lines,
                       piece_bytes=piece_bytes)
    if len(spans) < 2:
        return none(f"{left} bytes left are one chunk", **notes)
    first = cursor.next_chunk
    ranges = [BackfillRange(index=first + i, key=layout.chunk_key(first + i),
                            read_key=source.read_key, etag=source.etag, start=start,
                            end=end, lines=lines)
              for i, (start, end, lines) in enumerate(spans)]
    sizes = _existing_chunk_sizes(store)
    clash = next((r for r in ranges if r.key in sizes and sizes[r.key] != r.end - r.start),
                 None)
    if clash is not None:
        return none(f"{clash.key} exists with {sizes[clash.key]} bytes, not the planned "
                    f"{clash.end - clash.start} (cut with another chunk size): the "
                    "one-chunk cut adopts it", **notes)
    key = _plan_key(source, first, chunk_lines)
    body = json.dumps([r.to_payload() for r in ranges], separators=(",", ":")).encode()
    existed = store.put_if_absent(key, body, "application/json") is None
    if existed and store.get(key).body != body:
        raise DataError(f"{key} exists but is not the plan of this position; it was "
                            "changed by hand", key=key)
    return BackfillPlan(
        status="planned", reason=f"{len(ranges)} chunks left in {source.raw_key}",
        chunk_lines=chunk_lines, max_concurrency=max_concurrency,
        seconds=round(time.perf_counter() - started, 3), plan_key=key,
        raw_key=source.raw_key, read_key=source.read_key, etag=source.etag,
        size=source.size, start=source.offset, first_chunk=first,
        end_chunk=first + len(ranges), chunks=len(ranges),
        lines=sum(r.lines for r in ranges), bytes=source.size - source.offset,
        **notes)  # type: ignore[arg-type]


def _lines_in(data: bytes) -> int:
    return data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


def cut_range(store: Store, item: BackfillRange) -> RangeCut:
    """Write the planned chunk `item` create-only, or adopt the existing one if it is
    exactly those bytes (module docs). The cursor is not touched."""
    started = time.perf_counter()
    head = store.head(item.read_key)
    if head is None or head["ETag"] != item.etag:
        raise DataError(f"{item.read_key} changed or vanished since it was planned; raw "
                        "objects must be immutable (the next one-chunk cut sets it aside)",
                        key=item.read_key)
    data = chunking._get_span(store, item.read_key, item.start, item.end)
    if len(data) != item.end - item.start or _lines_in(data) != item.lines:
        raise DataError(f"bytes [{item.start}, {item.end}) of {item.read_key} are not the "
                        f"{item.lines} planned lines of {item.key}", key=item.key)
    reused = store.put_if_absent(item.key, data, "text/plain") is None
    if reused and store.get(item.key).body != data:
        raise DataError(f"{item.key} exists but does not match {item.read_key} bytes "
                        f"[{item.start}, {item.end}); the raw object or the chunk was "
                        "changed by hand", key=item.key)
    faults.inject(FAULT_AFTER_WRITE)
    return RangeCut(index=item.index, key=item.key, lines=item.lines, bytes=len(data),
                    reused_existing_chunk=reused,
                    seconds=round(time.perf_counter() - started, 3))


def load_ranges(store: Store, planned: BackfillPlan) -> list[BackfillRange]:
    if planned.plan_key is None:
        raise DataError("the backfill plan has no plan_key (status 'none')")
    return [BackfillRange.model_validate(r) for r in json.loads(store.get(planned.plan_key).body)]


def _finish_once(store: Store, planned: BackfillPlan,
                 ranges: list[BackfillRange]) -> BackfillFinished:
    cursor, etag = chunking.load_cursor(store)
    first, end_chunk = ranges[0].index, ranges[-1].index + 1
    totals = {"first_chunk": first, "end_chunk": end_chunk, "chunks": len(ranges),
              "lines": sum(r.lines for r in ranges),
              "bytes": ranges[-1].end - ranges[0].start}
    source = cursor.source
    on_plan = (source is not None and (source.raw_key, source.read_key, source.etag)
               == (planned.raw_key, planned.read_key, planned.etag))
    if not on_plan:
        if planned.raw_key in {d.raw_key for d in cursor.done} and cursor.next_chunk >= end_chunk:
            return BackfillFinished(status="already_finished", next_chunk=cursor.next_chunk,
                                    lines_total=cursor.lines, source_finished=True, **totals)
        raise DataError(f"the chunk cursor (chunk {cursor.next_chunk}) is not on the source "
                        f"of the backfill plan {planned.plan_key} ({planned.raw_key}); "
                        "nothing was moved", key=chunking.CURSOR_KEY)
    assert source is not None
    at = next((i for i, r in enumerate(ranges)
               if (r.index, r.start) == (cursor.next_chunk, source.offset)), None)
    if at is None:
        raise DataError(f"the chunk cursor (chunk {cursor.next_chunk}, byte {source.offset} "
                        f"of {source.read_key}) is on no boundary of the backfill plan "
                        f"{planned.plan_key}; nothing was moved", key=chunking.CURSOR_KEY)
    remaining = ranges[at:]
    sizes = _existing_chunk_sizes(store)
    for r in remaining:
        if sizes.get(r.key) != r.end - r.start:
            found = "is missing" if r.key not in sizes else f"has {sizes[r.key]} bytes"
            raise DataError(f"{r.key} {found}, planned {r.end - r.start} bytes; the cursor "
                            "stays where it was and the next execution cuts it", key=r.key)
    advanced = cursor
    for r in remaining:
        advanced = advanced.advance(r.end - r.start, r.lines, planned.chunk_lines)
    advanced.save(store, etag)                  # ConflictError: someone moved it first
    return BackfillFinished(status="finished", next_chunk=advanced.next_chunk,
                            lines_total=advanced.lines,
                            source_finished=advanced.source is None, **totals)


def finish(store: Store, planned: BackfillPlan,
           max_attempts: int = chunking.MAX_ATTEMPTS) -> BackfillFinished:
    """Move the cursor past every chunk of the plan at once (module docs); a lost race
    on the cursor is re-read and decided again."""
    ranges = load_ranges(store, planned)
    if not ranges:
        raise DataError(f"the backfill plan {planned.plan_key} has no ranges")
    for attempt in range(max_attempts):
        try:
            return _finish_once(store, planned, ranges)
        except ConflictError:
            if attempt == max_attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def backfill_all(store: Store, chunk_lines: int, max_concurrency: int = DEFAULT_CONCURRENCY,
                 *, piece_bytes: int = SCAN_PIECE_BYTES
                 ) -> list[ChunkResult | BackfillPlan | BackfillFinished]:
    """What one execution of the state machine does, in process (the tests): plan, cut
    every range, finish, until nothing is planned; then one one-chunk cut."""
    results: list[ChunkResult | BackfillPlan | BackfillFinished] = []
    while True:
        planned = plan(store, chunk_lines, max_concurrency, piece_bytes=piece_bytes)
        results.append(planned)
        if planned.status != "planned":
            break
        ranges = load_ranges(store, planned)
        with ThreadPoolExecutor(max_workers=max_concurrency) as pool:
            list(pool.map(lambda r: cut_range(store, r), ranges))
        results.append(finish(store, planned))
    results.append(chunking.cut_chunk(store, chunk_lines))
    return results
