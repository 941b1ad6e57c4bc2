"""Where the data stands, for a person who thinks it is stuck (`ctr data status`).

Read from the bucket only: every raw object with its state (consumed, being consumed
with the byte offset, quarantined with the reason, waiting), the chunks still waiting
for aggregation, the quarantined chunks (too many malformed lines) with their reason,
the Parquet parts and the rejected lines.
"""

from __future__ import annotations

from typing import Any

from ctr import aggregate, chunking, layout
from ctr.storage import Store


def _keys(store: Store, prefix: str) -> list[str]:
    return sorted(k for k in store.list_keys(prefix) if not k.endswith("/"))


def status(store: Store) -> dict[str, Any]:
    """The data plane's state as a JSON-able document (see `format_status`)."""
    cursor, _ = chunking.load_cursor(store)
    done = {d.raw_key: d for d in cursor.done}
    quarantined = {q.raw_key: q for q in cursor.quarantined}
    sources: list[dict[str, Any]] = []
    raw_keys = _keys(store, layout.RAW_PREFIX)
    for key in sorted(set(raw_keys) | set(done) | set(quarantined)):
        entry: dict[str, Any] = {"key": key, "present": key in raw_keys}
        if key in quarantined:
            q = quarantined[key]
            entry.update(state="quarantined", reason=q.reason, at=q.at, size=q.size,
                         lines_cut=q.lines, bytes_cut=q.bytes,
                         chunks=[q.first_chunk, q.end_chunk])
        elif key in done:
            d = done[key]
            entry.update(state="consumed", size=d.bytes, lines_cut=d.lines, bytes_cut=d.bytes,
                         chunks=[d.first_chunk, d.end_chunk])
        elif cursor.source is not None and cursor.source.raw_key == key:
            s = cursor.source
            entry.update(state="consuming", size=s.size, lines_cut=s.lines, bytes_cut=s.offset,
                         chunks=[s.first_chunk, cursor.next_chunk], read_key=s.read_key)
        else:
            head = store.head(key)
            entry.update(state="waiting", size=int(head["ContentLength"]) if head else None,
                         lines_cut=0, bytes_cut=0)
        sources.append(entry)
    chunks = [layout.index_of(k) for k in _keys(store, layout.CHUNKS_PREFIX)]
    parts = {layout.index_of(k) for k in _keys(store, layout.PARQUET_PREFIX)}
    reject_keys = [k for k in _keys(store, layout.REJECTS_PREFIX) if layout.is_chunk_rejects_key(k)]
    rejected = sum(store.get(k).body.count(b"\n") for k in reject_keys)
    held = []
    for index in sorted(aggregate.quarantined(store) - parts):     # released ones have a part
        marker = aggregate.load_quarantine(store, index)
        if marker is not None:
            held.append(marker.model_dump(mode="json"))
    return {
        "sources": sources,
        "cursor": {"next_chunk": cursor.next_chunk, "lines": cursor.lines,
                   "bytes": cursor.bytes, "updated_at": cursor.updated_at},
        "chunks": len(chunks),
        "chunks_pending": sorted(set(chunks) - parts - {q["index"] for q in held}),
        "chunks_quarantined": held,
        "parts": len(parts),
        "reject_files": len(reject_keys),
        "rejected_lines": rejected,
        "quarantined": len(quarantined),
    }


def format_status(doc: dict[str, Any]) -> list[str]:
    """`status` as lines of text, the stuck things first."""
    lines: list[str] = []
    for s in doc["sources"]:
        size = f"{s['size']:,} B" if s.get("size") is not None else "? B"
        state = s["state"]
        what = f"{s['lines_cut']:,} lines / {s['bytes_cut']:,} of {size} cut"
        if state == "quarantined":
            what += f"; QUARANTINED {s['at']}: {s['reason']}"
        if not s["present"]:
            what += " (object no longer in raw/)"
        lines.append(f"{state:11s} {s['key']}  {what}")
    if not doc["sources"]:
        lines.append("no sources in raw/ (`ctr data put FILE`)")
    pending = doc["chunks_pending"]
    c = doc["cursor"]
    lines += [
        f"cursor      next chunk {c['next_chunk']}, {c['lines']:,} lines cut in total"
        + (f" (moved {c['updated_at']})" if c.get("updated_at") else ""),
        f"chunks      {doc['chunks']} cut, {len(pending)} waiting for aggregation"
        + (f": {pending[:10]}{' ...' if len(pending) > 10 else ''}" if pending else ""),
        f"parts       {doc['parts']} Parquet parts",
        f"rejects     {doc['rejected_lines']:,} lines in {doc['reject_files']} files",
    ]
    for q in doc["chunks_quarantined"]:
        lines.append(f"quarantined chunk {q['index']} {q['at']}: {q['reason']}; lines kept in "
                     f"{q['chunk_key']}, bad ones with reasons in {q['rejects_key']}")
    if doc["quarantined"]:
        lines.append(f"attention   {doc['quarantined']} source(s) quarantined: replace them "
                     "under a new key (the rest of the data goes on)")
    if doc["chunks_quarantined"]:
        lines.append(f"attention   {len(doc['chunks_quarantined'])} chunk(s) quarantined (too "
                     "many malformed lines; the rest of the data goes on): fix the source, or "
                     "`ctr data release INDEX --max-reject-share X` to keep their good lines")
    return lines
