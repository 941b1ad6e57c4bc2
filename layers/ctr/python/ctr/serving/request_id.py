"""X-Request-Id on every response, and the same id for the prediction log.

The id is, in this order: the caller's `X-Request-Id` when it is a plausible id (1-128
characters of letters, digits and `._:-`; anything else is ignored, never echoed), API
Gateway's request id (`requestContext.requestId` of the event Mangum put in the ASGI
scope), the Lambda invocation's request id, else a new uuid4. A pure ASGI middleware
(a few microseconds), so it also covers answers produced before routing (413, 404).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def choose(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID.fullmatch(text):
                return text
            break
    event: Any = scope.get("aws.event")
    if isinstance(event, dict):
        gateway_id = (event.get("requestContext") or {}).get("requestId")
        if isinstance(gateway_id, str) and _VALID.fullmatch(gateway_id):
            return gateway_id
    context: Any = scope.get("aws.context")
    lambda_id = getattr(context, "aws_request_id", None)
    if isinstance(lambda_id, str) and _VALID.fullmatch(lambda_id):
        return lambda_id
    return str(uuid.uuid4())


class RequestId:
    """Puts the chosen id in `scope["state"]["request_id"]` and the response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


async def get_request_id(request: Request) -> str:
    """The id the middleware chose (a new one if the app runs without it)."""
    return str(getattr(request.state, "request_id", None) or uuid.uuid4())
