"""The chunker: cut the next N lines of the raw data into chunks/chunk_{i:06d}.txt,
exactly once, at a cost proportional to the chunk.

Re-reading the raw data from line 0 on every run would make run k cost O(k x chunk)
(O(n^2) over the dataset), and a position counter written apart from the chunk could
duplicate or skip lines after a crash. So:

* **Byte cursor.** `state/chunk_cursor.json` holds the raw object being consumed, the
  byte offset of its next unread line, the next chunk index and totals. A run reads
  from that offset with ranged GETs, just enough bytes for N lines (estimated from the
  average line length, topped up if short), so its cost does not depend on the position.
* **Exactly once.** The chunk key is a function of the cursor (index i is cut at the
  offset the cursor holds for i), so every attempt at chunk i produces the same bytes.
  The chunk is written with If-None-Match; if it already exists (a crashed attempt, or a
  concurrent run, wrote it), the run adopts the existing object after checking that it
  matches the source at that offset. Only then is the cursor advanced, with If-Match on
  the ETag it was read with. A crash anywhere leaves either the old cursor (the retry
  adopts the chunk) or the new one (the retry cuts the next chunk): no gap, no
  duplicate. Two concurrent runs race on the cursor; the loser re-reads it and cuts the
  following chunk, so two runs produce two distinct chunks.
* **Several raw objects.** Objects under raw/ are consumed one after another in key
  order; finished ones are listed in the cursor, so new files dropped into raw/ later
  are picked up. A chunk never spans two objects (the last chunk of an object may be
  short). When nothing is left the run answers `ChunkExhausted` ({"status": "exhausted"}).
* **gzip sources: one-time transcode.** A byte offset into a gzip stream cannot be
  resumed cheaply: deflate blocks are not byte-aligned and need the previous 32 KiB of
  output, and Python's zlib has no `inflatePrime` to build a zran-style seek index. So
  the first run that meets raw/<x>.gz streams it once through zlib into a plain object
  `state/decompressed/raw/<x>` (multipart upload, completed with If-None-Match, so
  concurrent transcoders cannot clobber each other), and the cursor then points into
  that object. One extra sequential pass over the file, once, then O(chunk) ranged
  reads for every run, at the price of storing the data uncompressed once more. To skip
  the transcode in Lambda, ingest with `ctr data put --decompress`.
* **Quarantine, then go on.** A source that cannot be read -- a corrupt or truncated
  .gz (its transcode fails before a single line is cut), or an object that changed or
  vanished under the cursor -- is recorded in the cursor's `quarantined` list with the
  reason, and chunking goes on with the next source instead of failing every run until
  someone removes it. The lines already cut from a source that later proves unusable
  stay where they are (chunks [first_chunk, end_chunk), then parts and rejects as any
  other): the record keeps their count, bytes and chunk range, so the line account
  counts them as consumed from that source (read from the chunks, since the source
  itself can no longer be trusted) and nothing is lost or counted twice. Replacing a
  quarantined object under a new key gets it chunked; `ctr data status` lists them.
* **Download if absent.** With a configured source URL and an empty raw/, the run
  first streams the URL into raw/.

The cursor is a `Cursor` (below); its JSON document keeps the keys it has always had, so
a cursor written by an older version is read as it is.

Test-only fault point `chunk.after_write` (`ctr.faults`, inert unless CTR_FAULTS names
it): between writing the chunk and moving the cursor, to prove the crash story above.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import pydantic

from ctr import faults, ingest, layout
from ctr.clock import iso_now
from ctr.errors import ConflictError, DataError
from ctr.steps import (
    ChunkCut,
    ChunkExhausted,
    ChunkPosition,
    ChunkResult,
    Downloaded,
    QuarantineNote,
    Transcoded,
)
from ctr.storage import Store

CURSOR_KEY = layout.state_key("chunk_cursor.json")
DECOMPRESSED_PREFIX = layout.state_key("decompressed/")
DEFAULT_CHUNK_LINES = 1_000_000
INITIAL_BYTES_PER_LINE = 256.0
PIECE_BYTES = 16 * 1024 * 1024        # one ranged GET
SCAN_BLOCK = 1024 * 1024              # newline search granularity
MAX_ATTEMPTS = 8
FAULT_AFTER_WRITE = "chunk.after_write"

Fetcher = Callable[[Store, str], Mapping[str, Any]]    # ctr.ingest.put: {"status", "key", "bytes"}


# --- the cursor ------------------------------------------------------------------------

class _State(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)


class Source(_State):
    """The raw object being consumed: `read_key` is what is read (the transcoded plain
    object for a .gz), `etag` pins its content, `offset` is the next unread byte."""

    raw_key: str
    read_key: str
    etag: str
    size: int
    offset: int = 0
    lines: int = 0
    first_chunk: int


class DoneSource(_State):
    """A consumed raw object: chunks [first_chunk, end_chunk) came from it."""

    raw_key: str
    lines: int
    bytes: int
    first_chunk: int
    end_chunk: int


class Quarantined(_State):
    """A raw object set aside (module docs): why, when, and what had been cut from it
    before (`lines`/`bytes` in chunks [first_chunk, end_chunk); 0 for a .gz whose
    transcode failed)."""

    raw_key: str
    reason: str
    at: str
    size: int
    lines: int = 0
    bytes: int = 0
    first_chunk: int
    end_chunk: int


class Cursor(_State):
    """`state/chunk_cursor.json`: where the next chunk starts, and totals so far.

    Every change of the cursor is one of the methods below, each returning a new cursor;
    `save` writes it with If-Match on the ETag it was read with.
    """

    format: int = 1
    next_chunk: int = 0
    lines: int = 0
    bytes: int = 0
    source: Source | None = None
    done: tuple[DoneSource, ...] = ()
    bytes_per_line: float = INITIAL_BYTES_PER_LINE
    updated_at: str | None = None
    quarantined: tuple[Quarantined, ...] = ()

    def settled_keys(self) -> set[str]:
        """Raw objects not to be selected again: consumed or quarantined."""
        return {d.raw_key for d in self.done} | {q.raw_key for q in self.quarantined}

    def quarantine(self, raw_key: str, reason: str, size: int) -> Cursor:
        """Set `raw_key` aside; if it is the current source, what was cut from it stays
        accounted to it (module docs) and the cursor moves on."""
        source = self.source if self.source and self.source.raw_key == raw_key else None
        record = Quarantined(
            raw_key=raw_key, reason=reason, at=iso_now(), size=size,
            lines=source.lines if source else 0, bytes=source.offset if source else 0,
            first_chunk=source.first_chunk if source else self.next_chunk,
            end_chunk=self.next_chunk)
        update: dict[str, Any] = {"quarantined": (*self.quarantined, record)}
        if source is not None:
            update["source"] = None
        return self.model_copy(update=update)

    def needs_source(self) -> bool:
        """No raw object is being consumed, or the current one has no bytes left."""
        return self.source is None or self.source.offset >= self.source.size

    def start(self, source: Source) -> Cursor:
        return self.model_copy(update={"source": source})

    def finish_source(self) -> Cursor:
        """The current raw object is consumed: record it in `done`."""
        assert self.source is not None
        done = DoneSource(raw_key=self.source.raw_key, lines=self.source.lines,
                          bytes=self.source.size, first_chunk=self.source.first_chunk,
                          end_chunk=self.next_chunk)
        return self.model_copy(update={"source": None, "done": (*self.done, done)})

    def advance(self, length: int, lines: int, chunk_lines: int) -> Cursor:
        """Past one chunk of `length` bytes and `lines` lines, cut from the current source
        (finishing it when that was its end)."""
        assert self.source is not None
        source = self.source.model_copy(update={"offset": self.source.offset + length,
                                                "lines": self.source.lines + lines})
        advanced = self.model_copy(update={
            "next_chunk": self.next_chunk + 1, "lines": self.lines + lines,
            "bytes": self.bytes + length, "source": source,
            # a full chunk is a good sample of the line length; a short tail is not
            "bytes_per_line": length / lines if lines == chunk_lines else self.bytes_per_line,
        })
        return advanced.finish_source() if source.offset >= source.size else advanced

    def save(self, store: Store, etag: str | None) -> str:
        """Write the cursor if it is still the one read with `etag`; its new ETag.
        ConflictError when another run moved it first."""
        stamped = self.model_copy(update={"updated_at": iso_now()})
        return store.put_json_if_match(CURSOR_KEY, stamped.model_dump(mode="json"), etag)


def load_cursor(store: Store) -> tuple[Cursor, str | None]:
    """(the cursor, its ETag or None when no cursor exists yet)."""
    found = store.get_json(CURSOR_KEY)
    if found is None:
        return Cursor(), None
    doc, etag = found
    return Cursor.model_validate(doc), etag


# --- reading lines from an offset ----------------------------------------------------

def _get_span(store: Store, key: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of `key`, with parallel ranged GETs for large spans."""
    if end <= start:
        return b""
    bounds = [(s, min(s + PIECE_BYTES, end)) for s in range(start, end, PIECE_BYTES)]
    if len(bounds) == 1:
        return store.get_range(key, start, end - 1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        parts = pool.map(lambda b: store.get_range(key, b[0], b[1] - 1), bounds)
        return b"".join(parts)


def _nth_newline(buf: bytes, start: int, n: int) -> tuple[int, int]:
    """Scan `buf[start:]` for newlines: (index just past the n-th one, n) if there are
    that many, else (len(buf), number found). One memchr-speed pass."""
    found = 0
    view = memoryview(buf)
    for block_start in range(start, len(buf), SCAN_BLOCK):
        block_end = min(block_start + SCAN_BLOCK, len(buf))
        count = buf.count(b"\n", block_start, block_end)
        if found + count >= n:
            block = np.frombuffer(view[block_start:block_end], dtype=np.uint8)
            position = np.flatnonzero(block == 10)[n - found - 1]
            return block_start + int(position) + 1, n
        found += count
    return len(buf), found


def read_lines(store: Store, key: str, offset: int, size: int, n_lines: int,
               bytes_per_line: float) -> tuple[bytes, int]:
    """The next `n_lines` lines of `key` from byte `offset` (fewer at the end of the
    object) and how many lines that is. Reads about n_lines x bytes_per_line bytes,
    more only if the lines turn out longer."""
    buf = b""
    lines = 0
    position = offset
    want = int(n_lines * bytes_per_line * 1.05) + 4096
    while True:
        end = min(size, position + want)
        scanned = len(buf)
        buf += _get_span(store, key, position, end)
        position = end
        cut, found = _nth_newline(buf, scanned, n_lines - lines)
        lines += found
        if lines == n_lines:
            return buf[:cut], lines
        if position >= size:
            if buf and not buf.endswith(b"\n"):    # a last line without '\n'
                lines += 1
            return buf, lines
        average = len(buf) / max(lines, 1)
        want = int((n_lines - lines) * average * 1.1) + SCAN_BLOCK


# --- sources ---------------------------------------------------------------------------

def _transcode(store: Store, raw_key: str, part_size: int = ingest.DEFAULT_PART_SIZE) -> str:
    """Stream raw/<x>.gz once into a plain object; returns its key (see module docs)."""
    plain_key = DECOMPRESSED_PREFIX + raw_key.removesuffix(".gz")
    if store.head(plain_key) is not None:
        return plain_key
    try:
        with ingest.ObjectWriter(store, plain_key, part_size=part_size) as writer:
            # ranged GETs, not one stream of the whole object (Store.stream says why)
            for block in ingest.gunzip_chunks(store.stream(raw_key)):
                writer.write(block)
            writer.close()          # False if a concurrent run finished first: same bytes
    except DataError as err:        # a corrupt or truncated .gz: nothing was written
        raise DataError(f"{raw_key}: {err.message}; replace or remove the object",
                        key=raw_key) from err
    return plain_key


class _Selected(NamedTuple):
    """The next raw object to consume (None when all are done), and what was done on
    the way, for the result."""

    source: Source | None
    downloaded: Downloaded | None = None
    transcoded: Transcoded | None = None
    quarantine: tuple[tuple[str, str, int], ...] = ()    # (raw key, reason, size)


def _select_source(store: Store, cursor: Cursor, source_url: str | None,
                   fetch: Fetcher) -> _Selected:
    downloaded = None
    done = cursor.settled_keys()
    keys = [k for k in store.list_keys(layout.RAW_PREFIX) if not k.endswith("/")]
    if not keys and source_url:
        started = time.perf_counter()
        fetched = fetch(store, source_url)
        downloaded = Downloaded.model_validate(
            {**fetched, "seconds": round(time.perf_counter() - started, 3)})
        keys = [k for k in store.list_keys(layout.RAW_PREFIX) if not k.endswith("/")]
    pending = sorted(k for k in keys if k not in done)
    unusable: list[tuple[str, str, int]] = []
    for raw_key in pending:
        read_key = raw_key
        transcoded = None
        if raw_key.endswith(".gz"):
            started = time.perf_counter()
            try:
                read_key = _transcode(store, raw_key)
            except DataError as err:           # corrupt or truncated: set it aside
                head = store.head(raw_key)
                unusable.append((raw_key, err.message,
                                 int(head["ContentLength"]) if head else 0))
                continue
            transcoded = Transcoded(from_key=raw_key, to=read_key,
                                    seconds=round(time.perf_counter() - started, 3))
        head = store.head(read_key)
        if head is None:
            raise ConflictError(f"{read_key} vanished while selecting it", key=read_key)
        source = Source(raw_key=raw_key, read_key=read_key, etag=head["ETag"],
                        size=int(head["ContentLength"]), first_chunk=cursor.next_chunk)
        return _Selected(source, downloaded, transcoded, tuple(unusable))
    return _Selected(None, downloaded, quarantine=tuple(unusable))


# --- one run ---------------------------------------------------------------------------

def _adopt_existing(store: Store, key: str, source: Source, ours: bytes) -> bytes:
    """The chunk another attempt already wrote under `key`, checked against the source."""
    existing = store.get(key).body
    if existing != ours:
        # Cut with another chunk size: it must still be the source bytes at this offset.
        start = source.offset
        expected = (ours[:len(existing)] if len(existing) <= len(ours)
                    else _get_span(store, source.read_key, start, start + len(existing)))
        at_line_end = existing.endswith(b"\n") or start + len(existing) == source.size
        if existing != expected or not at_line_end:
            raise DataError(f"{key} exists but does not match {source.read_key} at byte "
                            f"{start}; the raw object or the cursor was changed by hand",
                            key=key)
    return existing


class Prepared(NamedTuple):
    """The cursor (with its ETag) standing on a source that has bytes left, checked
    unchanged, and what was done on the way to it."""

    cursor: Cursor
    etag: str | None
    selected: _Selected

    @property
    def source(self) -> Source:
        assert self.cursor.source is not None
        return self.cursor.source


def prepare(store: Store, source_url: str | None = None,
            fetch: Fetcher = ingest.put) -> Prepared | ChunkExhausted:
    """Bring the cursor onto the next source with bytes left (selecting, transcoding,
    quarantining as needed, module docs), or `ChunkExhausted` when nothing is left.
    Shared by the one-chunk cut and the backfill planner (ctr.backfill)."""
    cursor, etag = load_cursor(store)
    selected = _Selected(None)
    changed = False
    while cursor.needs_source():
        if cursor.source is not None:               # an empty object: nothing to cut
            cursor, changed = cursor.finish_source(), True
        selected = _select_source(store, cursor, source_url, fetch)
        for raw_key, reason, size in selected.quarantine:
            cursor, changed = cursor.quarantine(raw_key, reason, size), True
        if selected.source is None:
            if changed:
                cursor.save(store, etag)
            return ChunkExhausted(next_chunk=cursor.next_chunk, lines_total=cursor.lines,
                                  bytes_total=cursor.bytes, sources_done=len(cursor.done),
                                  downloaded=selected.downloaded,
                                  quarantined=_notes(selected.quarantine))
        cursor = cursor.start(selected.source)
        etag = cursor.save(store, etag)
        changed = False

    source = cursor.source
    assert source is not None
    head = store.head(source.read_key)
    if head is None or head["ETag"] != source.etag:
        # Raw objects must be immutable: set this one aside with what was cut from it,
        # and go on with the next source (the conditional save makes it once).
        what = "vanished" if head is None else "changed"
        reason = (f"{source.read_key} {what} under the chunk cursor after "
                  f"{source.lines} lines ({source.offset} bytes) were cut; raw objects "
                  "must be immutable")
        cursor.quarantine(source.raw_key, reason, source.size).save(store, etag)
        return prepare(store, source_url, fetch)
    return Prepared(cursor, etag, selected)


def _cut_once(store: Store, chunk_lines: int, source_url: str | None,
              fetch: Fetcher) -> ChunkResult:
    started = time.perf_counter()
    prepared = prepare(store, source_url, fetch)
    if isinstance(prepared, ChunkExhausted):
        return prepared
    cursor, etag, selected = prepared
    source = prepared.source
    index = cursor.next_chunk
    key = layout.chunk_key(index)
    data, lines = read_lines(store, source.read_key, source.offset, source.size,
                             chunk_lines, cursor.bytes_per_line)
    reused = store.put_if_absent(key, data, "text/plain") is None
    if reused:
        data = _adopt_existing(store, key, source, data)
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    faults.inject(FAULT_AFTER_WRITE)

    advanced = cursor.advance(len(data), lines, chunk_lines)
    advanced.save(store, etag)
    new_offset = source.offset + len(data)
    seconds = time.perf_counter() - started
    return ChunkCut(chunk_index=index, key=key, lines=lines, bytes=len(data),
                    seconds=round(seconds, 3),
                    bytes_per_second=round(len(data) / seconds) if seconds else None,
                    reused_existing_chunk=reused, source_finished=new_offset >= source.size,
                    next_chunk=index + 1, lines_total=advanced.lines,
                    cursor=ChunkPosition(raw_key=source.raw_key, read_key=source.read_key,
                                         offset=new_offset, size=source.size),
                    downloaded=selected.downloaded, transcoded=selected.transcoded,
                    quarantined=_notes(selected.quarantine))


def _notes(quarantine: tuple[tuple[str, str, int], ...]) -> list[QuarantineNote] | None:
    """The sources this run set aside, for its result (absent when none)."""
    return [QuarantineNote(raw_key=k, reason=r) for k, r, _ in quarantine] or None


def cut_chunk(store: Store, chunk_lines: int = DEFAULT_CHUNK_LINES, *,
              source_url: str | None = None, fetch: Fetcher = ingest.put,
              max_attempts: int = MAX_ATTEMPTS) -> ChunkResult:
    """Cut the next `chunk_lines` lines of raw/ into the next chunk (module docstring):
    `ChunkCut`, or `ChunkExhausted` when every raw object is consumed. A lost race on
    the cursor is retried from a fresh read up to `max_attempts` times, then raised as
    ConflictError (the state machine retries that).
    """
    if chunk_lines < 1:
        raise ValueError("chunk_lines must be >= 1")
    for attempt in range(max_attempts):
        try:
            return _cut_once(store, chunk_lines, source_url, fetch)
        except ConflictError:
            if attempt == max_attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
