"""Aggregate: chunks/chunk_{i}.txt -> parquet/part_{i}.parquet, bad lines quarantined.

Replaces the seed's build_cumulative, which rewrote one ever-growing "cumulative"
Parquet file and tracked progress in `last_agg_idx.txt`. Here each chunk becomes its own
immutable part with the fixed `PARQUET_SCHEMA`; "pending" simply means "a chunk without
its part", so there is no counter to get out of sync, and any subset of chunks can be
processed in any order or in parallel (a Step Functions Distributed Map can fan out one
item per chunk).

Per chunk: parse with `ctr.criteo.parse_tsv` (Arrow's CSV reader; per-line checks only
for suspicious lines), write the malformed lines to rejects/chunk_{i}.txt as
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
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ctr import faults, layout
from ctr.criteo import parse_tsv
from ctr.errors import DataError, ValidationError
from ctr.schema import INT_COLUMNS, LABEL
from ctr.storage import Store

DEFAULT_MAX_REJECT_SHARE = 0.05
FAULT_BEFORE_PART = "aggregate.before_part"
PARQUET_OPTIONS: dict[str, Any] = {
    # Dictionary + RLE encoding (on by default) does the compressing; snappy cannot shrink
    # random hex much (measured: +8% size without it) but costs ~20% of the write time.
    "compression": "none",
    # min/max of hex strings help no query; of label and integers they are cheap and useful
    "write_statistics": [LABEL, *INT_COLUMNS],
}


def _indices(store: Store, prefix: str) -> set[int]:
    return {layout.index_of(k) for k in store.list_keys(prefix) if not k.endswith("/")}


def plan(store: Store) -> list[int]:
    """Indices of chunks that have no Parquet part yet, ascending."""
    return sorted(_indices(store, layout.CHUNKS_PREFIX) - _indices(store, layout.PARQUET_PREFIX))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def _load(store: Store, index: int) -> bytes | None:
    """The chunk's bytes, or None when its part already exists (nothing to do)."""
    if store.exists(layout.parquet_key(index)):
        return None
    return store.get(layout.chunk_key(index)).body


def _convert(index: int, body: bytes, max_reject_share: float
             ) -> tuple[dict[str, Any], bytes | None, pa.Table | None]:
    """Parse one chunk: (result so far, rejects file or None, table to write or None
    when the chunk failed the reject threshold)."""
    parsed = parse_tsv(body)
    rejected = len(parsed.rejects)
    share = rejected / parsed.lines if parsed.lines else 0.0
    result: dict[str, Any] = {
        "index": index, "key": layout.parquet_key(index), "rows_in": parsed.lines,
        "rows_out": parsed.table.num_rows, "rows_rejected": rejected,
        "reject_share": round(share, 6), "bytes": len(body), "careful_parse": parsed.careful,
    }
    rejects = None
    if rejected:
        rejects = b"\n".join(r.to_bytes() for r in parsed.rejects) + b"\n"
        result["rejects_key"] = layout.rejects_key(index)
    if share > max_reject_share:
        result.update(status="failed", reason=f"{rejected} of {parsed.lines} lines rejected "
                                              f"({share:.2%} > {max_reject_share:.2%})")
        return result, rejects, None
    return result, rejects, parsed.table


def _write(store: Store, result: dict[str, Any], rejects: bytes | None,
           table: pa.Table | None, started: float) -> dict[str, Any]:
    """Rejects first, then the part (the part marks the chunk done)."""
    if rejects is not None:
        store.put_if_absent(result["rejects_key"], rejects, "text/plain")
    faults.inject(FAULT_BEFORE_PART)
    if table is not None:
        created = store.put_if_absent(result["key"], parquet_bytes(table)) is not None
        result["status"] = "converted" if created else "skipped"
    seconds = time.perf_counter() - started
    result.update(seconds=round(seconds, 3),
                  bytes_per_second=round(result["bytes"] / seconds) if seconds else None)
    return result


def aggregate_chunk(store: Store, index: int,
                    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE) -> dict[str, Any]:
    """Convert one chunk (see the module docstring). The result's "status" is
    "converted", "skipped" (part already there) or "failed" (too many rejects)."""
    started = time.perf_counter()
    body = _load(store, index)
    if body is None:
        return {"index": index, "status": "skipped", "key": layout.parquet_key(index)}
    return _write(store, *_convert(index, body, max_reject_share), started)


def indices_from_event(event: Mapping[str, Any]) -> list[int] | None:
    """Which chunks an event asks for; None means "every pending chunk".

    Accepted: {"indices": [3, 4]}, {"index": 3}, a Distributed Map batch
    {"Items": [{"Key": "chunks/chunk_000003.txt", ...}, ...]} (S3 ItemReader + ItemBatcher),
    one Map item {"Key": "chunks/chunk_000003.txt", ...}, or {"key": "chunks/..."} (what
    the state machine's ItemSelector-free Map task passes).
    """
    try:
        if "indices" in event:
            return [int(i) for i in event["indices"]]
        if "index" in event:
            return [int(event["index"])]
        if "Items" in event:
            return [layout.index_of(item["Key"]) for item in event["Items"]]
        for name in ("Key", "key"):
            if name in event:
                return [layout.index_of(event[name])]
    except (TypeError, ValueError, KeyError) as err:
        raise ValidationError(f"cannot read chunk indices from the event: {err}",
                              errors=[{"loc": ["event"], "msg": str(err)}]) from err
    return None


def _run_pipelined(store: Store, todo: list[int], max_reject_share: float
                   ) -> list[dict[str, Any]]:
    """aggregate_chunk over `todo`, overlapped: while the main thread parses chunk i
    (Arrow, multi-threaded), one worker downloads chunk i+1 and another serialises and
    uploads chunk i-1. At most one download and one upload are in flight, so memory
    stays at about three chunks."""
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        upload: Future[dict[str, Any]] | None = None
        download = reader.submit(_load, store, todo[0]) if todo else None
        for position, index in enumerate(todo):
            started = time.perf_counter()
            assert download is not None
            body = download.result()
            download = (reader.submit(_load, store, todo[position + 1])
                        if position + 1 < len(todo) else None)
            if body is None:
                results.append({"index": index, "status": "skipped",
                                "key": layout.parquet_key(index)})
                continue
            converted = _convert(index, body, max_reject_share)
            del body
            if upload is not None:
                results.append(upload.result())
            upload = writer.submit(_write, store, *converted, started)
        if upload is not None:
            results.append(upload.result())
    return sorted(results, key=lambda r: r["index"])


def raise_for_failures(summary: Mapping[str, Any]) -> None:
    """DataError naming every chunk of an `aggregate` summary that had too many rejects."""
    failed = [r for r in summary["chunks"] if r["status"] == "failed"]
    if failed:
        raise DataError("reject share above MAX_REJECT_SHARE in chunk(s) "
                        + ", ".join(f"{r['index']} ({r['reason']}, see {r['rejects_key']})"
                                    for r in failed), failed=[r["index"] for r in failed])


def aggregate(store: Store, indices: Iterable[int] | None = None,
              max_reject_share: float = DEFAULT_MAX_REJECT_SHARE, *,
              raise_on_failure: bool = True) -> dict[str, Any]:
    """Convert the given chunks (default: all pending ones). Returns per-chunk results
    and totals. Chunks with too many rejects do not stop the others; afterwards they
    raise DataError (`raise_for_failures`) unless `raise_on_failure=False`."""
    faults.inject("aggregate.start")
    started = time.perf_counter()
    todo = plan(store) if indices is None else sorted(set(indices))
    results = _run_pipelined(store, todo, max_reject_share)
    done = [r for r in results if r["status"] == "converted"]
    failed = [r for r in results if r["status"] == "failed"]
    seconds = time.perf_counter() - started
    totals = {key: sum(r.get(key, 0) for r in done)
              for key in ("rows_in", "rows_out", "rows_rejected", "bytes")}
    summary = {"converted": [r["index"] for r in done],
               "skipped": [r["index"] for r in results if r["status"] == "skipped"],
               "failed": [r["index"] for r in failed], **totals,
               "seconds": round(seconds, 3),
               "bytes_per_second": round(totals["bytes"] / seconds) if seconds else None,
               "chunks": results}
    if raise_on_failure:
        raise_for_failures(summary)
    return summary
