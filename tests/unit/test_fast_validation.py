"""The column-wise fast paths of API input (`ctr.criteo`: rows, lines, features) agree
with the per-field authority: same table for valid input, and for anything else they
step aside so the same field-level errors come out."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from ctr import criteo
from ctr.errors import ValidationError
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS
from tests.unit.serving_support import sample_table

TABLE = sample_table().slice(0, 300).select(list(FEATURE_COLUMNS))
ROWS = TABLE.to_pylist()

ODD_INTS: list[Any] = [True, False, 3.0, 2.5, float("nan"), "7", " 8 ", "-0", "x", "",
                       None, 2**53, -(2**53), 2**53 - 1, 2**63, "9" * 30, [1], {"a": 1}]
ODD_CATS: list[Any] = ["ABCDEF12", "abcdefg1", "abc", "", None, 12345678, True,
                       "abcdef1\u00e9", "abcdef12 ", ["x"], "0123456789"]


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("table", fn(*args))
    except ValidationError as err:
        return ("errors", err.message, err.details["errors"])


def same(a: Any, b: Any) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "table":
        return a[1].equals(b[1]) and a[1].schema == b[1].schema
    return a == b


def test_valid_rows_take_the_fast_path_and_give_the_same_table():
    fast = criteo._rows_fast(ROWS)
    assert fast is not None
    assert fast.equals(criteo._rows_to_table_per_field(ROWS))
    assert criteo.rows_to_table([{}]).equals(criteo._rows_to_table_per_field([{}]))
    with_label = [dict(r, label=1) for r in ROWS[:3]]
    assert criteo.rows_to_table(with_label).equals(criteo._rows_to_table_per_field(with_label))


@pytest.mark.parametrize("seed", range(40))
def test_fuzzed_rows_agree_with_the_per_field_path(seed):
    rng = random.Random(seed)
    rows: list[Any] = [dict(r) for r in rng.sample(ROWS, 20)]
    for _ in range(rng.randint(1, 4)):
        row = rows[rng.randrange(len(rows))]
        roll = rng.random()
        if not isinstance(row, dict):
            continue
        if roll < 0.4:
            row[rng.choice(INT_COLUMNS)] = rng.choice(ODD_INTS)
        elif roll < 0.8:
            row[rng.choice(CAT_COLUMNS)] = rng.choice(ODD_CATS)
        elif roll < 0.9:
            row["I99"] = 1
        else:
            rows[rng.randrange(len(rows))] = rng.choice([[1, 2], "row", None, 7])
    assert same(outcome(criteo.rows_to_table, rows),
                outcome(criteo._rows_to_table_per_field, rows))


def lines_of(rows: list[dict[str, Any]], label: bool) -> list[str]:
    table = pa.Table.from_pylist(rows, schema=criteo.FEATURE_SCHEMA)
    lines = criteo.table_to_lines(table, with_label=False)
    return [f"1\t{line}" for line in lines] if label else lines


@pytest.mark.parametrize("label", [True, False])
def test_valid_lines_take_the_fast_path(label):
    lines = lines_of(ROWS, label)
    fast = criteo._lines_fast(lines)
    assert fast is not None and fast.equals(TABLE)


@pytest.mark.parametrize("seed", range(30))
def test_fuzzed_lines_agree_with_the_per_line_path(seed, monkeypatch):
    rng = random.Random(seed)
    lines: list[Any] = lines_of(rng.sample(ROWS, 15), label=rng.random() < 0.5)
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(lines))
        lines[i] = rng.choice([
            lines[i] + "\tx", lines[i].replace("\t", "\t-", 1), "1\t" + lines[i],
            lines[i] + "\n", lines[i] + "\r\n", lines[i].upper(), "", 5, None,
            lines[i].replace("\t", "\t\ud800", 1), lines[i][2:] if lines[i][:2] in
            ("0\t", "1\t") else lines[i]])
    fast = criteo.lines_to_table(lines)
    monkeypatch.setattr(criteo, "_lines_fast", lambda _lines: None)
    slow = criteo.lines_to_table(lines)
    assert fast[1] == slow[1]
    assert fast[0].equals(slow[0])


def test_features_fast_path_agrees_and_steps_aside():
    vectors = [[r[c] for c in FEATURE_COLUMNS] for r in ROWS]
    fast = criteo.features_to_table(vectors)
    assert fast is not None and fast.equals(TABLE)
    for odd in (True, 2.5, "7", "ABCDEF12", 2**60):
        bad = [list(v) for v in vectors[:20]]
        bad[1][0 if not isinstance(odd, str) or odd == "7" else 20] = odd
        assert criteo.features_to_table(bad) is None
    assert criteo.features_to_table([vectors[0][:38]] * 20) is None
    assert criteo.features_to_table(vectors[:3]) is None      # small: per-field is cheaper
    assert criteo.features_to_table(vectors[:criteo.FAST_PATH_MIN_ROWS]) is not None
