"""413 for request bodies over a size limit, before anything parses them.

Lambda itself refuses payloads over 6 MB, but the local emulator and uvicorn do not:
without this middleware a local run would happily parse (and predict) bodies the
deployed API can never receive, so the same request would behave differently.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctr.serving.errors import error_body


class BodyLimit:
    """Answer 413 to a request body over `max_bytes` (ASGI middleware)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        msg = f"request body is larger than {self.max_bytes:,} bytes; send fewer rows"
        return JSONResponse(error_body("PayloadTooLarge", msg, [{"loc": ["body"], "msg": msg}]),
                            status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        # No (honest) Content-Length: read the whole body here, counting, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
