"""Request bodies of POST /predict read faster than FastAPI's `json.loads`, with the same
outcome.

FastAPI reads a JSON body with `await request.json()` (Starlette: `json.loads`), which
for a 1,000-row predict request (600 KB, 39 values per row) is the largest single cost
of the request. Two readers take its place, each only where it gives what `json.loads`
plus the usual validation would give:

* `rows_body_table`: a large `{"rows": [...]}` body read by Arrow's JSON reader straight
  into the 39 typed columns (C++, no Python object per value), then proven valid by the
  same column-wise checks as `ctr.criteo.rows_to_table`'s fast path. Anything it is not
  sure of -- a value of another JSON type, a string integer, an unknown key, a second
  document, a null row -- makes it answer None, and the body is read as below.
* `parse_json`: pydantic-core's parser (Rust, already what pydantic uses) builds the same
  Python objects as `json.loads` in about half the CPU time. Anything it refuses goes to
  `json.loads`, so what is accepted and every error (FastAPI's "JSON decode error" at the
  position `json` reports) stay exactly as before.

Used as the predict router's `route_class` (FastAPI's documented way to customise the
request a route sees).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json
import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute

from ctr import criteo
from ctr.serving.schemas import ParsedRows

# Below this size a body is a few rows, for which Arrow's fixed cost (about 0.2 ms)
# buys nothing; 16 rows of 39 values are about 8 KB.
ROWS_BODY_MIN_BYTES = 8 * 1024
_ROWS_BODY_SCHEMA = pa.schema([pa.field("rows", pa.list_(pa.struct(list(criteo.FEATURE_SCHEMA))))])
# "error": a key outside the schema (a typo, "label") fails the read -> the usual path.
_ROWS_BODY_PARSE = pa_json.ParseOptions(explicit_schema=_ROWS_BODY_SCHEMA,
                                        unexpected_field_behavior="error",
                                        newlines_in_values=True)


def rows_body_table(body: bytes) -> pa.Table | None:
    """A `{"rows": [...]}` body as a `FEATURE_SCHEMA` table when every value is certainly
    valid, else None (read it with `parse_json`, which finds the errors).

    Arrow is given the exact types (int64 for I1..I13, string for C1..C26), so it fails
    on what the usual path would treat differently: `3.0`, `"3"`, `true`, a number where
    a string belongs, a duplicated key. What it accepts and the usual path would reject
    is checked here: a second document after the first (one table row each), a missing,
    null or empty `rows`, a null row, and the values' ranges (`criteo.checked_table`)."""
    if len(body) < ROWS_BODY_MIN_BYTES or b'"rows"' not in body[:64]:
        return None
    try:
        table = pa_json.read_json(
            pa.py_buffer(body),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1),
            parse_options=_ROWS_BODY_PARSE)
    except (pa.ArrowException, ValueError):     # ValueError: an undecodable error text
        return None
    column = table.column(0)
    if table.num_rows != 1 or column.null_count:
        return None
    rows = column.chunk(0).flatten()
    if len(rows) == 0 or rows.null_count:
        return None
    return criteo.checked_table(rows.flatten(), len(rows))


def parse_json(body: bytes) -> Any:
    """`json.loads(body)`'s result, computed by pydantic-core when it can."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        return json.loads(body)     # accepts it (other encodings), or raises as before


class FastJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            table = rows_body_table(body)
            self._json = {"rows": ParsedRows(table)} if table is not None else parse_json(body)
        return self._json


class FastJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(FastJSONRequest(request.scope, request.receive))

        return route_handler
