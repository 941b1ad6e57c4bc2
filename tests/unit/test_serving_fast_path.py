"""The predict request path's shortcuts give what the full path gives: pydantic-core's
JSON parser the same objects and errors as `json`, the usual-shape shortcut of
PredictRequest the same request as item-by-item validation (and pydantic's own errors
for anything else), and the route uses both."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pydantic
import pytest

from ctr.schema import FEATURE_COLUMNS
from ctr.serving import fast_json, schemas
from tests.unit.serving_support import sample_table

EDGE_DOCUMENTS = [
    b'{"a": 1, "a": 2}', b"NaN", b"[Infinity, -Infinity]", b"-0.0", b"1e400", b"-1e400",
    b"123456789012345678901234567890", b'"\\ud800"', b'"\\u0000"', b"1.7976931348623157e308",
    b"5e-324", b"0.1", b"[1.0, 2.50, 3e2, 1E-7]", '"é"'.encode(), '{"x": "é"}'.encode("utf-16"),
    b'\xef\xbb\xbf{"a":1}', b'{"rows": [{"I1": 3.0}]}', b"  [ ]  ", b'{"a":true,"b":null}',
    b"9223372036854775808", b"1" * 5000, b"0.30000000000000004", b"[1,]", b'{"a":1,}', b"'x'",
    b"01", b'"\t"', b"{not json", b'{"rows": [{"I1": 1}', b"", b'{"C1": "\xff\xfe"}',
]


def outcome(parse: Any, body: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", parse(body))
    except ValueError as err:
        return ("error", type(err).__name__, getattr(err, "pos", None), getattr(err, "msg", None))


def same(a: Any, b: Any) -> bool:
    """Equal including types, key order, float bits (NaN = NaN, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or repr(a) == repr(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("body", EDGE_DOCUMENTS)
def test_parse_json_is_json_loads_on_edge_cases(body):
    want, got = outcome(json.loads, body), outcome(fast_json.parse_json, body)
    assert got[0] == want[0]
    if want[0] == "ok":
        assert same(got[1], want[1])
    else:                     # the same exception, position and message FastAPI reports
        assert got == want


def random_document(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rnd.randint(-2**70, 2**70)
    if kind == 1:
        return rnd.choice([rnd.random() * 10 ** rnd.randint(-320, 308), rnd.uniform(-1e6, 1e6)])
    if kind == 2:
        return "".join(chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0x80, 0xD7FF),
                                       rnd.randrange(0x10000, 0x10FFFF)]))
                       for _ in range(rnd.randrange(10)))
    if kind == 3:
        return rnd.choice([True, False, None])
    if kind == 4:
        return rnd.randrange(100)
    if kind == 5:
        return [random_document(rnd, depth + 1) for _ in range(rnd.randrange(5))]
    return {"".join(chr(rnd.randrange(32, 0x2FF)) for _ in range(rnd.randrange(6))):
            random_document(rnd, depth + 1) for _ in range(rnd.randrange(5))}


def test_parse_json_is_json_loads_on_random_documents_and_numbers():
    rnd = random.Random(17)
    for _ in range(3000):
        doc = random_document(rnd)
        for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False)):
            assert same(fast_json.parse_json(text.encode()), json.loads(text)), text[:200]
    for _ in range(20000):     # decimal texts json.dumps would not write: rounding
        text = (rnd.choice(["", "-"]) + str(rnd.randrange(10 ** rnd.randrange(1, 25)))
                + "." + str(rnd.randrange(10 ** rnd.randrange(1, 25)))
                + rnd.choice(["", f"e{rnd.randint(-330, 310)}"]))
        assert same(fast_json.parse_json(text.encode()), json.loads(text)), text


ROWS = sample_table(50, seed=5).select(list(FEATURE_COLUMNS)).to_pylist()


@pytest.mark.parametrize("data", [
    {"rows": ROWS}, {"rows": [{}]}, {"rows": [{"I1": "3", "label": 1}]},
    {"lines": ["\t" * 38]}, {"features": [[None] * 39, [1] * 39]},
])
def test_the_usual_shape_is_taken_as_parsed(data):
    request = schemas.PredictRequest.model_validate(data)
    form = next(iter(data))
    assert request.form == form and getattr(request, form) is data[form]   # no copy
    assert request.model_fields_set == {form}
    # equal to what a copy through the item validators would be
    assert request.model_dump() == json.loads(json.dumps(
        {f: data.get(f) for f in schemas.INPUT_FORMS}))


@pytest.mark.parametrize("data, loc", [
    ({"rows": [ROWS[0], 5]}, ("rows", 1)),
    ({"rows": []}, ("rows",)),
    ({"lines": ["x", 7]}, ("lines", 1)),
    ({"features": [[1] * 39, "x"]}, ("features", 1)),
    ({"rows": ROWS[:1], "lines": ["x"]}, ()),
    ({"vectors": [[1]]}, ("vectors",)),
    ({}, ()),
])
def test_any_other_shape_gets_pydantics_errors(data, loc):
    with pytest.raises(pydantic.ValidationError) as caught:
        schemas.PredictRequest.model_validate(data)
    assert any(tuple(e["loc"]) == loc for e in caught.value.errors()), caught.value.errors()


def _api() -> Any:
    import tempfile
    from pathlib import Path

    from tests.unit.test_serving_app import Cloud, make_client

    cloud = Cloud(Path(tempfile.mkdtemp()))
    cloud.release(0)
    return make_client(cloud)


def test_the_predict_route_reads_bodies_with_the_fast_readers(monkeypatch):
    """A large rows body is read column-wise (never as Python objects); a small one,
    or one the column reader steps aside from, by pydantic-core's parser; all three
    answer the same predictions."""
    calls: list[str] = []
    real_parse, real_rows = fast_json.parse_json, fast_json.rows_body_table

    def parse(body: bytes) -> Any:
        calls.append("parse_json")
        return real_parse(body)

    def rows_table(body: bytes) -> Any:
        table = real_rows(body)
        calls.append("columns" if table is not None else "columns: no")
        return table

    monkeypatch.setattr(fast_json, "parse_json", parse)
    monkeypatch.setattr(fast_json, "rows_body_table", rows_table)
    api = _api()
    headers = {"content-type": "application/json"}
    answers = {}
    for name, body in [("large", json.dumps({"rows": ROWS}).encode()),
                       ("small", json.dumps({"rows": ROWS[:3]}).encode()),
                       ("label", json.dumps({"rows": [dict(r, label=0) for r in ROWS]}).encode())]:
        calls.clear()
        response = api.post("/predict", content=body, headers=headers)
        assert response.status_code == 200, response.text
        answers[name] = response.json()["predictions"]
        assert calls == {"large": ["columns"], "small": ["columns: no", "parse_json"],
                         "label": ["columns: no", "parse_json"]}[name]
    assert answers["small"] == answers["large"][:3]
    assert answers["label"] == answers["large"]
    assert len(json.dumps({"rows": ROWS[:3]})) < fast_json.ROWS_BODY_MIN_BYTES < len(
        json.dumps({"rows": ROWS[:16]}))         # 16 rows: where the fast paths start


# --------------------------------------------------------------------------- rows_body_table

BIG = sample_table(400, seed=9).select(list(FEATURE_COLUMNS)).to_pylist()


def usual_outcome(body: bytes) -> tuple[Any, ...]:
    """What the request path without the column reader makes of a body: a table, or
    the kind of refusal (JSON error, shape error, value error)."""
    from ctr import criteo
    from ctr.errors import ValidationError

    try:
        data = json.loads(body)
    except ValueError:
        return ("not json",)
    try:
        request = schemas.PredictRequest.model_validate(data)
    except pydantic.ValidationError:
        return ("bad shape",)
    if request.form != "rows":
        return ("other form",)
    try:
        return ("table", criteo.rows_to_table(request.rows or []))
    except ValidationError:
        return ("bad values",)


def agrees(body: bytes) -> bool:
    """The column reader either steps aside or gives exactly the usual table."""
    table = fast_json.rows_body_table(body)
    if table is None:
        return True
    usual = usual_outcome(body)
    return usual[0] == "table" and table.equals(usual[1]) and table.schema == usual[1].schema


@pytest.mark.parametrize("layout", [
    {}, {"separators": (",", ":")}, {"indent": 2}, {"indent": "\t"}, {"ensure_ascii": False}])
def test_valid_rows_bodies_are_read_into_the_usual_table(layout):
    rows = [dict(reversed(list(r.items()))) if i % 3 else r for i, r in enumerate(BIG)]
    rows[5] = {}                                                  # all missing
    rows[6] = {k: v for k, v in BIG[6].items() if v is not None}  # absent keys
    rows[7] = {**BIG[7], "C3": "", "C4": None}                    # "" is missing too
    body = json.dumps({"rows": rows}, **layout).encode()
    table = fast_json.rows_body_table(body)
    assert table is not None
    assert table.num_rows == len(rows)
    usual = usual_outcome(body)
    assert usual[0] == "table" and table.equals(usual[1])


def _body_with(change: Any) -> bytes:
    rows = [dict(r) for r in BIG[:40]]
    change(rows)
    return json.dumps({"rows": rows}).encode()


def _set(i: int, key: str, value: Any) -> Any:
    return lambda rows: rows[i].__setitem__(key, value)


STEP_ASIDE = {
    "a string integer": _body_with(_set(3, "I2", "7")),
    "an integral float": _body_with(_set(3, "I2", 7.0)),
    "a fraction": _body_with(_set(3, "I2", 7.5)),
    "a bool": _body_with(_set(3, "I2", True)),
    "beyond 2**53": _body_with(_set(3, "I2", 2**53)),
    "beyond int64": _body_with(_set(3, "I2", 2**63)),
    "a number as a categorical": _body_with(_set(3, "C2", 12345678)),
    "upper-case hex": _body_with(_set(3, "C2", "ABCDEF12")),
    "seven hex characters": _body_with(_set(3, "C2", "abcdef1")),
    "a label": _body_with(_set(3, "label", 1)),
    "an unknown key": _body_with(_set(3, "I14", 1)),
    "a null row": _body_with(lambda rows: rows.__setitem__(4, None)),
    "a list row": _body_with(lambda rows: rows.__setitem__(4, [1, 2])),
    "no rows": json.dumps({"rows": []}).encode().ljust(9000),
    "rows null": json.dumps({"rows": None}).encode().ljust(9000),
    "two forms": _body_with(lambda rows: None)[:-1] + b', "lines": ["x"]}',
    "a second document": _body_with(lambda rows: None) * 2,
    "a second document on its own line": _body_with(lambda rows: None) + b"\n{}",
    "trailing text": _body_with(lambda rows: None) + b" x",
    "a duplicated key": _body_with(lambda rows: None).replace(b'"I1": ', b'"I1": 1, "I1": ', 1),
    "a trailing comma": _body_with(lambda rows: None).replace(b"}]}", b"},]}"),
    "NaN": _body_with(_set(3, "I2", float("nan"))),
    "cut short": _body_with(lambda rows: None)[:-3],
    "not UTF-8": _body_with(_set(3, "C2", "x")).replace(b'"x"', b'"\xff\xfe"'),
    "a lone surrogate": _body_with(_set(3, "C2", "x")).replace(b'"x"', b'"\\ud800"'),
    "UTF-16": _body_with(lambda rows: None).decode().encode("utf-16"),
    "a key beside rows": _body_with(lambda rows: None)[:-1] + b', "explain": true}',
}


@pytest.mark.parametrize("case", list(STEP_ASIDE))
def test_the_column_reader_steps_aside_from_anything_unusual(case):
    """Everything the usual path would refuse or read differently: the column reader
    answers None (the body is then read as before, so the errors are the usual ones)."""
    body = STEP_ASIDE[case]
    assert len(body) >= fast_json.ROWS_BODY_MIN_BYTES
    assert fast_json.rows_body_table(body) is None


def test_a_utf8_bom_is_read_as_json_loads_reads_it():
    """`json.loads` of bytes skips a UTF-8 byte order mark (some Windows clients send
    one); the column reader reads such a body into the same table."""
    body = b"\xef\xbb\xbf" + _body_with(lambda rows: None)
    table = fast_json.rows_body_table(body)
    assert table is not None and table.num_rows == 40
    assert agrees(body)


MUTATIONS = [b" ", b"\n", b"\t", b",", b":", b"{", b"}", b"[", b"]", b'"', b"\\", b"0", b"1",
             b"9", b"-", b".", b"e", b"E", b"+", b"a", b"f", b"A", b"n", b"null", b"true", b"1.0",
             b'""', b'"I1"', b'"C1"', b"\\u0031", b"\xc3\xa9", b"\xff", b"\x00"]


def test_mutated_bodies_never_read_differently():
    """Byte-level mutations of a valid body (insertions, deletions, replacements of
    structural characters, digits, letters, escapes, invalid UTF-8): whenever the
    column reader accepts the result, it is valid JSON and the usual path gives the
    same table. Enough of them stay readable that acceptance itself is exercised."""
    rnd = random.Random(23)
    base = json.dumps({"rows": BIG[:30]}).encode()
    accepted = 0
    for _ in range(1500):
        body = bytearray(base)
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randrange(len(body))
            roll = rnd.random()
            if roll < 0.3:
                del body[at:at + rnd.randint(1, 3)]
            elif roll < 0.6:
                body[at:at] = rnd.choice(MUTATIONS)
            elif body[at:at + 1].isdigit():
                body[at:at + 1] = rnd.choice(b"0123456789").to_bytes(1, "big")
            else:
                body[at:at + 1] = rnd.choice(MUTATIONS)
        accepted += fast_json.rows_body_table(bytes(body)) is not None
        assert agrees(bytes(body)), bytes(body)[:200]
    assert accepted >= 50, accepted
