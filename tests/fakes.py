"""In-memory fakes for unit tests (no sockets). FakeS3 implements the subset of the
boto3 S3 client that `ctr.storage.Store` uses, including conditional writes."""

from __future__ import annotations

import hashlib
import io
import threading
from typing import Any

from botocore.exceptions import ClientError


def _err(code: str, op: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class _Paginator:
    def __init__(self, s3: FakeS3) -> None:
        self.s3 = s3

    def paginate(self, Bucket: str, Prefix: str = "", **_: Any):
        keys = sorted(k for k in self.s3.objects if k.startswith(Prefix))
        for i in range(0, max(len(keys), 1), 1000):
            page = keys[i:i + 1000]
            yield {"Contents": [{"Key": k, "Size": len(self.s3.objects[k][0]),
                                 "ETag": self.s3.objects[k][1]} for k in page]} if page else {}


class FakeS3:
    """One-bucket S3 fake. `fail_next` lets a test inject errors into the next calls."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()
        self.fail_next: list[tuple[str, str]] = []   # (operation, error code)
        self.calls: list[str] = []

    def _maybe_fail(self, op: str) -> None:
        self.calls.append(op)
        if self.fail_next and self.fail_next[0][0] == op:
            _, code = self.fail_next.pop(0)
            raise _err(code, op, 503)

    def put_object(self, Bucket: str, Key: str, Body: Any = b"", IfNoneMatch: str | None = None,
                   IfMatch: str | None = None, **_: Any) -> dict[str, Any]:
        self._maybe_fail("put_object")
        data = Body.read() if hasattr(Body, "read") else bytes(Body)
        with self.lock:
            if IfNoneMatch == "*" and Key in self.objects:
                raise _err("PreconditionFailed", "PutObject", 412)
            if IfMatch is not None and (Key not in self.objects or self.objects[Key][1] != IfMatch):
                raise _err("PreconditionFailed", "PutObject", 412)
            etag = '"' + hashlib.md5(data + str(len(self.calls)).encode()).hexdigest() + '"'  # noqa: S324
            self.objects[Key] = (data, etag)
        return {"ETag": etag}

    def get_object(self, Bucket: str, Key: str, Range: str | None = None, **_: Any):
        self._maybe_fail("get_object")
        if Key not in self.objects:
            raise _err("NoSuchKey", "GetObject", 404)
        data, etag = self.objects[Key]
        if Range:
            start_s, end_s = Range.removeprefix("bytes=").split("-")
            start = int(start_s)
            end = int(end_s) if end_s else len(data) - 1
            data = data[start:end + 1]
        return {"Body": io.BytesIO(data), "ETag": etag, "ContentLength": len(data)}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self._maybe_fail("head_object")
        if Key not in self.objects:
            raise _err("404", "HeadObject", 404)
        data, etag = self.objects[Key]
        return {"ETag": etag, "ContentLength": len(data)}

    def delete_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self.objects.pop(Key, None)
        return {}

    def get_paginator(self, name: str) -> _Paginator:
        assert name == "list_objects_v2"
        return _Paginator(self)

    def list_objects_v2(self, Bucket: str, Prefix: str = "", **_: Any) -> dict[str, Any]:
        pages = list(_Paginator(self).paginate(Bucket=Bucket, Prefix=Prefix))
        contents = [c for p in pages for c in p.get("Contents", [])]
        return {"Contents": contents, "KeyCount": len(contents)}
