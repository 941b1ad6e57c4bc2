"""An in-memory, thread-safe S3 client for the unit tests, the benchmarks and offline
runs (no sockets).

It implements the subset of the boto3 S3 client that `ctr.storage.Store` and the data
plane use -- conditional PUTs (`IfNoneMatch="*"`, `IfMatch`), ranged GETs, listing, and
multipart uploads completed with `IfNoneMatch` -- so `ctr data bench` can measure the
chunk and aggregate code itself, without network or emulator noise, and a test can
check what the code wrote. Tests also see which operations ran (`calls`) and can make
the next ones fail (`fail_next`). It lives in ctr_infra, not tests/, because the
benchmarks ship with the operator tooling, which must not import tests.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import threading
from typing import Any

from botocore.exceptions import ClientError


def _error(code: str, operation: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class _ListPaginator:
    def __init__(self, s3: MemoryS3) -> None:
        self.s3 = s3

    def paginate(self, Bucket: str, Prefix: str = "", **_: Any) -> Any:
        with self.s3.lock:
            keys = sorted(k for k in self.s3.objects if k.startswith(Prefix))
            rows = [{"Key": k, "Size": len(self.s3.objects[k][0]), "ETag": self.s3.objects[k][1]}
                    for k in keys]
        for i in range(0, len(rows), 1000):
            yield {"Contents": rows[i:i + 1000], "KeyCount": len(rows[i:i + 1000])}
        if not rows:
            yield {"KeyCount": 0}


class MemoryS3:
    """One bucket's objects in a dict; every call is atomic under one lock. The bucket
    name of a call is ignored."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, tuple[str, dict[int, bytes]]] = {}
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self.calls: list[str] = []                   # operation names, in call order
        # (operation, error code): the next call of that operation raises that error
        # (HTTP 503), if it is the first entry; for retry and failure tests.
        self.fail_next: list[tuple[str, str]] = []

    def _call(self, op: str) -> None:
        self.calls.append(op)
        if self.fail_next and self.fail_next[0][0] == op:
            _, code = self.fail_next.pop(0)
            raise _error(code, op, 503)

    @staticmethod
    def _etag(data: bytes, salt: int) -> str:
        return '"' + hashlib.md5(data[:4096] + salt.to_bytes(8, "little"),
                                 usedforsecurity=False).hexdigest() + '"'

    def _store(self, key: str, data: bytes, if_none_match: str | None,
               if_match: str | None, op: str) -> str:
        with self.lock:
            if if_none_match == "*" and key in self.objects:
                raise _error("PreconditionFailed", op, 412)
            if if_match is not None and (key not in self.objects
                                         or self.objects[key][1] != if_match):
                raise _error("PreconditionFailed", op, 412)
            etag = self._etag(data, next(self._ids))
            self.objects[key] = (data, etag)
            return etag

    def put_object(self, Bucket: str, Key: str, Body: Any = b"",
                   IfNoneMatch: str | None = None, IfMatch: str | None = None,
                   **_: Any) -> dict[str, Any]:
        self._call("put_object")
        data = Body.read() if hasattr(Body, "read") else bytes(Body)
        return {"ETag": self._store(Key, data, IfNoneMatch, IfMatch, "PutObject")}

    def get_object(self, Bucket: str, Key: str, Range: str | None = None,
                   IfMatch: str | None = None, **_: Any) -> dict[str, Any]:
        self._call("get_object")
        with self.lock:
            if Key not in self.objects:
                raise _error("NoSuchKey", "GetObject", 404)
            data, etag = self.objects[Key]
        if IfMatch is not None and IfMatch != etag:
            raise _error("PreconditionFailed", "GetObject", 412)
        if Range:
            start_s, end_s = Range.removeprefix("bytes=").split("-")
            start, end = int(start_s), int(end_s) if end_s else len(data) - 1
            data = data[start:end + 1]
        return {"Body": io.BytesIO(data), "ETag": etag, "ContentLength": len(data)}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("head_object")
        with self.lock:
            if Key not in self.objects:
                raise _error("404", "HeadObject", 404)
            data, etag = self.objects[Key]
        return {"ETag": etag, "ContentLength": len(data)}

    def delete_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("delete_object")
        with self.lock:
            self.objects.pop(Key, None)
        return {}

    def get_paginator(self, name: str) -> _ListPaginator:
        if name != "list_objects_v2":
            raise NotImplementedError(name)
        return _ListPaginator(self)

    def list_objects_v2(self, Bucket: str, Prefix: str = "", **_: Any) -> dict[str, Any]:
        self._call("list_objects_v2")
        contents = [row for page in _ListPaginator(self).paginate(Bucket, Prefix)
                    for row in page.get("Contents", [])]
        return {"Contents": contents, "KeyCount": len(contents)}

    # --- multipart -------------------------------------------------------------------
    def create_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._call("create_multipart_upload")
        upload_id = f"upload-{next(self._ids)}"
        with self.lock:
            self.uploads[upload_id] = (Key, {})
        return {"UploadId": upload_id, "Key": Key}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                    Body: Any, **_: Any) -> dict[str, Any]:
        self._call("upload_part")
        data = Body.read() if hasattr(Body, "read") else bytes(Body)
        with self.lock:
            if UploadId not in self.uploads:
                raise _error("NoSuchUpload", "UploadPart", 404)
            self.uploads[UploadId][1][PartNumber] = data
        return {"ETag": self._etag(data, PartNumber)}

    def complete_multipart_upload(self, Bucket: str, Key: str, UploadId: str,
                                  MultipartUpload: dict[str, Any],
                                  IfNoneMatch: str | None = None,
                                  **_: Any) -> dict[str, Any]:
        self._call("complete_multipart_upload")
        with self.lock:
            if UploadId not in self.uploads:
                raise _error("NoSuchUpload", "CompleteMultipartUpload", 404)
            parts = self.uploads[UploadId][1]
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        data = b"".join(parts[n] for n in numbers)
        etag = self._store(Key, data, IfNoneMatch, None, "CompleteMultipartUpload")
        with self.lock:
            self.uploads.pop(UploadId, None)
        return {"ETag": etag, "Key": Key}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str,
                               **_: Any) -> dict[str, Any]:
        self._call("abort_multipart_upload")
        with self.lock:
            self.uploads.pop(UploadId, None)
        return {}
