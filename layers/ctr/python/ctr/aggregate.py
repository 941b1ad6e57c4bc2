"""Aggregate: chunks/chunk_{i}.txt -> parquet/part_{i}.parquet, bad lines quarantined.

Each chunk becomes its own immutable part with the fixed `PART_SCHEMA` (no
ever-growing file to rewrite); "pending" simply means "a chunk without its part", so
there is no progress counter to get out of sync, and any subset of chunks can be
processed in any order or in parallel (a Step Functions Distributed Map can fan out one
item per chunk).

Per chunk: parse with `ctr.criteo.parse_part` (Arrow's CSV reader; per-line checks only
for suspicious lines; categoricals as uint32, `ctr.schema.PART_SCHEMA`), write the
malformed lines to rejects/chunk_{i}.txt as
`<line number in the chunk>\\t<reason>\\t<original line>`, then the Parquet part. Both
writes are If-None-Match and the part is written last, so it marks the chunk done: a
crash in between is repaired by the next run, and a re-run over finished chunks is a
no-op.

A chunk whose share of rejected lines exceeds `max_reject_share` is unusable as a whole
(retrying will not change that), so it is **quarantined and the data plane goes on**: it
gets its rejects file (for inspection) and a create-only marker
`rejects/quarantined/chunk_{i}.json` (`ChunkQuarantine`: counts, threshold, reason)
but no part. The marker takes the chunk out of `plan` (later runs and the fan-out skip
it), nothing is lost (its lines stay in chunks/), and `ctr data status` lists it; `ctr
data release I --max-reject-share X` converts it again with a threshold a person chose
(`include_quarantined`).

Test-only fault points (`ctr.faults`, inert unless CTR_FAULTS names them):
`aggregate.start`, and `aggregate.before_part` -- a chunk's rejects are written, its part
is not yet (the crash the write order above is for).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from ctr import clock, faults, layout
from ctr.criteo import parse_part
from ctr.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
from ctr.steps import (
    AggregateResult,
    ChunkConversion,
    ChunkParsed,
    ChunkQuarantine,
    ChunkSkipped,
    PlanResult,
)
from ctr.storage import Store

DEFAULT_MAX_REJECT_SHARE = 0.05
FAULT_BEFORE_PART = "aggregate.before_part"
PARQUET_OPTIONS: dict[str, Any] = {
    # The encodings do the compressing (measured, README "data plane"): a general
    # codec on top costs a good share of the write time for little.
    "compression": "none",
    # Categoricals (uint32): dictionary + RLE -- the head values of every column repeat.
    "use_dictionary": list(CAT_COLUMNS),
    # Label and integers: delta encoding is as small as a dictionary and cheaper.
    "column_encoding": {c: "DELTA_BINARY_PACKED" for c in (LABEL, *INT_COLUMNS)},
    # min/max of hashes help no query; of label and integers they are cheap and useful
    "write_statistics": [LABEL, *INT_COLUMNS],
}


def _indices(store: Store, prefix: str) -> set[int]:
    return {layout.index_of(k) for k in store.list_keys(prefix) if not k.endswith("/")}


def quarantined(store: Store) -> set[int]:
    """The chunks with a quarantine marker (some may have a part since: released)."""
    return _indices(store, layout.QUARANTINED_CHUNKS_PREFIX)


def plan(store: Store) -> PlanResult:
    """The chunks that have no Parquet part yet and are not quarantined, ascending."""
    pending = sorted(_indices(store, layout.CHUNKS_PREFIX)
                     - _indices(store, layout.PARQUET_PREFIX) - quarantined(store))
    return PlanResult(pending=pending, pending_count=len(pending))


def load_quarantine(store: Store, index: int) -> ChunkQuarantine | None:
    found = store.get_json(layout.quarantined_chunk_key(index))
    return ChunkQuarantine.model_validate(found[0]) if found else None


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class _Loaded:
    """A chunk's bytes, or why there is nothing to do (`body` None)."""

    body: bytes | None
    quarantined: bool = False

    def skipped(self, index: int) -> ChunkSkipped:
        return ChunkSkipped(index=index, key=layout.parquet_key(index),
                            quarantined=True if self.quarantined else None)


def _load(store: Store, index: int, include_quarantined: bool) -> _Loaded:
    """The chunk's bytes, unless its part already exists or it is quarantined."""
    if store.exists(layout.parquet_key(index)):
        return _Loaded(None)
    if not include_quarantined and store.exists(layout.quarantined_chunk_key(index)):
        return _Loaded(None, quarantined=True)
    return _Loaded(store.get(layout.chunk_key(index)).body)


@dataclass(frozen=True)
class _Converted:
    """One parsed chunk on its way to storage: the rejects file (None when no line was
    rejected) and the table (None when the chunk failed the reject threshold)."""

    index: int
    size: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    reject_share: float
    careful_parse: bool
    rejects: bytes | None
    table: pa.Table | None
    reason: str | None
    max_reject_share: float


def _convert(index: int, body: bytes, max_reject_share: float) -> _Converted:
    parsed = parse_part(body)
    rejected = len(parsed.rejects)
    share = rejected / parsed.lines if parsed.lines else 0.0
    rejects = (b"\n".join(r.to_bytes() for r in parsed.rejects) + b"\n") if rejected else None
    failed = share > max_reject_share
    return _Converted(
        index=index, size=len(body), rows_in=parsed.lines, rows_out=parsed.table.num_rows,
        rows_rejected=rejected, reject_share=round(share, 6), careful_parse=parsed.careful,
        rejects=rejects, table=None if failed else parsed.table,
        reason=(f"{rejected} of {parsed.lines} lines rejected "
                f"({share:.2%} > {max_reject_share:.2%})") if failed else None,
        max_reject_share=max_reject_share)


def _quarantine(store: Store, converted: _Converted) -> str:
    """Write the chunk's quarantine marker (create-only: a retry or an overlapping run
    keeps the first one) and return its key."""
    index = converted.index
    key = layout.quarantined_chunk_key(index)
    marker = ChunkQuarantine(
        index=index, chunk_key=layout.chunk_key(index), rejects_key=layout.rejects_key(index),
        rows_in=converted.rows_in, rows_rejected=converted.rows_rejected,
        reject_share=converted.reject_share, max_reject_share=converted.max_reject_share,
        reason=converted.reason or "too many rejected lines", at=clock.iso_now())
    store.put_if_absent(key, marker.model_dump_json(indent=1).encode(), "application/json")
    return key


def _write(store: Store, converted: _Converted, started: float) -> ChunkParsed:
    """Rejects first, then the part (the part marks the chunk done)."""
    index = converted.index
    rejects_key = layout.rejects_key(index) if converted.rejects is not None else None
    if converted.rejects is not None:
        store.put_if_absent(layout.rejects_key(index), converted.rejects, "text/plain")
    faults.inject(FAULT_BEFORE_PART)
    status: Literal["converted", "skipped", "quarantined"] = "quarantined"
    quarantine_key = None
    if converted.table is not None:
        created = store.put_if_absent(layout.parquet_key(index),
                                      parquet_bytes(converted.table)) is not None
        status = "converted" if created else "skipped"
    else:
        quarantine_key = _quarantine(store, converted)
    seconds = time.perf_counter() - started
    return ChunkParsed(
        index=index, key=layout.parquet_key(index), rows_in=converted.rows_in,
        rows_out=converted.rows_out, rows_rejected=converted.rows_rejected,
        reject_share=converted.reject_share, bytes=converted.size,
        careful_parse=converted.careful_parse, rejects_key=rejects_key, status=status,
        reason=converted.reason, quarantine_key=quarantine_key, seconds=round(seconds, 3),
        bytes_per_second=round(converted.size / seconds) if seconds else None)


def aggregate_chunk(store: Store, index: int,
                    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
                    include_quarantined: bool = False) -> ChunkConversion:
    """Convert one chunk (see the module docstring): `ChunkSkipped` when its part already
    exists or it is quarantined, else `ChunkParsed` with status "converted", "skipped"
    (a concurrent run wrote the part first) or "quarantined" (too many rejects)."""
    started = time.perf_counter()
    loaded = _load(store, index, include_quarantined)
    if loaded.body is None:
        return loaded.skipped(index)
    return _write(store, _convert(index, loaded.body, max_reject_share), started)


def _run_pipelined(store: Store, todo: list[int], max_reject_share: float,
                   include_quarantined: bool) -> list[ChunkConversion]:
    """aggregate_chunk over `todo`, overlapped: while the main thread parses chunk i
    (Arrow, multi-threaded), one worker downloads chunk i+1 and another serialises and
    uploads chunk i-1. At most one download and one upload are in flight, so memory
    stays at about three chunks."""
    results: list[ChunkConversion] = []
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        upload: Future[ChunkParsed] | None = None
        download = reader.submit(_load, store, todo[0], include_quarantined) if todo else None
        for position, index in enumerate(todo):
            started = time.perf_counter()
            assert download is not None
            loaded = download.result()
            download = (reader.submit(_load, store, todo[position + 1], include_quarantined)
                        if position + 1 < len(todo) else None)
            if loaded.body is None:
                results.append(loaded.skipped(index))
                continue
            converted = _convert(index, loaded.body, max_reject_share)
            del loaded
            if upload is not None:
                results.append(upload.result())
            upload = writer.submit(_write, store, converted, started)
        if upload is not None:
            results.append(upload.result())
    return sorted(results, key=lambda r: r.index)


def aggregate(store: Store, indices: Iterable[int] | None = None,
              max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
              include_quarantined: bool = False) -> AggregateResult:
    """Convert the given chunks (default: all pending ones). Returns per-chunk results
    and totals; a chunk with too many rejects is quarantined (module docstring) and the
    others go on."""
    faults.inject("aggregate.start")
    started = time.perf_counter()
    todo = plan(store).pending if indices is None else sorted(set(indices))
    results = _run_pipelined(store, todo, max_reject_share, include_quarantined)
    done = [r for r in results if isinstance(r, ChunkParsed) and r.status == "converted"]
    seconds = time.perf_counter() - started
    size = sum(r.bytes for r in done)
    return AggregateResult(
        converted=[r.index for r in done],
        skipped=[r.index for r in results if r.status == "skipped"],
        quarantined=[r.index for r in results if r.status == "quarantined"],
        rows_in=sum(r.rows_in for r in done), rows_out=sum(r.rows_out for r in done),
        rows_rejected=sum(r.rows_rejected for r in done), bytes=size,
        seconds=round(seconds, 3), bytes_per_second=round(size / seconds) if seconds else None,
        chunks=results)
