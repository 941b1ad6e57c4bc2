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
no-op. A chunk whose share of rejected lines exceeds `max_reject_share` gets its
rejects file (for inspection) but no part, and the run raises DataError naming it --
the data is unusable as a whole, and retrying will not change that.

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

from ctr import faults, layout
from ctr.criteo import parse_part
from ctr.errors import DataError
from ctr.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
from ctr.steps import AggregateResult, ChunkConversion, ChunkParsed, ChunkSkipped, PlanResult
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


def plan(store: Store) -> PlanResult:
    """The chunks that have no Parquet part yet, ascending."""
    pending = sorted(_indices(store, layout.CHUNKS_PREFIX)
                     - _indices(store, layout.PARQUET_PREFIX))
    return PlanResult(pending=pending, pending_count=len(pending))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def _load(store: Store, index: int) -> bytes | None:
    """The chunk's bytes, or None when its part already exists (nothing to do)."""
    if store.exists(layout.parquet_key(index)):
        return None
    return store.get(layout.chunk_key(index)).body


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
                f"({share:.2%} > {max_reject_share:.2%})") if failed else None)


def _write(store: Store, converted: _Converted, started: float) -> ChunkParsed:
    """Rejects first, then the part (the part marks the chunk done)."""
    index = converted.index
    rejects_key = layout.rejects_key(index) if converted.rejects is not None else None
    if converted.rejects is not None:
        store.put_if_absent(layout.rejects_key(index), converted.rejects, "text/plain")
    faults.inject(FAULT_BEFORE_PART)
    status: Literal["converted", "skipped", "failed"] = "failed"
    if converted.table is not None:
        created = store.put_if_absent(layout.parquet_key(index),
                                      parquet_bytes(converted.table)) is not None
        status = "converted" if created else "skipped"
    seconds = time.perf_counter() - started
    return ChunkParsed(
        index=index, key=layout.parquet_key(index), rows_in=converted.rows_in,
        rows_out=converted.rows_out, rows_rejected=converted.rows_rejected,
        reject_share=converted.reject_share, bytes=converted.size,
        careful_parse=converted.careful_parse, rejects_key=rejects_key, status=status,
        reason=converted.reason, seconds=round(seconds, 3),
        bytes_per_second=round(converted.size / seconds) if seconds else None)


def aggregate_chunk(store: Store, index: int,
                    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> ChunkConversion:
    """Convert one chunk (see the module docstring): `ChunkSkipped` when its part already
    exists, else `ChunkParsed` with status "converted", "skipped" (a concurrent run
    wrote the part first) or "failed" (too many rejects)."""
    started = time.perf_counter()
    body = _load(store, index)
    if body is None:
        return ChunkSkipped(index=index, key=layout.parquet_key(index))
    return _write(store, _convert(index, body, max_reject_share), started)


def _run_pipelined(store: Store, todo: list[int], max_reject_share: float
                   ) -> list[ChunkConversion]:
    """aggregate_chunk over `todo`, overlapped: while the main thread parses chunk i
    (Arrow, multi-threaded), one worker downloads chunk i+1 and another serialises and
    uploads chunk i-1. At most one download and one upload are in flight, so memory
    stays at about three chunks."""
    results: list[ChunkConversion] = []
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        upload: Future[ChunkParsed] | None = None
        download = reader.submit(_load, store, todo[0]) if todo else None
        for position, index in enumerate(todo):
            started = time.perf_counter()
            assert download is not None
            body = download.result()
            download = (reader.submit(_load, store, todo[position + 1])
                        if position + 1 < len(todo) else None)
            if body is None:
                results.append(ChunkSkipped(index=index, key=layout.parquet_key(index)))
                continue
            converted = _convert(index, body, max_reject_share)
            del body
            if upload is not None:
                results.append(upload.result())
            upload = writer.submit(_write, store, converted, started)
        if upload is not None:
            results.append(upload.result())
    return sorted(results, key=lambda r: r.index)


def raise_for_failures(summary: AggregateResult) -> None:
    """DataError naming every chunk of an `aggregate` summary that had too many rejects."""
    failed = [r for r in summary.chunks if r.status == "failed"]
    if failed:
        raise DataError("reject share above MAX_REJECT_SHARE in chunk(s) "
                        + ", ".join(f"{r.index} ({r.reason}, see {r.rejects_key})"
                                    for r in failed if isinstance(r, ChunkParsed)),
                        failed=[r.index for r in failed])


def aggregate(store: Store, indices: Iterable[int] | None = None,
              max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
              raise_on_failure: bool = True) -> AggregateResult:
    """Convert the given chunks (default: all pending ones). Returns per-chunk results
    and totals. Chunks with too many rejects do not stop the others; afterwards they
    raise DataError (`raise_for_failures`) unless `raise_on_failure=False`."""
    faults.inject("aggregate.start")
    started = time.perf_counter()
    todo = plan(store).pending if indices is None else sorted(set(indices))
    results = _run_pipelined(store, todo, max_reject_share)
    done = [r for r in results if isinstance(r, ChunkParsed) and r.status == "converted"]
    seconds = time.perf_counter() - started
    size = sum(r.bytes for r in done)
    summary = AggregateResult(
        converted=[r.index for r in done],
        skipped=[r.index for r in results if r.status == "skipped"],
        failed=[r.index for r in results if r.status == "failed"],
        rows_in=sum(r.rows_in for r in done), rows_out=sum(r.rows_out for r in done),
        rows_rejected=sum(r.rows_rejected for r in done), bytes=size,
        seconds=round(seconds, 3), bytes_per_second=round(size / seconds) if seconds else None,
        chunks=results)
    if raise_on_failure:
        raise_for_failures(summary)
    return summary
