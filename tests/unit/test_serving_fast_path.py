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


def test_the_predict_route_reads_bodies_with_the_fast_parser(monkeypatch):
    from fastapi.testclient import TestClient

    from tests.unit.test_serving_app import Cloud, make_client

    calls: list[int] = []
    real = fast_json.parse_json

    def counting(body: bytes) -> Any:
        calls.append(len(body))
        return real(body)

    monkeypatch.setattr(fast_json, "parse_json", counting)
    import tempfile
    from pathlib import Path

    cloud = Cloud(Path(tempfile.mkdtemp()))
    cloud.release(0)
    api: TestClient = make_client(cloud)
    body = json.dumps({"rows": ROWS}).encode()
    response = api.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.json()["num_samples"] == len(ROWS)
    assert calls == [len(body)]
