"""Every error of the predict API becomes one JSON shape, here and nowhere else:

    {"error": "<class name>", "message": "<for a person>", "errors": [{"loc", "msg"}]}

* `ctr.errors.DomainError` subclasses carry their own status (NoModelError 503,
  ValidationError 422, NotFoundError 404, TransientError 503, ...).
* FastAPI/pydantic request validation -> 422 "ValidationError" with field locations;
  so is a body FastAPI cannot decode (invalid UTF-8, a 5,000-digit number: FastAPI
  says 400 without details) and a body sent without a JSON content type.
* Starlette HTTP errors (unknown path, wrong method) keep their status.
* Anything else is logged with its traceback and answered with a bare 500: a
  response never contains a stack trace or exception text the API did not write.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctr.errors import DomainError

log = logging.getLogger(__name__)

_VALUE_ERROR_PREFIXES = ("Value error, ", "Assertion failed, ")


def error_body(error: str, message: str, errors: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    return {"error": error, "message": message, "errors": errors or []}


def domain_error_response(err: DomainError) -> JSONResponse:
    errors = err.details.get("errors")
    items = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", ""))}
             for e in errors] if isinstance(errors, list) else []
    headers = {"Retry-After": "5"} if err.http_status == 503 else None
    return JSONResponse(error_body(type(err).__name__, err.message, items),
                        status_code=err.http_status, headers=headers)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def _pydantic_items(err: RequestValidationError, request: Request) -> list[dict[str, Any]]:
    items = []
    content_type = request.headers.get("content-type")
    for e in err.errors():
        msg = str(e.get("msg", "invalid"))
        for prefix in _VALUE_ERROR_PREFIXES:
            msg = msg.removeprefix(prefix)
        loc = list(e.get("loc", []))
        if loc == ["body"] and e.get("type") == "model_attributes_type" \
                and not _is_json(content_type):
            # FastAPI does not parse a body sent as text/plain, a form, or without type
            msg = ("must be a JSON object sent with Content-Type: application/json "
                   f"(got {content_type or 'no content type'!r})")
        items.append({"loc": loc, "msg": msg})
    return items


def _unreadable_body(cause: ValueError) -> JSONResponse:
    """FastAPI's 400 for a body json.loads raised on (not a JSONDecodeError, which is
    already a 422): the same 422 shape as every other bad body."""
    why = ("it is not valid UTF-8" if isinstance(cause, UnicodeDecodeError)
           else "a number in it has too many digits" if "digits" in str(cause)
           else "it is not valid JSON")
    msg = f"could not be read as JSON: {why}"
    return JSONResponse(error_body("ValidationError", f"invalid request body: {msg}",
                                   [{"loc": ["body"], "msg": msg}]), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping on `app` (call once, in the app factory)."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, err: DomainError) -> JSONResponse:
        if err.http_status >= 500:
            log.warning("%s: %s", type(err).__name__, err.message)
        return domain_error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        items = _pydantic_items(err, request)
        first = f"{'.'.join(map(str, items[0]['loc']))}: {items[0]['msg']}" if items else ""
        message = f"invalid request ({len(items)} problem{'s' * (len(items) != 1)}): {first}"
        return JSONResponse(error_body("ValidationError", message, items), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400 and isinstance(err.__cause__, ValueError):
            return _unreadable_body(err.__cause__)
        name = HTTPStatus(err.status_code).phrase.replace(" ", "")
        return JSONResponse(error_body(name, str(err.detail)), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    app.add_middleware(_LastResort)


class _LastResort:
    """Safety net for exceptions no handler above mapped. (Starlette's own handler for
    `Exception` re-raises after answering, so Mangum would log the error twice.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse(
                error_body("InternalError", "internal error; the details are in the logs"),
                status_code=500)
            await response(scope, receive, send)

