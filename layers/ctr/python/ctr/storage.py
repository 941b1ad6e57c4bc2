"""S3 adapter: the only module that talks to S3 for domain code.

`Store` wraps a boto3 S3 client (LocalStack, AWS or a test fake with the same
methods) and one bucket. Every state change goes through `put_if_absent` or
`put_if_match` (S3 conditional writes), so concurrent or retried steps cannot
overwrite each other's work.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ctr import faults
from ctr.errors import ConflictError, NotFoundError, TransientError

# Store.stream: bytes per ranged GET, and tries per range whose body breaks off
STREAM_RANGE_BYTES = 64 * 1024 * 1024
STREAM_ATTEMPTS = 4
# A response body that ended before its bytes did (connection reset, short read, timeout)
_BROKEN_BODY = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError,
                BotoConnectionError)

_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                   "ServiceUnavailable", "InternalError", "503"}


def make_s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; `endpoint_url=None` lets boto3 use AWS_ENDPOINT_URL or AWS."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(retries={"max_attempts": 8, "mode": "adaptive"},
                      s3={"addressing_style": "path"}),
    )
    faults.attach_s3_faults(client)  # test-only, inert unless CTR_FAULTS names s3.request
    return client


@dataclass(frozen=True)
class Versioned:
    body: bytes
    etag: str


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _throttling_is_transient() -> Iterator[None]:
    """Throttling that outlasts botocore's own retries becomes TransientError, which the
    state machine retries; every other S3 error stays what it is."""
    try:
        yield
    except ClientError as err:
        Store._raise_transient(err)
        raise


class Store:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    # --- reads -------------------------------------------------------------
    def get(self, key: str) -> Versioned:
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if _code(err) in {"NoSuchKey", "404", "NotFound"}:
                raise NotFoundError(f"s3://{self.bucket}/{key} does not exist", key=key) from err
            self._raise_transient(err)
            raise
        return Versioned(resp["Body"].read(), resp["ETag"])

    def get_range(self, key: str, start: int, end_inclusive: int) -> bytes:
        with _throttling_is_transient():
            resp = self.s3.get_object(Bucket=self.bucket, Key=key,
                                      Range=f"bytes={start}-{end_inclusive}")
            return bytes(resp["Body"].read())

    def stream(self, key: str, *, range_bytes: int = STREAM_RANGE_BYTES,
               attempts: int = STREAM_ATTEMPTS) -> Iterator[bytes]:
        """The whole object as blocks of at most `range_bytes`, one ranged GET each,
        all pinned to the ETag the object had at the start (If-Match: an object
        replaced meanwhile is a ConflictError, never a mix of two versions).

        Why not one GET: a single response stream of gigabytes is one connection that
        must not break for minutes -- LocalStack reset one 90 s into a 4.5 GB .gz, and
        S3 documents that long GETs can fail the same way. A range whose body breaks
        off is fetched again, up to `attempts` times, then it is a TransientError (the
        state machine retries the step)."""
        head = self.head(key)
        if head is None:
            raise NotFoundError(f"s3://{self.bucket}/{key} does not exist", key=key)
        size, etag = int(head["ContentLength"]), str(head["ETag"])
        position = 0
        while position < size:
            last = min(position + range_bytes, size) - 1
            yield self._range_pinned(key, position, last, etag, attempts)
            position = last + 1

    def _range_pinned(self, key: str, start: int, last: int, etag: str,
                      attempts: int) -> bytes:
        """Bytes [start, last] of the object with ETag `etag`, fetched again when the
        body breaks off or comes back short."""
        problem = ""
        for _ in range(attempts):
            try:
                with _throttling_is_transient():
                    resp = self.s3.get_object(Bucket=self.bucket, Key=key,
                                              Range=f"bytes={start}-{last}", IfMatch=etag)
                data = bytes(resp["Body"].read())
            except ClientError as err:
                if _code(err) in {"PreconditionFailed", "412"}:
                    raise ConflictError(f"s3://{self.bucket}/{key} changed while it was "
                                        "being read", key=key) from err
                raise
            except _BROKEN_BODY as err:
                problem = f"broke off: {err}"
                continue
            if len(data) == last - start + 1:
                return data
            problem = f"{len(data)} bytes came back"
        raise TransientError(f"s3://{self.bucket}/{key}: bytes {start}-{last} failed "
                             f"{attempts} times (last: {problem})", key=key)

    def get_json(self, key: str) -> tuple[dict[str, Any], str] | None:
        """(document, etag) or None when absent."""
        try:
            v = self.get(key)
        except NotFoundError:
            return None
        return json.loads(v.body), v.etag

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.s3.head_object(Bucket=self.bucket, Key=key))
        except ClientError as err:
            if _code(err) in {"NoSuchKey", "404", "NotFound"}:
                return None
            self._raise_transient(err)
            raise

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list_keys(self, prefix: str) -> Iterator[str]:
        for obj in self.list_objects(prefix):
            yield obj["Key"]

    def list_objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        with _throttling_is_transient():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    # --- writes ------------------------------------------------------------
    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        """Unconditional write: only for immutable, deterministic objects."""
        with _throttling_is_transient():
            resp = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body,
                                      ContentType=content_type)
        return str(resp["ETag"])

    def put_if_absent(self, key: str, body: bytes,
                      content_type: str = "application/octet-stream") -> str | None:
        """Create `key` only if it does not exist. Returns the ETag, or None if it existed."""
        try:
            resp = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body,
                                      ContentType=content_type, IfNoneMatch="*")
        except ClientError as err:
            if _code(err) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return None
            self._raise_transient(err)
            raise
        return str(resp["ETag"])

    def put_if_match(self, key: str, body: bytes, etag: str | None,
                     content_type: str = "application/json") -> str:
        """Compare-and-swap: replace `key` only if its ETag is still `etag`
        (`etag=None` means: only if it does not exist yet). Raises ConflictError on a lost race."""
        kwargs: dict[str, Any] = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            resp = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body,
                                      ContentType=content_type, **kwargs)
        except ClientError as err:
            if _code(err) in {"PreconditionFailed", "412", "ConditionalRequestConflict",
                              "NoSuchKey"}:
                raise ConflictError(f"concurrent update of s3://{self.bucket}/{key}",
                                    key=key) from err
            self._raise_transient(err)
            raise
        return str(resp["ETag"])

    def put_json_if_match(self, key: str, doc: dict[str, Any], etag: str | None) -> str:
        return self.put_if_match(key, json.dumps(doc, sort_keys=True).encode(), etag)

    def delete(self, key: str) -> None:
        with _throttling_is_transient():
            self.s3.delete_object(Bucket=self.bucket, Key=key)

    @staticmethod
    def _raise_transient(err: ClientError) -> None:
        if _code(err) in _THROTTLE_CODES:
            raise TransientError(f"S3 is throttling or unavailable: {_code(err)}") from err
