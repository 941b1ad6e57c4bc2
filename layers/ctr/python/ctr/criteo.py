"""Criteo TSV: parsing, validation and formatting.

A line is `label \\t I1..I13 \\t C1..C26` (40 fields). Valid means: label is an integer
equal to 0 or 1; I* are empty (missing) or ASCII integers `-?[0-9]+` that fit in int64;
C* are empty (missing) or exactly 8 lowercase hex characters. Lines end with '\\n'; one
trailing '\\r' is part of the line ending (CRLF files parse like LF files), a final line
without a newline is a line, and an empty line is invalid.

`parse_tsv` turns a block of text into a `PARQUET_SCHEMA` table plus rejects, in two tiers:

* the fast path (clean data, the usual case): a whole-buffer alphabet check (one C-level
  `bytes.translate` pass: any byte outside `[0-9a-f-\\t\\n]` means "not clean"; it also
  counts the '-' characters), Arrow's
  multi-threaded CSV reader with the typed schema, and vectorised checks on the result
  (label in {0, 1}, every categorical exactly 8 characters, and as many '-' characters in
  the text as negative integers -- so no '-' hides in a categorical). Any doubt sends the
  whole block to
* the careful path: Arrow splits the block into lines and matches every line against one
  regular expression that only valid lines match (vectorised, RE2). Only lines that fail
  it get a per-line Python check (`line_problems`), which is the authority: it either
  finds the precise reasons (the reject message) or declares the line valid (e.g. an
  integer with more than 18 digits that still fits in int64). The valid lines are joined
  and parsed by the same typed CSV read.

Both tiers agree by construction (tested): whatever the fast path accepts, the per-line
check accepts too. The module also builds tables from API input (`rows_to_table`,
`lines_to_table`, with field-level errors) and formats tables back to lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ctr.errors import ValidationError
from ctr.schema import ALL_COLUMNS, CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS, LABEL, PARQUET_SCHEMA

FEATURE_SCHEMA = pa.schema([PARQUET_SCHEMA.field(name) for name in FEATURE_COLUMNS])

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MSG_LABEL = "must be 0 or 1"
MSG_INT = "must be an integer (or empty for missing)"
MSG_INT_RANGE = "integer out of the int64 range"
# JSON numbers are exact only up to 2**53 - 1 (JavaScript's MAX_SAFE_INTEGER, RFC 7493):
# a larger one may already have been rounded by the client, so it must come as a string.
JSON_SAFE_INT = 2**53 - 1
MSG_JSON_RANGE = ("JSON numbers beyond +-(2**53 - 1) are not exact: send this integer as a "
                  "string")
MSG_CAT = "must be 8 lowercase hex characters (or empty for missing)"
MAX_REASON_CHARS = 500

_CLEAN_ALPHABET_NO_DASH = b"0123456789abcdef\t\n"
_INT_RE = re.compile(r"-?[0-9]+")
_CAT_RE = re.compile(r"[0-9a-f]{8}")
# Matches only valid lines (label 0/1, ints of at most 18 digits, which always fit int64).
_VALID_LINE_RE = (r"^[01](?:\t(?:-?[0-9]{1,18})?){13}(?:\t(?:[0-9a-f]{8})?){26}$")

_READ = pa_csv.ReadOptions(column_names=list(ALL_COLUMNS))
_PARSE = pa_csv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False,
                             escape_char=False, newlines_in_values=False,
                             ignore_empty_lines=False)
# check_utf8 is off because only ASCII reaches the reader: the fast path checks the
# alphabet first, the careful path joins lines that passed validation.
_CONVERT = pa_csv.ConvertOptions(column_types=PARQUET_SCHEMA, null_values=[""],
                                 strings_can_be_null=True, quoted_strings_can_be_null=False,
                                 check_utf8=False)
_WRITE = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")


@dataclass(frozen=True)
class Reject:
    """A malformed line: its 1-based number in the parsed text, why, and its bytes."""

    line_no: int
    reason: str
    text: bytes

    def to_bytes(self) -> bytes:
        """One rejects-file line: `<line_no>\\t<reason>\\t<original line>` (reason has no
        tab or newline, the line has no newline, so the original bytes are recoverable)."""
        return f"{self.line_no}\t{self.reason}\t".encode() + self.text

    @staticmethod
    def from_bytes(line: bytes) -> Reject:
        number, reason, text = line.split(b"\t", 2)
        return Reject(int(number), reason.decode(), text)


@dataclass(frozen=True)
class ParseResult:
    table: pa.Table          # valid lines, PARQUET_SCHEMA, in input order
    rejects: list[Reject]
    lines: int               # lines seen = table.num_rows + len(rejects)
    careful: bool            # True when the per-line tier had to run


# --- per-line authority --------------------------------------------------------------

def _int_of(text: str) -> int:
    """int(text) for text matching `_INT_RE`, also for more than Python's 4,300-digit
    conversion limit (which raises ValueError): beyond 19 significant digits the value
    is outside int64 anyway, so it comes back as just outside the range."""
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > 19:
        return INT64_MIN - 1 if text.startswith("-") else INT64_MAX + 1
    return -int(digits or "0") if text.startswith("-") else int(digits or "0")


def field_problem(name: str, value: str) -> str | None:
    """Why `value` is not valid for column `name` (None when it is)."""
    if name == LABEL:
        ok = _INT_RE.fullmatch(value) is not None and _int_of(value) in (0, 1)
        return None if ok else MSG_LABEL
    if value == "":
        return None
    if name.startswith("I"):
        if _INT_RE.fullmatch(value) is None:
            return MSG_INT
        return None if INT64_MIN <= _int_of(value) <= INT64_MAX else MSG_INT_RANGE
    return None if _CAT_RE.fullmatch(value) else MSG_CAT


def line_problems(line: bytes, has_label: bool = True) -> list[tuple[str | None, str, str]]:
    """Every problem of one line (without its line ending) as (column or None, message,
    offending value); an empty list means the line is valid."""
    if not line:
        return [(None, "empty line", "")]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return [(None, "invalid UTF-8", "")]
    fields = text.split("\t")
    names = ALL_COLUMNS if has_label else FEATURE_COLUMNS
    if len(fields) != len(names):
        return [(None, f"expected {len(names)} tab-separated fields, got {len(fields)}", "")]
    problems: list[tuple[str | None, str, str]] = []
    for name, value in zip(names, fields, strict=True):
        msg = field_problem(name, value)
        if msg is not None:
            problems.append((name, msg, value))
    return problems


def describe(problems: Sequence[tuple[str | None, str, str]]) -> str:
    """A one-line reason for a rejects file (no tabs or newlines)."""
    parts = [f"{col}: {msg} (got {value[:40]!r})" if col else msg
             for col, msg, value in problems[:3]]
    if len(problems) > 3:
        parts.append(f"and {len(problems) - 3} more invalid field(s)")
    return "; ".join(parts)[:MAX_REASON_CHARS]


# --- block parsing -------------------------------------------------------------------

def _read_typed(data: bytes) -> pa.Table:
    """Arrow's CSV reader with the fixed schema (raises pa.ArrowInvalid on bad input).
    The reader marks every column nullable; callers cast to PARQUET_SCHEMA once the label
    is known to have no nulls."""
    return pa_csv.read_csv(pa.py_buffer(data), read_options=_READ, parse_options=_PARSE,
                           convert_options=_CONVERT)


def _parse_clean(data: bytes) -> pa.Table | None:
    """The fast path: the typed table if the whole block is certainly valid, else None."""
    leftover = data.translate(None, _CLEAN_ALPHABET_NO_DASH)
    if leftover.translate(None, b"-"):
        return None                       # \r, spaces, quotes, non-ASCII, 'x', ...
    try:
        table = _read_typed(data)
    except pa.ArrowInvalid:
        return None                       # field count or integer syntax/range
    label = table.column(LABEL)
    if label.null_count or pc.min_max(label).as_py() not in ({"min": 0, "max": 0},
                                                             {"min": 0, "max": 1},
                                                             {"min": 1, "max": 1}):
        return None                       # empty lines and labels other than 0/1
    for name in CAT_COLUMNS:
        column = table.column(name)
        if column.null_count < len(column):
            lengths = pc.min_max(pc.binary_length(column)).as_py()
            if lengths["min"] != 8 or lengths["max"] != 8:
                return None
    negatives = sum(pc.sum(pc.less(table.column(n), 0)).as_py() or 0 for n in INT_COLUMNS)
    if len(leftover) != negatives:
        return None                       # a '-' inside a categorical, or "-0"
    return table.cast(PARQUET_SCHEMA)


def _split_lines(data: bytes) -> pa.Array:
    """The block's lines as a large_binary array, without '\\n' and one trailing '\\r'."""
    pieces = pc.list_flatten(pc.split_pattern(pa.array([data], pa.large_binary()), "\n"))
    if data.endswith(b"\n"):
        pieces = pieces.slice(0, len(pieces) - 1)
    has_cr = pc.ends_with(pieces, "\r")
    if pc.any(has_cr).as_py():
        pieces = pc.if_else(has_cr, pc.binary_slice(pieces, 0, -1), pieces)
    return pieces


def _join_lines(lines: pa.Array) -> bytes:
    if len(lines) == 0:
        return b""
    as_list = pa.LargeListArray.from_arrays(pa.array([0, len(lines)], pa.int64()), lines)
    joined = pc.binary_join(as_list, pa.scalar(b"\n", pa.large_binary()))[0].as_py()
    return bytes(joined) + b"\n"


def _parse_careful(data: bytes) -> ParseResult:
    lines = _split_lines(data)
    matched = pc.match_substring_regex(lines, _VALID_LINE_RE).to_numpy(zero_copy_only=False)
    keep = matched.copy()
    rejects: list[Reject] = []
    for i in np.flatnonzero(~matched):
        text = lines[int(i)].as_py()
        problems = line_problems(text)
        if problems:
            rejects.append(Reject(int(i) + 1, describe(problems), text))
        else:
            keep[i] = True
    valid = lines.filter(pa.array(keep))
    table = _read_typed(_join_lines(valid)) if len(valid) else PARQUET_SCHEMA.empty_table()
    if table.num_rows != len(valid):
        raise AssertionError("validated lines did not parse to one row each")
    return ParseResult(table.cast(PARQUET_SCHEMA), rejects, len(lines), careful=True)


def parse_tsv(data: bytes) -> ParseResult:
    """Parse a block of Criteo lines; valid lines become rows, the others `Reject`s."""
    if not data:
        return ParseResult(PARQUET_SCHEMA.empty_table(), [], 0, careful=False)
    table = _parse_clean(data)
    if table is not None:
        return ParseResult(table, [], table.num_rows, careful=False)
    return _parse_careful(data)


# --- formatting ----------------------------------------------------------------------

def table_to_tsv(table: pa.Table, with_label: bool = True) -> bytes:
    """Criteo TSV bytes, one '\\n'-terminated line per row, missing = empty field."""
    columns = list(ALL_COLUMNS if with_label else FEATURE_COLUMNS)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table.select(columns), sink, _WRITE)
    return sink.getvalue().to_pybytes()


def table_to_lines(table: pa.Table, with_label: bool = True) -> list[str]:
    if table.num_rows == 0:
        return []
    return table_to_tsv(table, with_label).decode().removesuffix("\n").split("\n")


# --- API input -----------------------------------------------------------------------

def _int_value(value: Any) -> tuple[int | None, str | None]:
    if value is None or value == "":
        return None, None
    if isinstance(value, bool):
        return None, MSG_INT
    if isinstance(value, float):
        if not value.is_integer():                 # fractional, NaN, infinite
            return None, MSG_INT
        value = int(value)
    if isinstance(value, int):
        if not -JSON_SAFE_INT <= value <= JSON_SAFE_INT:
            return None, MSG_JSON_RANGE
        return value, None
    if not isinstance(value, str) or _INT_RE.fullmatch(value.strip()) is None:
        return None, MSG_INT
    number = _int_of(value.strip())
    if not INT64_MIN <= number <= INT64_MAX:
        return None, MSG_INT_RANGE
    return number, None


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """JSON rows ({"I1": 3, "C1": "68fd1e64", ...}) -> a `FEATURE_SCHEMA` table.

    Missing keys, None and "" are missing values; integers may be JSON numbers (integral,
    within +-(2**53 - 1)) or decimal strings (within int64); a "label" key is ignored.
    Raises `ValidationError` whose `details["errors"]` lists every problem as
    {"loc": ["rows", i, field], "msg": ...}.
    """
    if not isinstance(rows, list):
        raise ValidationError("rows must be a list of objects",
                              errors=[{"loc": ["rows"], "msg": "must be a list"}])
    errors: list[dict[str, Any]] = []
    ints: dict[str, list[int | None]] = {c: [] for c in INT_COLUMNS}
    cats: dict[str, list[str | None]] = {c: [] for c in CAT_COLUMNS}
    known = {*FEATURE_COLUMNS, LABEL}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"loc": ["rows", i], "msg": "must be an object"})
            continue
        errors.extend({"loc": ["rows", i, key], "msg": "unknown field"}
                      for key in row if key not in known)
        for name in INT_COLUMNS:
            number, msg = _int_value(row.get(name))
            if msg:
                errors.append({"loc": ["rows", i, name], "msg": msg, "input": row.get(name)})
            ints[name].append(number)
        for name in CAT_COLUMNS:
            value = row.get(name)
            if value is None or value == "":
                cats[name].append(None)
            elif isinstance(value, str) and _CAT_RE.fullmatch(value):
                cats[name].append(value)
            else:
                errors.append({"loc": ["rows", i, name], "msg": MSG_CAT, "input": value})
                cats[name].append(None)
    if errors:
        raise ValidationError(f"{len(errors)} invalid field(s) in rows", errors=errors)
    arrays = [pa.array(ints[c], pa.int64()) for c in INT_COLUMNS]
    arrays += [pa.array(cats[c], pa.string()) for c in CAT_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=FEATURE_SCHEMA)


def lines_to_table(lines: list[str]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Raw TSV lines, with (40 fields) or without (39 fields) the label -> (a
    `FEATURE_SCHEMA` table of the valid lines in order, errors of the others as
    {"loc": ["lines", i] or ["lines", i, field], "msg": ...}). Callers reject the request
    when errors is non-empty. Validation is vectorised, as in `parse_tsv`."""
    errors: list[dict[str, Any]] = []
    normalised: list[bytes] = []
    origin: list[tuple[int, bool]] = []   # (index in `lines`, has_label) per normalised line
    for i, line in enumerate(lines):
        if not isinstance(line, str):
            errors.append({"loc": ["lines", i], "msg": "must be a string"})
            continue
        text = line.removesuffix("\n").removesuffix("\r")
        if "\n" in text:
            errors.append({"loc": ["lines", i], "msg": "must be a single line"})
            continue
        n_fields = text.count("\t") + 1
        if n_fields not in (len(FEATURE_COLUMNS), len(ALL_COLUMNS)):
            errors.append({"loc": ["lines", i], "msg": "expected 39 (features) or 40 "
                           f"(label + features) tab-separated fields, got {n_fields}"})
            continue
        has_label = n_fields == len(ALL_COLUMNS)
        # Label-less lines get a placeholder label so one parse handles both kinds. A
        # lone surrogate (valid JSON: "\\ud800") becomes bytes the parse calls invalid UTF-8.
        data = text.encode("utf-8", "surrogatepass")
        normalised.append(data if has_label else b"0\t" + data)
        origin.append((i, has_label))
    result = parse_tsv(b"".join(line + b"\n" for line in normalised))
    for reject in result.rejects:
        i, has_label = origin[reject.line_no - 1]
        raw = reject.text if has_label else reject.text[2:]
        for column, msg, value in line_problems(raw, has_label):
            loc: list[Any] = ["lines", i] + ([column] if column else [])
            errors.append({"loc": loc, "msg": msg, **({"input": value} if column else {})})
    errors.sort(key=lambda e: e["loc"][1])
    return result.table.select(list(FEATURE_COLUMNS)), errors
