"""The prediction log: served predictions, sampled per request, delivered to S3 through a
Kinesis Data Firehose delivery stream (`predictions/YYYY/MM/DD/HH/<stream>-...`, one JSON
`ctr.predlog.PredictionRecord` per line).

Off the request path. A request pays one random draw and, when sampled, one
`deque.append` of references it already holds (the request's table and probabilities,
the model block, `time.time()`); turning them into records, JSON and PutRecordBatch
calls is the job of one background thread that wakes every `flush_interval_s` or as
soon as `batch_records` rows wait. A failed or throttled batch is retried (only its
failed entries) `retries` times, then dropped and counted: logging never fails or
slows a prediction.

Loss bound. Records still in memory when the process ends are lost. On Lambda the
environment is frozen between invocations (the thread with it) and resumes delivery at
the next invocation; an environment that is reclaimed while frozen loses what it
buffered since its last flush: at most `flush_interval_s` of that environment's
sampled traffic, and never more than `max_buffered_rows`. `close()` (called on SIGTERM
by the predict handler, and at interpreter exit) flushes what it can within its timeout.
Rows arriving when `max_buffered_rows` are already waiting (delivery down) are dropped
and counted, so memory stays bounded.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ctr.predlog import PredictionRecord
from ctr.schema import FEATURE_COLUMNS

log = logging.getLogger(__name__)

# Firehose limits: PutRecordBatch takes at most 500 records and 4 MiB, a record at most
# 1,000 KiB. Lines are packed into records (billing rounds each record up to 5 KB).
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
RECORD_BYTES = 256 * 1024


@dataclass(frozen=True)
class Served:
    """What one sampled request leaves in the buffer (references, nothing copied)."""

    request_id: str
    at: float
    model: dict[str, Any]
    table: pa.Table
    probabilities: np.ndarray


@dataclass
class Counters:
    sampled_rows: int = 0
    sent_rows: int = 0
    dropped_rows: int = 0
    failed_batches: int = 0
    reported_drops: int = field(default=0, repr=False)


def to_records(served: Served) -> Iterator[PredictionRecord]:
    """The request's rows as PredictionRecords: raw values as text, '' = missing."""
    columns = [served.table.column(name).to_pylist() for name in FEATURE_COLUMNS]
    when = datetime.fromtimestamp(served.at, tz=UTC).isoformat(timespec="milliseconds")
    version, run_id = int(served.model["version"]), str(served.model["run_id"])
    for row, probability in enumerate(served.probabilities.tolist()):
        yield PredictionRecord(
            request_id=served.request_id, time=when, model_version=version, run_id=run_id,
            row=row, fields=["" if col[row] is None else str(col[row]) for col in columns],
            probability=float(probability))


def pack(lines: list[bytes], record_bytes: int = RECORD_BYTES) -> list[bytes]:
    """Newline-terminated lines joined into Firehose records of at most `record_bytes`
    (a longer line is a record of its own)."""
    records: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > record_bytes:
            records.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        records.append(b"".join(current))
    return records


def batches(records: list[bytes]) -> Iterator[list[bytes]]:
    """PutRecordBatch-sized groups: at most 500 records and 4 MiB each."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if batch and (len(batch) == MAX_BATCH_RECORDS or size + len(record) > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield batch


class PredictionLog:
    """Sampled, buffered, background delivery of served predictions (see the module)."""

    def __init__(self, client_factory: Callable[[], Any], stream_name: str,
                 sample_rate: float, *, flush_interval_s: float = 1.0,
                 batch_records: int = 500, max_buffered_rows: int = 100_000,
                 retries: int = 2, rng: Callable[[], float] = random.random) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample rate must be within [0, 1], got {sample_rate}")
        self.stream_name = stream_name
        self.sample_rate = sample_rate
        self.flush_interval_s = flush_interval_s
        self.batch_records = batch_records
        self.max_buffered_rows = max_buffered_rows
        self.retries = retries
        self.counters = Counters()
        self._client_factory = client_factory
        self._client: Any = None
        self._rng = rng
        self._queue: deque[Served] = deque()
        self._queued_rows = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()      # the queue's row count and the counters
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # ----------------------------------------------------------------- request path

    def sampled(self) -> bool:
        """Whether this request is logged (one draw per request: all its rows or none)."""
        rate = self.sample_rate
        return rate >= 1.0 or (rate > 0.0 and self._rng() < rate)

    def record(self, request_id: str, model: dict[str, Any], table: pa.Table,
               probabilities: np.ndarray) -> None:
        """Queue a served request's rows; never raises, never blocks on I/O."""
        try:
            if not self.sampled():
                return
            rows = len(probabilities)
            with self._lock:
                self.counters.sampled_rows += rows
                if self._queued_rows + rows > self.max_buffered_rows:
                    self.counters.dropped_rows += rows
                    return
                self._queue.append(Served(request_id, time.time(), model, table,
                                          probabilities))
                self._queued_rows += rows
            if self._thread is None:
                self._start()
            if self._queued_rows >= self.batch_records:
                self._wake.set()
        except Exception:  # a log must never fail a prediction
            self._count(dropped=len(probabilities))
            log.warning("prediction log: could not queue a request", exc_info=True)

    def take_new_drops(self) -> int:
        """Rows dropped since the last call (for a per-invocation metric)."""
        with self._lock:
            new = self.counters.dropped_rows - self.counters.reported_drops
            self.counters.reported_drops += new
        return new

    def _count(self, *, sent: int = 0, dropped: int = 0, failed_batches: int = 0) -> None:
        with self._lock:
            self.counters.sent_rows += sent
            self.counters.dropped_rows += dropped
            self.counters.failed_batches += failed_batches

    # ----------------------------------------------------------------- background

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="prediction-log",
                                            daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send everything queued now (the thread's job; tests and close() call it too)."""
        with self._send_lock:
            with self._lock:
                taken = list(self._queue)
                self._queue.clear()
                rows = sum(len(s.probabilities) for s in taken)
                self._queued_rows -= rows
            if not taken:
                return
            try:
                lines = [r.model_dump_json().encode() + b"\n"
                         for served in taken for r in to_records(served)]
            except Exception:
                self._count(dropped=rows)
                log.warning("prediction log: could not build records", exc_info=True)
                return
            for batch in batches(pack(lines)):
                self._send(batch, sum(r.count(b"\n") for r in batch))

    def _send(self, records: list[bytes], rows: int) -> None:
        pending = records
        for attempt in range(self.retries + 1):
            try:
                if self._client is None:
                    self._client = self._client_factory()
                answer = self._client.put_record_batch(
                    DeliveryStreamName=self.stream_name,
                    Records=[{"Data": data} for data in pending])
                entries = answer.get("RequestResponses", [])
                if not answer.get("FailedPutCount"):
                    failed = []
                elif len(entries) == len(pending):
                    failed = [data for data, entry in zip(pending, entries, strict=True)
                              if entry.get("ErrorCode")]
                else:                      # cannot tell which: send them all again
                    failed = pending
            except Exception as err:
                log.warning("prediction log: PutRecordBatch failed (attempt %d): %s",
                            attempt + 1, err)
                failed = pending
            if not failed:
                self._count(sent=rows)
                return
            sent = sum(r.count(b"\n") for r in pending) - sum(r.count(b"\n") for r in failed)
            self._count(sent=sent)
            rows -= sent
            pending = failed
            if attempt < self.retries:
                time.sleep(0.1 * 2 ** attempt)
        self._count(dropped=rows, failed_batches=1)
        log.warning("prediction log: dropped %d row(s) after %d attempts (dropped so far: "
                    "%d)", rows, self.retries + 1, self.counters.dropped_rows)

    def close(self, timeout_s: float = 0.4) -> None:
        """Stop the thread and send what is queued (within `timeout_s` for the thread)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._send_lock.acquire(timeout=timeout_s):
            self._send_lock.release()
            self.flush()
