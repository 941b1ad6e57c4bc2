"""Ingestion: copy a local file, an S3 object or an HTTP(S) download into `raw/`.

Sources are streamed, never held in memory: bytes go through `ObjectWriter`, which sends
one conditional PUT when everything fits in one part and otherwise a multipart upload
(parts sent by a few threads, completed with If-None-Match so an existing object is
never replaced). Raw objects are immutable: the chunker's byte cursor points into them,
so `put` refuses to overwrite a different object under the same key.

Gzipped input is stored as it came (`raw/` keeps what was ingested) unless
`decompress=True`; `gunzip_chunks` is shared with the chunker, which turns a .gz source
into a plain object once (see ctr.chunking).
"""

from __future__ import annotations

import contextlib
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from ctr import layout
from ctr.errors import DataError, ValidationError
from ctr.storage import Store

MIN_PART_SIZE = 5 * 1024 * 1024          # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 32 * 1024 * 1024
READ_SIZE = 4 * 1024 * 1024

Progress = Callable[[int], object]


class ObjectWriter:
    """A write-only stream into one new S3 object (see the module docstring).

    `close()` returns True if this writer created the object, False if an object already
    existed under the key (nothing is replaced). On an exception inside `with`, a
    started multipart upload is aborted.
    """

    def __init__(self, store: Store, key: str, *, part_size: int = DEFAULT_PART_SIZE,
                 concurrency: int = 4, content_type: str = "application/octet-stream") -> None:
        self.store, self.key = store, key
        self.part_size = part_size
        self.content_type = content_type
        self.bytes_written = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool = ThreadPoolExecutor(max_workers=concurrency)
        self._max_in_flight = concurrency * 2

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.bytes_written += len(data)
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[:self.part_size])
            del self._buffer[:self.part_size]
            self._send_part(part)

    def _send_part(self, part: bytes) -> None:
        if self._upload_id is None:
            resp = self.store.s3.create_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                         ContentType=self.content_type)
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        self._parts.append(self._pool.submit(self._upload_part, number, part))
        in_flight = [f for f in self._parts if not f.done()]
        if len(in_flight) >= self._max_in_flight:   # bound memory: wait for the oldest
            in_flight[0].result()

    def _upload_part(self, number: int, part: bytes) -> dict[str, Any]:
        resp = self.store.s3.upload_part(Bucket=self.store.bucket, Key=self.key,
                                         UploadId=self._upload_id, PartNumber=number, Body=part)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def close(self) -> bool:
        try:
            if self._upload_id is None:
                return self.store.put_if_absent(self.key, bytes(self._buffer),
                                                self.content_type) is not None
            if self._buffer or not self._parts:
                self._send_part(bytes(self._buffer))
            parts = [f.result() for f in self._parts]
            try:
                self.store.s3.complete_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts}, IfNoneMatch="*")
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in {
                        "PreconditionFailed", "412", "ConditionalRequestConflict"}:
                    self.abort()
                    return False
                raise
            self._upload_id = None
            return True
        finally:
            self._buffer = bytearray()
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        if self._upload_id is not None:
            self.store.s3.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key,
                                                 UploadId=self._upload_id)
            self._upload_id = None

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.abort()


def gunzip_chunks(chunks: Iterable[bytes], max_out: int = 16 * 1024 * 1024) -> Iterator[bytes]:
    """Decompress a gzip stream given as byte chunks (multi-member files included),
    yielding at most `max_out` bytes at a time so a tiny, highly compressed input cannot
    blow up memory. A corrupt or truncated stream is a DataError (zlib alone would
    raise its own error, or silently stop at the truncation)."""
    decomp = zlib.decompressobj(wbits=31)
    in_member = False                         # input fed to a member that has not ended
    out_bytes = 0
    try:
        for data in chunks:
            while data:
                in_member = True
                out = decomp.decompress(data, max_out)
                if out:
                    out_bytes += len(out)
                    yield out
                data = decomp.unconsumed_tail
                if decomp.eof:                    # next gzip member, if any
                    data = decomp.unused_data + data
                    decomp = zlib.decompressobj(wbits=31)
                    in_member = False
        tail = decomp.flush()
    except zlib.error as err:
        raise DataError(f"not a valid gzip stream after {out_bytes} decompressed bytes: "
                        f"{err}") from err
    if tail:
        yield tail
    if in_member and not decomp.eof:
        raise DataError(f"truncated gzip stream: it ends inside a member, after "
                        f"{out_bytes + len(tail)} decompressed bytes")


def _read_blocks(stream: IO[bytes] | Any, progress: Progress | None = None,
                 size: int = READ_SIZE) -> Iterator[bytes]:
    while block := stream.read(size):
        if progress:
            progress(len(block))
        yield block


def open_source(store: Store, uri: str) -> tuple[Any, int | None, str, str]:
    """(binary stream, size or None, source name, file name) for a path, s3:// or http(s)://.

    The source name becomes the `raw/<source>/` folder: the bucket for s3://, the host
    for URLs, "local" for files.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "s3":
        resp = store.s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        return resp["Body"], resp.get("ContentLength"), parsed.netloc, Path(parsed.path).name
    if parsed.scheme in {"http", "https"}:
        # Only http(s) reaches here (scheme checked above), never file: or custom schemes.
        request = urllib.request.Request(uri, headers={"User-Agent": "ctr-pipeline"})  # noqa: S310
        resp = urllib.request.urlopen(request, timeout=60)  # noqa: S310  # nosec B310
        length = resp.headers.get("Content-Length")
        return resp, int(length) if length else None, parsed.netloc, Path(parsed.path).name
    if parsed.scheme not in {"", "file"}:
        raise ValidationError(f"unsupported source {uri!r}: use a path, s3:// or https://")
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    if not path.is_file():
        raise ValidationError(f"{path} is not a file")
    return path.open("rb"), path.stat().st_size, "local", path.name


def raw_key_for(source_name: str, file_name: str) -> str:
    return f"{layout.RAW_PREFIX}{source_name}/{file_name}"


def put(store: Store, uri: str, *, source_name: str | None = None, decompress: bool = False,
        part_size: int = DEFAULT_PART_SIZE, progress: bool = False) -> dict[str, Any]:
    """Stream `uri` into raw/<source>/<file name> (see the module docstring), with a
    progress bar over the source bytes when `progress` is set.

    Returns {"status": "uploaded"|"exists", "key", "bytes"}. An existing object of the
    same size counts as already ingested; one of a different size is a DataError.
    """
    stream, size, default_source, file_name = open_source(store, uri)
    if decompress:
        file_name = file_name.removesuffix(".gz")
    key = raw_key_for(source_name or default_source, file_name)
    try:
        existing = store.head(key)
        if existing is not None:
            if decompress or size is None or existing.get("ContentLength") == size:
                return {"status": "exists", "key": key, "bytes": existing.get("ContentLength")}
            raise DataError(f"s3://{store.bucket}/{key} exists with a different size; raw "
                                "objects are immutable (pick another --source name)", key=key)
        with _progress_bar(progress, size, key) as bar, \
                ObjectWriter(store, key, part_size=part_size) as writer:
            blocks = _read_blocks(stream, bar.update if bar else None)
            for block in gunzip_chunks(blocks) if decompress else blocks:
                writer.write(block)
            created = writer.close()
    finally:
        stream.close()
    return {"status": "uploaded" if created else "exists", "key": key,
            "bytes": writer.bytes_written}


def _progress_bar(enabled: bool, total: int | None, key: str) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm  # operator-side only: Lambda code paths never ask for a bar

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=key)
