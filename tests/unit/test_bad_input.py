"""The bad input corpus, in-process (issue #8, part 3).

Data plane: each case is a raw file that goes through the real ingest -> chunk ->
aggregate code over a fake S3. Whatever it holds, the run must not crash, and the
accounting must balance exactly: the chunks concatenate to the file, and every line of
the file is either a Parquet row or a reject with a reason, once. A file that cannot be
read at all (a corrupt .gz) is a DataError naming it, with nothing written.

API: every malformed predict request (three input forms, body-level problems, oversized
requests) gets a 4xx JSON answer with field-level `errors` and no stack trace, with and
without a model loaded. The same corpus runs through API Gateway in
tests/integration/test_bad_input_cloud.py.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from ctr import aggregate, chunking, criteo, data_status, ingest, layout, synth
from ctr.errors import DataError
from ctr.schema import FEATURE_COLUMNS, PART_SCHEMA
from ctr.steps import AggregateResult, ChunkCut
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import features_of, sample_table, tiny_predictor
from tests.unit.test_serving_app import Cloud, make_client

MB = 1_000_000


def _good(n: int, seed: int = 5) -> list[bytes]:
    """Valid synthetic lines, in the canonical form Parquet rows format back to."""
    table, _ = synth.generate_table(n, seed)
    return criteo.table_to_tsv(table).split(b"\n")[:-1]


GOOD = _good(300)


def _fields(line: bytes) -> list[bytes]:
    return line.split(b"\t")


def _with(position: int, value: bytes, line: bytes = GOOD[0]) -> bytes:
    """`line` with field `position` (0 = label, 1..13 = I1..I13, 14.. = C1..) replaced."""
    fields = _fields(line)
    fields[position] = value
    return b"\t".join(fields)


def _block(lines: list[bytes], ending: bytes = b"\n", final: bool = True) -> bytes:
    return ending.join(lines) + (ending if final and lines else b"")


# --------------------------------------------------------------------------- data plane

@dataclass
class Outcome:
    data: bytes
    store: Store
    chunked: list[ChunkCut]
    summary: AggregateResult

    def chunks(self) -> list[bytes]:
        keys = sorted(self.store.list_keys(layout.CHUNKS_PREFIX))
        return [self.store.get(k).body for k in keys]

    def parquet_lines(self) -> list[bytes]:
        lines: list[bytes] = []
        for key in sorted(self.store.list_keys(layout.PARQUET_PREFIX)):
            table = pq.read_table(pa.BufferReader(self.store.get(key).body))
            assert table.schema.equals(PART_SCHEMA, check_metadata=True), key
            lines += criteo.table_to_tsv(table).split(b"\n")[:-1] if table.num_rows else []
        return lines

    def rejects(self) -> list[tuple[int, criteo.Reject]]:
        out = []
        for key in sorted(filter(layout.is_chunk_rejects_key,
                                 self.store.list_keys(layout.REJECTS_PREFIX))):
            body = self.store.get(key).body
            assert body.endswith(b"\n"), key
            out += [(layout.index_of(key), criteo.Reject.from_bytes(line))
                    for line in body[:-1].split(b"\n")]
        return out


def run_data_plane(tmp_path: Path, data: bytes, chunk_lines: int = 100,
                   name: str = "train.txt") -> Outcome:
    """Ingest `data` as a local file, chunk until exhausted, aggregate every chunk."""
    store = Store(MemoryS3(), "bucket")
    source = tmp_path / name
    source.write_bytes(data)
    ingest.put(store, str(source), source_name="corpus")
    chunked = []
    for _ in range(10_000):
        result = chunking.cut_chunk(store, chunk_lines)
        if result.status == "exhausted":
            break
        chunked.append(result)
    summary = aggregate.aggregate(store, max_reject_share=1.0)
    return Outcome(data, store, chunked, summary)


def source_lines(data: bytes) -> list[bytes]:
    """The file's lines as the pipeline defines them: '\\n'-separated, one trailing '\\r'
    is part of the line ending, a last line without '\\n' is a line."""
    if not data:
        return []
    pieces = data.split(b"\n")
    if data.endswith(b"\n"):
        pieces.pop()
    return [p.removesuffix(b"\r") for p in pieces]


def assert_accounted(out: Outcome, expected_rejects: list[tuple[bytes, str]]) -> None:
    """Nothing lost, nothing duplicated, every reject explained."""
    lines = source_lines(out.data)
    assert b"".join(out.chunks()) == out.data                     # chunking keeps every byte
    assert sum(r.lines for r in out.chunked) == len(lines)
    parquet, rejects = out.parquet_lines(), out.rejects()
    assert Counter(parquet) + Counter(r.text for _, r in rejects) == Counter(lines)
    assert out.summary.rows_in == len(lines)
    assert out.summary.rows_out == len(parquet)
    assert out.summary.rows_rejected == len(rejects) == len(expected_rejects)
    assert out.summary.quarantined == []
    assert sorted(r.text for _, r in rejects) == sorted(text for text, _ in expected_rejects)
    reason_of = {r.text: r.reason for _, r in rejects}
    for text, fragment in expected_rejects:
        assert fragment in reason_of[text], (fragment, reason_of[text][:200])
    chunks = out.chunks()
    for index, reject in rejects:
        # the reject names its line in its chunk; the reason is one short line
        assert source_lines(chunks[index])[reject.line_no - 1] == reject.text
        assert 0 < len(reject.reason) <= criteo.MAX_REASON_CHARS
        assert "\t" not in reject.reason and "\n" not in reject.reason


BLOB = b"\xff\xfe\x00\x80binary\x81"
FIELD_COUNT = "tab-separated fields"
HEX = "must be 8 lowercase hex"
INT = "must be an integer"
LABEL = "label: must be 0 or 1"

# case -> (bad lines, each with a fragment its reject reason must contain)
BAD_LINES: dict[str, list[tuple[bytes, str]]] = {
    "truncated": [(GOOD[1][: len(GOOD[1]) // 2], FIELD_COUNT), (b"0\t1\t2", "got 3"),
                  (b"1", "got 1")],
    "extra fields": [(GOOD[2] + b"\t68fd1e64", "got 41"), (GOOD[3] + b"\t", "got 41"),
                     (GOOD[4] + b"\t" * 40, "got 80")],
    "invalid utf-8": [(BLOB, "invalid UTF-8"),
                      (_with(14, b"\xc3\x28\xa0\xa1\xff\xfe\xfd\xfc"), "invalid UTF-8"),
                      (_with(3, b"1\xe2\x82"), "invalid UTF-8")],
    "letters in integers": [(_with(1, b"12a"), f"I1: {INT}"), (_with(5, b"abc"), f"I5: {INT}"),
                            (_with(13, b"0x1f"), f"I13: {INT}"),
                            (_with(2, b"1.5"), f"I2: {INT}"), (_with(2, b"1,000"), INT)],
    "non-hex categoricals": [(_with(14, b"zzzzzzzz"), f"C1: {HEX}"),
                             (_with(20, b"68FD1E64"), f"C7: {HEX}"),
                             (_with(39, b"68fd1e6g"), f"C26: {HEX}"),
                             (_with(15, b"68fd1e6"), f"C2: {HEX}")],
    "bad labels": [(_with(0, b"2"), LABEL), (_with(0, b"x"), LABEL), (_with(0, b""), LABEL),
                   (_with(0, b"-1"), LABEL), (_with(0, b"0.0"), LABEL),
                   (_with(0, b"true"), LABEL)],
    "nan and inf": [(_with(1, b"nan"), f"I1: {INT}"), (_with(2, b"NaN"), f"I2: {INT}"),
                    (_with(3, b"inf"), f"I3: {INT}"), (_with(4, b"-inf"), f"I4: {INT}"),
                    (_with(5, b"Infinity"), f"I5: {INT}"), (_with(6, b"1e5"), f"I6: {INT}"),
                    (_with(0, b"nan"), LABEL), (_with(14, b"nan"), f"C1: {HEX}"),
                    (_with(15, b"nannanna"), f"C2: {HEX}")],
    "blank lines": [(b"", "empty line"), (b"", "empty line"), (b" ", "got 1"),
                    (b"\t", "got 2"), (b"\t" * 39, LABEL)],
    "one megabyte lines": [(b"x" * MB, "got 1"), (b"\t" * MB, f"got {MB + 1}"),
                           (_with(14, b"a" * MB), f"C1: {HEX}"),
                           (_with(1, b"7" * MB), "I1: integer out of the int64 range"),
                           (_with(0, b"1" * MB), LABEL)],
}


def _mixed(bad: list[tuple[bytes, str]], good: list[bytes] = GOOD[:120]) -> list[bytes]:
    """Valid lines with the bad ones spread through them."""
    lines = list(good)
    step = max(1, len(lines) // (len(bad) + 1))
    for i, (text, _) in enumerate(bad):
        lines.insert((i + 1) * step + i, text)
    return lines


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_each_bad_line_kind_is_quarantined_and_every_line_accounted(tmp_path, case):
    bad = BAD_LINES[case]
    out = run_data_plane(tmp_path, _block(_mixed(bad)), chunk_lines=40)

    assert_accounted(out, bad)
    assert out.summary.rows_out == 120


def test_crlf_file_keeps_every_valid_line_and_rejects_the_bad_ones(tmp_path):
    bad = [(_with(14, b"ZZZZZZZZ"), f"C1: {HEX}"), (b"", "empty line")]
    data = _block(_mixed(bad, GOOD[:90]), ending=b"\r\n")

    out = run_data_plane(tmp_path, data, chunk_lines=25)

    assert_accounted(out, bad)
    assert Counter(out.parquet_lines()) == Counter(GOOD[:90])      # no '\r' reached Parquet


def test_stray_carriage_returns_are_data_not_line_endings(tmp_path):
    # only ONE '\r' before '\n' belongs to the line ending; any other '\r' is data
    written = [GOOD[5] + b"\r\r", _with(3, b"1\r2"), b"\r\r"]
    bad = [(GOOD[5] + b"\r", f"C26: {HEX}"), (_with(3, b"1\r2"), f"I3: {INT}"),
           (b"\r", "got 1")]
    data = _block(_mixed([(line, "") for line in written]))

    out = run_data_plane(tmp_path, data)

    assert_accounted(out, bad)


def test_empty_file_is_consumed_without_chunks_or_rows(tmp_path):
    out = run_data_plane(tmp_path, b"")

    assert out.chunked == [] and out.chunks() == []
    assert out.summary.rows_in == 0 and out.rejects() == []
    cursor, _ = chunking.load_cursor(out.store)
    assert [(d.raw_key, d.lines) for d in cursor.done] == [("raw/corpus/train.txt", 0)]
    assert chunking.cut_chunk(out.store, 100).status == "exhausted"   # and it stays so


def test_only_blank_lines(tmp_path):
    out = run_data_plane(tmp_path, b"\n\r\n\n")

    assert_accounted(out, [(b"", "empty line")] * 3)
    assert out.summary.rows_out == 0


@pytest.mark.parametrize("last_is_valid", [True, False])
def test_file_without_trailing_newline(tmp_path, last_is_valid):
    last = GOOD[7] if last_is_valid else b"0\t1"
    data = _block([*GOOD[:49], last], final=False)

    out = run_data_plane(tmp_path, data, chunk_lines=20)

    assert_accounted(out, [] if last_is_valid else [(last, "got 2")])
    assert out.chunks()[-1].endswith(last)


def test_huge_file_in_many_chunks_loses_nothing(tmp_path):
    # "huge" for a unit test: 40,000 lines (9.7 MB) in 80 chunks, every kind of bad
    # line spread through it, some lines with CRLF endings.
    every_bad = [pair for pairs in BAD_LINES.values() for pair in pairs
                 if len(pair[0]) < MB]                 # the 1 MB lines have their own case
    good = [line + (b"\r" if i % 97 == 0 else b"") for i, line in enumerate(_good(40_000, 9))]
    data = _block(_mixed(every_bad, good))

    out = run_data_plane(tmp_path, data, chunk_lines=500)

    assert len(out.chunked) == -(-len(source_lines(data)) // 500) == 81
    assert_accounted(out, every_bad)
    assert out.summary.rows_out == 40_000
    # re-running is a no-op: nothing is converted or quarantined twice
    again = aggregate.aggregate(out.store, max_reject_share=1.0)
    assert again.converted == [] and again.rows_in == 0
    assert len(out.rejects()) == len(every_bad)


def test_unusual_but_valid_integers_keep_their_value(tmp_path):
    """Leading zeros (also past Python's 4,300-digit int() limit), "-0", int64 bounds."""
    values = [b"0" * 5000 + b"7", b"-" + b"0" * 5000 + b"7", b"-0", b"007",
              b"9223372036854775807", b"-9223372036854775808", b"0" * 30 + b"42"]
    lines = [_with(1 + i, v) for i, v in enumerate(values)] + [_with(0, b"0" * 5000 + b"1")]

    out = run_data_plane(tmp_path, _block(lines))

    assert out.summary.rows_out == len(lines) and out.rejects() == []
    table = pq.read_table(pa.BufferReader(out.store.get(layout.parquet_key(0)).body))
    got = [table.column(f"I{1 + i}")[i].as_py() for i in range(len(values))]
    assert got == [7, -7, 0, 7, 2**63 - 1, -(2**63), 42]
    assert table.column("label").to_pylist()[-1] == 1


def test_a_file_of_garbage_is_quarantined_with_a_clear_reason_and_kept(tmp_path):
    data = _block([BLOB] * 30 + GOOD[:10])
    store = Store(MemoryS3(), "bucket")
    store.put("raw/corpus/garbage.txt", data)
    assert chunking.cut_chunk(store, 1000).lines == 40

    summary = aggregate.aggregate(store)                     # default MaxRejectShare 5%

    assert summary.quarantined == [0] and summary.converted == []
    marker = aggregate.load_quarantine(store, 0)
    assert marker is not None and "30 of 40 lines rejected" in marker.reason
    assert marker.rejects_key == "rejects/chunk_000000.txt"
    assert not store.exists(layout.parquet_key(0))           # no partial part
    assert store.get(layout.chunk_key(0)).body == data       # the lines are still there
    assert store.get(layout.rejects_key(0)).body.count(b"\n") == 30
    doc = data_status.status(store)
    assert [q["index"] for q in doc["chunks_quarantined"]] == [0]
    assert doc["chunks_pending"] == []
    assert any("1 chunk(s) quarantined" in line for line in data_status.format_status(doc))


@pytest.mark.parametrize(("name", "blob", "message"), [
    ("garbage.gz", b"this is not gzip\n" * 50, "not a valid gzip stream"),
    ("truncated.gz", gzip.compress(_block(GOOD))[:2000], "truncated gzip stream"),
])
def test_corrupt_gzip_is_quarantined_with_the_reason_and_chunking_goes_on(name, blob, message):
    """Regression (issue 15): a corrupt .gz used to fail every chunk run until removed by
    hand. Now it is set aside with a clear reason, no line of it is cut, and the next
    source is chunked."""
    store = Store(MemoryS3(), "bucket")
    store.put(f"raw/corpus/{name}", blob)
    store.put("raw/corpus/z-later.txt", b"\n".join(GOOD) + b"\n")

    result = chunking.cut_chunk(store, 10_000)

    assert result.status == "chunked" and result.cursor.raw_key == "raw/corpus/z-later.txt"
    assert [(q.raw_key, message in q.reason) for q in result.quarantined] == [
        (f"raw/corpus/{name}", True)]
    cursor, _ = chunking.load_cursor(store)
    (q,) = cursor.quarantined
    assert q.raw_key == f"raw/corpus/{name}" and message in q.reason and q.lines == 0
    assert store.get(layout.chunk_key(0)).body == b"\n".join(GOOD) + b"\n"
    assert not [k for k in store.s3.objects if k.startswith("state/decompressed/")]
    assert chunking.cut_chunk(store, 10_000).status == "exhausted"  # not retried forever


def test_corrupt_gzip_on_ingest_with_decompress_is_a_clear_error(tmp_path):
    source = tmp_path / "bad.txt.gz"
    source.write_bytes(gzip.compress(_block(GOOD))[:-30])
    store = Store(MemoryS3(), "bucket")

    with pytest.raises(DataError, match="truncated gzip stream"):
        ingest.put(store, str(source), decompress=True)

    assert list(store.list_keys(layout.RAW_PREFIX)) == []


# --------------------------------------------------------------------------- API

NO_TRACE = ("Traceback", 'File "')
TABLE = sample_table().slice(0, 5)
ROW = TABLE.select(list(FEATURE_COLUMNS)).to_pylist()[0]
VECTOR = features_of(TABLE)[0]
LINE = criteo.table_to_lines(TABLE.slice(0, 1), with_label=False)[0]
LABELLED = criteo.table_to_lines(TABLE.slice(0, 1), with_label=True)[0]


def _vector(position: int, value: Any) -> list[Any]:
    vector = list(VECTOR)
    vector[position] = value
    return vector


def _line(position: int, value: str, line: str = LINE) -> str:
    fields = line.split("\t")
    fields[position] = value
    return "\t".join(fields)


def _raw(text: str | bytes) -> tuple[bytes, str]:
    return (text.encode() if isinstance(text, str) else text), "application/json"


# case -> (JSON body, or (raw bytes, content type)), and the `loc` one error must have
API_CASES: dict[str, tuple[Any, list[Any]]] = {
    # rows
    "rows: letters in an integer": ({"rows": [{**ROW, "I1": "abc"}]}, ["body", "rows", 0, "I1"]),
    "rows: fractional integer": ({"rows": [{"I2": 1.5}]}, ["body", "rows", 0, "I2"]),
    "rows: boolean integer": ({"rows": [{"I3": True}]}, ["body", "rows", 0, "I3"]),
    "rows: list as integer": ({"rows": [{"I4": [1]}]}, ["body", "rows", 0, "I4"]),
    "rows: object as categorical": ({"rows": [{"C1": {"a": 1}}]}, ["body", "rows", 0, "C1"]),
    "rows: number as categorical": ({"rows": [{"C2": 12345678}]}, ["body", "rows", 0, "C2"]),
    "rows: non-hex categorical": ({"rows": [{"C3": "zzzzzzzz"}]}, ["body", "rows", 0, "C3"]),
    "rows: upper-case hex": ({"rows": [{"C4": "68FD1E64"}]}, ["body", "rows", 0, "C4"]),
    "rows: 7-character hex": ({"rows": [{"C5": "68fd1e6"}]}, ["body", "rows", 0, "C5"]),
    "rows: unknown field": ({"rows": [{"I14": 1}]}, ["body", "rows", 0, "I14"]),
    "rows: NaN literal": (_raw('{"rows": [{"I1": NaN}]}'), ["body", "rows", 0, "I1"]),
    "rows: Infinity literal": (_raw('{"rows": [{"I1": -Infinity}]}'), ["body", "rows", 0, "I1"]),
    "rows: NaN categorical": (_raw('{"rows": [{"C1": NaN}]}'), ["body", "rows", 0, "C1"]),
    "rows: 'nan' string": ({"rows": [{"I5": "nan"}]}, ["body", "rows", 0, "I5"]),
    "rows: 'inf' string": ({"rows": [{"I5": "inf"}]}, ["body", "rows", 0, "I5"]),
    "rows: 1e400 overflows to inf": (_raw('{"rows": [{"I6": 1e400}]}'), ["body", "rows", 0, "I6"]),
    "rows: integer past int64 as a string": ({"rows": [{"I7": str(2**63)}]},
                                             ["body", "rows", 0, "I7"]),
    "rows: 5,000-digit integer string": ({"rows": [{"I8": "9" * 5000}]},
                                         ["body", "rows", 0, "I8"]),
    "rows: JSON number past 2**53": ({"rows": [{"I9": 2**53 + 1}]}, ["body", "rows", 0, "I9"]),
    "rows: 5 MB string": ({"rows": [{"C6": "a" * 5 * MB}]}, ["body", "rows", 0, "C6"]),
    "rows: null row": ({"rows": [None]}, ["body", "rows", 0]),
    "rows: null list": ({"rows": None}, ["body"]),
    "rows: empty list": ({"rows": []}, ["body", "rows"]),
    "rows: not a list": ({"rows": "I1=1"}, ["body", "rows"]),
    "rows: error in the 3rd row": ({"rows": [ROW, ROW, {**ROW, "C26": "x"}]},
                                   ["body", "rows", 2, "C26"]),
    # lines
    "lines: 38 fields": ({"lines": ["\t".join(LINE.split("\t")[:38])]}, ["body", "lines", 0]),
    "lines: 41 fields": ({"lines": [LABELLED + "\t"]}, ["body", "lines", 0]),
    "lines: empty line": ({"lines": [""]}, ["body", "lines", 0]),
    "lines: two lines in one string": ({"lines": [LINE + "\n" + LINE]}, ["body", "lines", 0]),
    "lines: letters in an integer": ({"lines": [_line(0, "x1")]}, ["body", "lines", 0, "I1"]),
    "lines: non-hex categorical": ({"lines": [_line(13, "ZZZZZZZZ")]},
                                   ["body", "lines", 0, "C1"]),
    "lines: label 2": ({"lines": [_line(0, "2", LABELLED)]}, ["body", "lines", 0, "label"]),
    "lines: nan integer": ({"lines": [_line(4, "nan")]}, ["body", "lines", 0, "I5"]),
    "lines: 5,000-digit integer": ({"lines": [_line(0, "1" * 5000)]},
                                   ["body", "lines", 0, "I1"]),
    "lines: lone surrogate": (_raw('{"lines": ["\\ud800' + "\\t" * 38 + '"]}'),
                              ["body", "lines", 0]),
    "lines: NUL bytes": ({"lines": ["\x00" * 39]}, ["body", "lines", 0]),
    "lines: 5 MB line": ({"lines": ["a" * 5 * MB]}, ["body", "lines", 0]),
    "lines: null line": ({"lines": [None]}, ["body", "lines", 0]),
    "lines: number instead of string": ({"lines": [7]}, ["body", "lines", 0]),
    "lines: empty list": ({"lines": []}, ["body", "lines"]),
    # features
    "features: 38 values": ({"features": [VECTOR[:38]]}, ["body", "features", 0]),
    "features: 40 values": ({"features": [[*VECTOR, 1]]}, ["body", "features", 0]),
    "features: empty vector": ({"features": [[]]}, ["body", "features", 0]),
    "features: null vector": ({"features": [None]}, ["body", "features", 0]),
    "features: flat list": ({"features": VECTOR}, ["body", "features", 0]),
    "features: non-hex at C1": ({"features": [_vector(13, "NOT-HEX!")]},
                                ["body", "features", 0, 13]),
    "features: letters at I2": ({"features": [_vector(1, "two")]}, ["body", "features", 0, 1]),
    "features: NaN at I3": (_raw('{"features": [[1, 2, NaN' + ", null" * 36 + "]]}"),
                            ["body", "features", 0, 2]),
    "features: nested list": ({"features": [[[1]] * 39]}, ["body", "features", 0, 0]),
    # the body as a whole
    "body: invalid JSON": (_raw("{not json"), ["body", 1]),
    "body: truncated JSON": (_raw('{"rows": [{"I1": 1}'), ["body", 19]),
    "body: empty": (_raw(b""), ["body"]),
    "body: invalid UTF-8": (_raw(b'{"rows": [{"C1": "\xff\xfe"}]}'), ["body"]),
    "body: 5,000-digit JSON number": (_raw('{"rows": [{"I1": ' + "9" * 5000 + "}]}"), ["body"]),
    "body: a JSON list": ([ROW], ["body"]),
    "body: a JSON string": ("rows", ["body"]),
    "body: null": (_raw("null"), ["body"]),
    "body: no form": ({}, ["body"]),
    "body: two forms": ({"rows": [ROW], "lines": [LINE]}, ["body"]),
    "body: unknown form": ({"vectors": [VECTOR]}, ["body", "vectors"]),
    "body: text/plain": ((json.dumps({"rows": [ROW]}).encode(), "text/plain"), ["body"]),
    "body: form-encoded": ((b"rows=1", "application/x-www-form-urlencoded"), ["body"]),
    "body: no content type": ((json.dumps({"rows": [ROW]}).encode(), None), ["body"]),
}


def post(api: TestClient, body: Any) -> Any:
    if isinstance(body, tuple):
        content, content_type = body
        headers = {"content-type": content_type} if content_type else {}
        return api.post("/predict", content=content, headers=headers)
    return api.post("/predict", json=body)


def assert_field_level_4xx(response: Any, status: int = 422) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    for marker in NO_TRACE:
        assert marker not in response.text
    body = response.json()
    assert set(body) == {"error", "message", "errors"}
    assert body["error"] == "ValidationError" and body["message"]
    assert body["errors"], body
    for error in body["errors"]:
        assert isinstance(error["loc"], list) and error["loc"][0] == "body", error
        assert isinstance(error["msg"], str) and error["msg"], error
        assert len(error["msg"]) < 300, error          # nothing huge is echoed back
    return list(body["errors"])


@pytest.fixture(scope="module", params=["model", "no model"])
def api(request, tmp_path_factory) -> TestClient:
    """The app over a fake bucket, with a published model or with none."""
    cloud = Cloud(tmp_path_factory.mktemp("registry"))
    if request.param == "model":
        cloud.release(0)
    return make_client(cloud)


@pytest.mark.parametrize("case", list(API_CASES))
def test_bad_request_gets_field_level_422(api, case):
    body, loc = API_CASES[case]

    errors = assert_field_level_4xx(post(api, body))

    assert any(e["loc"] == loc for e in errors), (loc, errors)


@pytest.mark.parametrize("form", ["rows", "lines", "features"])
@pytest.mark.parametrize("n", [10_001, 100_000])
def test_too_many_rows_is_a_422_naming_the_limit(api, form, n):
    one = {"rows": {"I1": 1}, "lines": "\t" * 38, "features": [None] * 39}[form]
    body = {form: [one] * n}
    if len(json.dumps(body)) > MAX_BODY_BYTES:     # refused before it is parsed
        assert_payload_too_large(post(api, body))
        return

    response = post(api, body)

    errors = assert_field_level_4xx(response)
    assert errors == [{"loc": ["body", form],
                       "msg": f"at most 10000 rows per request, got {n}"}]


MAX_BODY_BYTES = 6 * 1024 * 1024


def assert_payload_too_large(response: Any) -> None:
    assert response.status_code == 413, response.text[:300]
    body = response.json()
    assert body["error"] == "PayloadTooLarge"
    assert body["errors"][0]["loc"] == ["body"] and "6,291,456 bytes" in body["message"]


def test_a_body_over_lambdas_6_mb_is_a_413_declared_or_streamed(api):
    big = b'{"lines": ["' + b"1" * MAX_BODY_BYTES + b'"]}'

    assert_payload_too_large(post(api, (big, "application/json")))

    def chunks():                          # no Content-Length: counted while received
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]
    assert_payload_too_large(api.post("/predict", content=chunks(),
                                      headers={"content-type": "application/json"}))
    # just under the limit is parsed and validated as usual (a 422, not a 413)
    small = b'{"lines": ["' + b"1" * (MAX_BODY_BYTES - 100) + b'"]}'
    assert post(api, (small, "application/json")).status_code == 422


def test_the_row_limit_is_a_setting(tmp_path):
    cloud = Cloud(tmp_path)
    cloud.release(0)
    api = make_client(cloud, max_rows=3)

    assert post(api, {"rows": [ROW] * 3}).status_code == 200
    errors = assert_field_level_4xx(post(api, {"rows": [ROW] * 4}))
    assert errors[0]["msg"] == "at most 3 rows per request, got 4"


def test_wrong_content_type_says_what_to_send(api):
    errors = assert_field_level_4xx(post(api, (b'{"rows": [{}]}', "text/plain")))

    assert "Content-Type: application/json" in errors[0]["msg"]
    assert "text/plain" in errors[0]["msg"]


def test_nulls_empty_strings_and_empty_rows_mean_missing_not_errors(tmp_path):
    cloud = Cloud(tmp_path)
    cloud.release(0)
    api = make_client(cloud)
    all_missing = tiny_predictor(0).predict_table(criteo.rows_to_table([{}]))[0]

    answers = [post(api, body) for body in (
        {"rows": [{}]}, {"rows": [dict.fromkeys(FEATURE_COLUMNS)]},
        {"rows": [dict.fromkeys(FEATURE_COLUMNS, "")]}, {"features": [[None] * 39]},
        {"features": [[""] * 39]}, {"lines": ["\t" * 38]}, {"lines": ["0" + "\t" * 39]})]

    assert [a.status_code for a in answers] == [200] * 7
    assert {round(a.json()["predictions"][0], 9) for a in answers} == {round(all_missing, 9)}


def test_every_value_the_validator_accepts_is_predicted(tmp_path):
    """Valid input never fails after validation: integers up to int64 as strings and
    lines, +-(2**53 - 1) as JSON numbers, leading zeros, CRLF, a label on the line."""
    cloud = Cloud(tmp_path)
    cloud.release(0)
    api = make_client(cloud)
    big = [str(2**63 - 1), str(-(2**63)), "0" * 5000 + "3", str(2**53 + 1)]
    rows = [{"I1": v} for v in big] + [{"I2": 2**53 - 1}, {"I3": -(2**53 - 1)}, {"I4": 7.0}]
    lines = [_line(0, v) for v in big] + [LABELLED + "\r\n", LINE + "\n"]

    for body in ({"rows": rows}, {"lines": lines}, {"features": [_vector(0, v) for v in big]}):
        response = post(api, body)
        assert response.status_code == 200, response.text[:300]
        predictions = response.json()["predictions"]
        assert len(predictions) == len(next(iter(body.values())))
        assert np.all(np.isfinite(predictions)) and all(0 < p < 1 for p in predictions)
