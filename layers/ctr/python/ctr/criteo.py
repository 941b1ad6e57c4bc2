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

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ctr import cathash
from ctr.errors import ValidationError
from ctr.schema import (
    ALL_COLUMNS,
    CAT_COLUMNS,
    FEATURE_COLUMNS,
    INT_COLUMNS,
    LABEL,
    PARQUET_SCHEMA,
    PART_SCHEMA,
    to_part,
    with_hex_categoricals,
)

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
# The parts' fast path reads each categorical as exactly 8 bytes (the reader itself
# rejects other lengths) and decodes them to uint32 (`ctr.cathash`).
_FIXED8_SCHEMA = pa.schema([PARQUET_SCHEMA.field(n) for n in (LABEL, *INT_COLUMNS)]
                           + [pa.field(c, pa.binary(8)) for c in CAT_COLUMNS])
_CONVERT_FIXED8 = pa_csv.ConvertOptions(column_types=_FIXED8_SCHEMA, null_values=[""],
                                        strings_can_be_null=True,
                                        quoted_strings_can_be_null=False, check_utf8=False)
# Bytes Arrow's integer conversion accepts besides digits and a leading '-': it trims
# spaces around a number, reads "0x1f" as hexadecimal, and '\r' as a line end. Text
# without them, typed by the reader without error, has valid integers (tested over all
# 256 byte values; valid Criteo text never contains them).
_INT_LENIENT_BYTES = (b" ", b"\r", b"x", b"X")
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


def _parse_clean_part(data: bytes) -> pa.Table | None:
    """The parts' fast path: a `PART_SCHEMA` table if the whole block is certainly
    valid, else None. Cheaper than `_parse_clean`: no pass over the whole text (four
    single-byte searches instead), categoricals read as 8 fixed bytes and validated while
    they are decoded to uint32 (so no '-' count is needed either)."""
    if any(b in data for b in _INT_LENIENT_BYTES):
        return None
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), read_options=_READ, parse_options=_PARSE,
                                convert_options=_CONVERT_FIXED8)
    except pa.ArrowInvalid:
        return None                       # field count, integer syntax/range, cat length
    label = table.column(LABEL)
    if label.null_count or pc.min_max(label).as_py() not in ({"min": 0, "max": 0},
                                                             {"min": 0, "max": 1},
                                                             {"min": 1, "max": 1}):
        return None                       # empty lines and labels other than 0/1
    cats = cathash.from_fixed8([table.column(name) for name in CAT_COLUMNS])
    if cats is None:
        return None                       # a categorical byte outside [0-9a-f]
    return pa.Table.from_arrays([table.column(LABEL).cast(pa.int8()),
                                 *(table.column(n) for n in INT_COLUMNS), *cats],
                                schema=PART_SCHEMA)


def parse_part(data: bytes) -> ParseResult:
    """`parse_tsv` for Parquet parts: the same rows and rejects, the table in
    `PART_SCHEMA` (categoricals as uint32)."""
    if not data:
        return ParseResult(PART_SCHEMA.empty_table(), [], 0, careful=False)
    table = _parse_clean_part(data)
    if table is not None:
        return ParseResult(table, [], table.num_rows, careful=False)
    result = _parse_careful(data)
    return ParseResult(to_part(result.table), result.rejects, result.lines, careful=True)


def parse_tsv(data: bytes) -> ParseResult:
    """Parse a block of Criteo lines; valid lines become rows, the others `Reject`s."""
    if not data:
        return ParseResult(PARQUET_SCHEMA.empty_table(), [], 0, careful=False)
    table = _parse_clean(data)
    if table is not None:
        return ParseResult(table, [], table.num_rows, careful=False)
    return _parse_careful(data)


def parse_lines_with_or_without_label(data: bytes) -> tuple[pa.Array, ParseResult]:
    """A block of lines of 40 fields (label first) or 39 (features only), mixed as they
    come: (the lines as a large_binary array, without line endings; their parse).
    Label-less lines get a placeholder label for the parse (ignore the table's label);
    a rejected label-less line's reason is worded for 39 fields, and every reject holds
    the original line. `lines[i]` is line `i + 1` of the block."""
    if not data:
        return pa.array([], pa.large_binary()), parse_tsv(data)
    lines = _split_lines(data)
    no_label = pc.equal(pc.count_substring(lines, "\t"), len(FEATURE_COLUMNS) - 1)
    if not pc.any(no_label).as_py():
        return lines, parse_tsv(_join_lines(lines))
    placeholder = pa.scalar(b"0", pa.large_binary())
    normalised = pc.if_else(no_label, pc.binary_join_element_wise(
        placeholder, lines, pa.scalar(b"\t", pa.large_binary())), lines)
    result = parse_tsv(_join_lines(normalised))
    flags = no_label.to_numpy(zero_copy_only=False)
    rejects = []
    for reject in result.rejects:
        if flags[reject.line_no - 1]:
            text = lines[reject.line_no - 1].as_py()
            reject = Reject(reject.line_no, describe(line_problems(text, has_label=False)),
                            text)
        rejects.append(reject)
    return lines, ParseResult(result.table, rejects, result.lines, result.careful)


def valid_lines(lines: pa.Array, rejects: Sequence[Reject]) -> pa.Array:
    """`lines` without the rejected ones, in order (the rows of the parse's table)."""
    if not rejects:
        return lines
    keep = np.ones(len(lines), dtype=bool)
    keep[[r.line_no - 1 for r in rejects]] = False
    return lines.filter(pa.array(keep))


def join_lines(lines: pa.Array) -> bytes:
    """Binary lines -> one block, each line ending with '\n'."""
    return _join_lines(lines)


# --- formatting ----------------------------------------------------------------------

def table_to_tsv(table: pa.Table, with_label: bool = True) -> bytes:
    """Criteo TSV bytes, one '\\n'-terminated line per row, missing = empty field.
    Categoricals may be hex strings or uint32 (parts of any version)."""
    columns = list(ALL_COLUMNS if with_label else FEATURE_COLUMNS)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(with_hex_categoricals(table.select(columns)), sink, _WRITE)
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


# Fast paths for API input. Most requests are valid and typed the usual way (JSON
# integers, 8-hex strings): Arrow converts them column-wise in C++ and a few vectorised
# checks prove them valid. Anything else -- a string or fractional-looking integer, a
# bool, an unknown key, a bad value -- makes the fast path answer None, and the per-field
# path below decides (and words every error), so both give the same table or the same
# errors (tested on fuzzed input).
_KNOWN_ROW_KEYS = frozenset({*FEATURE_COLUMNS, LABEL})
_ALL_FIELDS = operator.itemgetter(*FEATURE_COLUMNS)
_ARROW_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                            OverflowError, TypeError, ValueError)


def _cats_checked(column: pa.Array) -> pa.Array | None:
    """A string column of 8-hex values or "" (-> null), or None if any value is not."""
    if column.null_count == len(column):
        return column
    lengths = pc.binary_length(column)
    bounds = pc.min_max(lengths).as_py()
    if bounds["max"] != 8 or bounds["min"] not in (0, 8):
        return None
    if bounds["min"] == 0:                       # "" is missing
        lengths_8 = pc.equal(lengths, 8)
        column = pc.if_else(lengths_8, column, pa.scalar(None, pa.string()))
        if pc.any(pc.and_(pc.invert(lengths_8), pc.not_equal(lengths, 0))).as_py():
            return None
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[column.offset:column.offset
                                                         + len(column) + 1]
    data = memoryview(data_buf)[offsets[0]:offsets[-1]]
    return column if cathash.decode_values(data) is not None else None


def _ints_checked(column: pa.Array) -> bool:
    """Whether every integer is within JSON's exact range (+-(2**53 - 1))."""
    if column.null_count == len(column):
        return True
    bounds = pc.min_max(column).as_py()
    return bounds["min"] >= -JSON_SAFE_INT and bounds["max"] <= JSON_SAFE_INT


def checked_table(columns: Sequence[pa.Array | None], n: int) -> pa.Table | None:
    """The 39 columns (FEATURE_COLUMNS order) as Arrow inferred them from JSON values
    (None: absent from every row) as a table, if every value is certainly valid; None
    sends the caller to the per-field path. (Also the check of the predict API's
    column-wise body reader, `ctr.serving.fast_json.rows_body_table`.)

    Arrow's inference is used rather than a target type on purpose: converting to int64
    would truncate 2.5 to 2 without a word; inferred, a fractional number makes the
    column double, a bool makes it bool, and any such column leaves the fast path."""
    typed: list[pa.Array] = []
    for i, column in enumerate(columns):
        want = FEATURE_SCHEMA.field(i).type
        if column is None or column.type == pa.null():
            typed.append(pa.nulls(n, want))
        elif column.type == want:
            typed.append(column)
        else:
            return None
    # Each kind checked once over its columns stacked end to end: a fixed handful of
    # Arrow calls per request instead of a few per column (what 1- and 100-row
    # requests cost), then the categoricals are cut back into their columns.
    n_int = len(INT_COLUMNS)
    if not _ints_checked(pa.concat_arrays(typed[:n_int])):
        return None
    cats = _cats_checked(pa.concat_arrays(typed[n_int:]))
    if cats is None:
        return None
    return pa.Table.from_arrays(
        [*typed[:n_int], *(cats.slice(j * n, n) for j in range(len(CAT_COLUMNS)))],
        schema=FEATURE_SCHEMA)


# Below this many rows the per-field path is the cheaper one (a fixed ~0.4 ms of Arrow
# calls against ~0.15 ms per row, measured).
FAST_PATH_MIN_ROWS = 16


def _rows_fast(rows: list[Any]) -> pa.Table | None:
    if len(rows) < FAST_PATH_MIN_ROWS or not all(type(row) is dict for row in rows):
        return None
    # Rows of exactly 39 keys that all 39 names find (the usual client) have no other
    # key: no need to collect every row's keys first (a pass over all 39,000 of them).
    every_field = all(len(row) == len(FEATURE_COLUMNS) for row in rows)
    present = _KNOWN_ROW_KEYS if every_field else set().union(*rows)
    if not present <= _KNOWN_ROW_KEYS:
        return None
    try:
        # One list per column, then one Arrow conversion per column: half the time of
        # Arrow inferring a struct from the dicts (measured at 1,000 rows). Rows that
        # name all 39 fields are transposed at C speed.
        try:
            values: list[Any] = list(zip(*map(_ALL_FIELDS, rows), strict=True))
        except KeyError:
            if every_field:     # 39 keys but not these 39: let the per-field path say so
                return None
            values = [[row.get(name) for row in rows] if name in present else None
                      for name in FEATURE_COLUMNS]
        columns = [None if v is None else pa.array(v) for v in values]
    except _ARROW_CONVERSION_ERRORS:
        return None
    return checked_table(columns, len(rows))


def features_to_table(vectors: list[list[Any]]) -> pa.Table | None:
    """39-value vectors (I1..I13, C1..C26) -> a `FEATURE_SCHEMA` table when every value
    is certainly valid, else None (validate them as rows to find the errors)."""
    if len(vectors) < FAST_PATH_MIN_ROWS or not all(
            type(v) is list and len(v) == len(FEATURE_COLUMNS) for v in vectors):
        return None
    try:
        columns = [pa.array(values) for values in zip(*vectors, strict=True)]
    except _ARROW_CONVERSION_ERRORS:
        return None
    return checked_table(columns, len(vectors))


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
    fast = _rows_fast(rows)
    if fast is not None:
        return fast
    return _rows_to_table_per_field(rows)


def _rows_to_table_per_field(rows: list[Any]) -> pa.Table:
    """The per-field authority of `rows_to_table` (every error, worded)."""
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
    fast = _lines_fast(lines)
    if fast is not None:
        return fast, []
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


def _lines_fast(lines: list[Any]) -> pa.Table | None:
    """All lines in one parse when all have the label or none has (the usual case) and
    every line is valid; else None (the per-line path finds the errors)."""
    n = len(lines)
    try:
        text = "\n".join(lines)
    except TypeError:                               # not all strings
        return None
    tabs = text.count("\t")
    if tabs == (len(ALL_COLUMNS) - 1) * n:
        data = text + "\n"
    elif tabs == (len(FEATURE_COLUMNS) - 1) * n:
        data = "0\t" + "\n0\t".join(lines) + "\n"      # a placeholder label
    else:
        return None
    if data.count("\n") != n or "\r" in data:
        return None
    try:
        encoded = data.encode("utf-8")
    except UnicodeEncodeError:                      # a lone surrogate
        return None
    result = parse_tsv(encoded)
    if result.rejects or result.table.num_rows != n:
        return None
    return result.table.select(list(FEATURE_COLUMNS))
