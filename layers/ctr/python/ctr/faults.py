"""Test-only fault injection. Inert unless the CTR_FAULTS environment variable is set
(the template never sets it; tests set it on a deployed function's configuration).

    CTR_FAULTS="chunk.after_write=crash*1,train.start=TransientError*2"

Each entry names an injection point (`point`), what happens there, and optionally how
many times (`*N`, default every time):

* `crash` exits the process as a killed Lambda would;
* `sleep:SECONDS` stalls there (longer than the function's timeout: a timed-out Lambda);
* any other word raises the ctr.errors class of that name, or a plain RuntimeError.

The point `s3.request` is special: every S3 request of a client made by
`ctr.storage.make_s3_client` passes it, and while it fires the request is answered
with an S3 error of the entry's action as code (`s3.request=SlowDown*6`: HTTP 503
SlowDown for the first six requests) before anything is sent, so botocore's own retries
and the code's error handling are what is exercised.

Counts are kept as files in CTR_FAULTS_DIR (default: <tmp>/ctr-faults), so they hold
across the processes of one function.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ctr import errors

S3_REQUEST = "s3.request"
S3_ERROR_STATUS = {"SlowDown": 503, "ServiceUnavailable": 503, "InternalError": 500,
                   "RequestTimeout": 400}


def _spec() -> dict[str, tuple[str, int | None]]:
    raw = os.environ.get("CTR_FAULTS", "").strip()
    out: dict[str, tuple[str, int | None]] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        point, _, action = item.partition("=")
        action, _, times = action.partition("*")
        out[point.strip()] = (action.strip() or "crash", int(times) if times else None)
    return out


def _take(point: str, times: int | None) -> bool:
    """True if this hit should fire (atomically counts hits across processes)."""
    if times is None:
        return True
    d = Path(os.environ.get("CTR_FAULTS_DIR", Path(tempfile.gettempdir()) / "ctr-faults"))
    d.mkdir(parents=True, exist_ok=True)
    for i in range(times):
        try:
            fd = os.open(d / f"{point}.{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return True
    return False


def _firing(point: str) -> str | None:
    """The action configured for `point` if it fires on this hit, else None."""
    if "CTR_FAULTS" not in os.environ:
        return None
    entry = _spec().get(point)
    if entry is None or not _take(point, entry[1]):
        return None
    return entry[0]


def inject(point: str) -> None:
    """Fire the fault configured for `point`, if any."""
    action = _firing(point)
    if action is None:
        return
    if action == "crash":
        os._exit(137)  # as if the sandbox was killed mid-flight
    if action.startswith("sleep:"):
        time.sleep(float(action.removeprefix("sleep:")))
        return
    cls = getattr(errors, action, None)
    if isinstance(cls, type) and issubclass(cls, errors.DomainError):
        raise cls(f"injected fault at {point}")
    raise RuntimeError(f"injected fault at {point}: {action}")


# --- S3 errors at the client -----------------------------------------------------------

class _Body:
    """The raw body botocore reads an HTTP response from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data

    def read(self, *_: Any) -> bytes:
        data, self.data = self.data, b""
        return data


def _s3_error_response(request: Any, **_: Any) -> Any:
    """botocore `before-send` handler: an S3 error response while `s3.request` fires,
    else None (the request goes out as usual)."""
    code = _firing(S3_REQUEST)
    if code is None:
        return None
    from botocore.awsrequest import AWSResponse

    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>"
            f"<Message>injected fault at {S3_REQUEST}</Message></Error>").encode()
    return AWSResponse(request.url, S3_ERROR_STATUS.get(code, 503),
                       {"Content-Type": "application/xml", "Content-Length": str(len(body))},
                       _Body(body))


def attach_s3_faults(client: Any) -> None:
    """Make `client` answer S3 errors while the `s3.request` fault fires (only when
    CTR_FAULTS names that point; otherwise the client is left untouched)."""
    if S3_REQUEST in _spec():
        client.meta.events.register("before-send.s3.*", _s3_error_response)
