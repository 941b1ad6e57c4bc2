"""ctr.criteo: Criteo TSV parsing/validation, formatting, API input."""

from __future__ import annotations

import functools
import random
from collections import Counter

import pyarrow as pa
import pytest

from ctr import criteo, synth
from ctr.errors import ValidationError
from ctr.schema import FEATURE_COLUMNS, PARQUET_SCHEMA


@functools.cache
def _valid_lines(n: int = 200, seed: int = 3) -> list[bytes]:
    table, _ = synth.generate_table(n, seed)
    return criteo.table_to_tsv(table).split(b"\n")[:-1]


def _line(label: str = "0", ints: list[str] | None = None, cats: list[str] | None = None) -> bytes:
    ints = ints if ints is not None else ["1"] * 13
    cats = cats if cats is not None else ["68fd1e64"] * 26
    return "\t".join([label, *ints, *cats]).encode()


def _with_int(value: str, column: int = 2) -> bytes:
    ints = ["1"] * 13
    ints[column] = value
    return _line(ints=ints)


def _with_cat(value: str, column: int = 2) -> bytes:
    cats = ["68fd1e64"] * 26
    cats[column] = value
    return _line(cats=cats)


# (line, substring expected in the reject reason); None = the line is valid
CORPUS: list[tuple[bytes, str | None]] = [
    (_line(), None),
    (_line(ints=[""] * 13, cats=[""] * 26), None),                  # everything missing
    (_with_int("-3"), None),
    (_with_int("9223372036854775807"), None),                        # int64 max
    (_with_int("-9223372036854775808"), None),                       # int64 min
    (_with_int("0000000000000000000000042"), None),                  # long but in range
    (_with_int("-0"), None),
    (_with_int("007"), None),
    (_line(label="1"), None),
    (_line()[: len(_line()) // 2], "tab-separated fields"),          # truncated
    (_line() + b"\t", "expected 40 tab-separated fields, got 41"),   # extra tab
    (_line() + b"\tdeadbeef", "got 41"),
    (b"", "empty line"),
    (_with_cat("zzzzzzzz"), "C3: must be 8 lowercase hex"),
    (_with_cat("68FD1E64"), "C3: must be 8 lowercase hex"),          # upper case
    (_with_cat("68fd1e6"), "C3: must be 8 lowercase hex"),           # 7 chars
    (_with_cat("68fd1e645"), "C3: must be 8 lowercase hex"),         # 9 chars
    (_with_cat("-8fd1e64"), "C3: must be 8 lowercase hex"),          # a dash in a hex field
    (_with_cat('"8fd1e6"'), "C3: must be 8 lowercase hex"),          # quotes are not special
    (_with_int("9223372036854775808"), "I3: integer out of the int64 range"),
    (_with_int("123456789012345678901234567890"), "out of the int64 range"),
    (_with_int("1.5"), "I3: must be an integer"),
    (_with_int("1e3"), "I3: must be an integer"),
    (_with_int(" 5"), "I3: must be an integer"),                     # Arrow would trim it
    (_with_int("0x10"), "I3: must be an integer"),                   # Arrow would read 16
    (_with_int("+5"), "I3: must be an integer"),
    (_with_int("-"), "I3: must be an integer"),
    (_with_int("NA"), "I3: must be an integer"),
    (_with_int("\u0661"), "I3: must be an integer"),                 # non-ASCII digit
    (_line(label="2"), "label: must be 0 or 1"),
    (_line(label=""), "label: must be 0 or 1"),
    (_line(label="-1"), "label: must be 0 or 1"),
    (b"\xff\xfe\x00garbage\x80\x81", "invalid UTF-8"),
    (_line()[:30] + b"\xc3\x28" + _line()[32:], "invalid UTF-8"),
    (b"\x00" * 50, "tab-separated fields"),
    (_line()[:20] + b"\r" + _line()[20:], "must be an integer"),    # a bare CR inside a line
]


def _block(lines: list[bytes], ending: bytes = b"\n") -> bytes:
    return b"".join(line + ending for line in lines)


def _result_lines(result: criteo.ParseResult) -> list[bytes]:
    return criteo.table_to_tsv(result.table).split(b"\n")[:-1] if result.table.num_rows else []


def test_clean_block_takes_the_fast_path_and_round_trips() -> None:
    table, _ = synth.generate_table(500, seed=3)
    data = criteo.table_to_tsv(table)
    result = criteo.parse_tsv(data)
    assert not result.careful
    assert result.rejects == []
    assert result.lines == 500
    assert result.table.schema.equals(PARQUET_SCHEMA)
    assert result.table.equals(table.cast(PARQUET_SCHEMA))


@pytest.mark.parametrize(("line", "expected"), CORPUS)
def test_each_corpus_line_alone(line: bytes, expected: str | None) -> None:
    """Alone and between valid lines: valid lines are kept, invalid ones rejected with a
    reason, and the fast path (tried first) never accepts what the per-line check refuses."""
    valid = _valid_lines(20)
    for block in ([line], [*valid[:10], line, *valid[10:]]):
        result = criteo.parse_tsv(_block(block))
        assert result.lines == len(block)
        if expected is None:
            assert result.rejects == []
            assert result.table.num_rows == len(block)
        else:
            assert [r.text for r in result.rejects] == [line]
            assert expected in result.rejects[0].reason
            assert result.rejects[0].line_no == block.index(line) + 1
            assert result.table.num_rows == len(block) - 1


def test_corpus_together_keeps_every_valid_line_and_rejects_every_invalid_one() -> None:
    valid = _valid_lines(300)
    lines = valid[:150] + [line for line, _ in CORPUS] + valid[150:]
    result = criteo.parse_tsv(_block(lines))
    expected_bad = [line for line, reason in CORPUS if reason is not None]
    assert result.careful
    assert sorted(r.text for r in result.rejects) == sorted(expected_bad)
    assert result.table.num_rows == len(lines) - len(expected_bad)
    assert all(r.reason for r in result.rejects)
    for reject in result.rejects:
        assert lines[reject.line_no - 1] == reject.text
    # every valid synthetic line comes back byte for byte
    assert Counter(_result_lines(result)) >= Counter(valid)


def test_crlf_line_endings_parse_like_lf() -> None:
    valid = _valid_lines(50)
    lf = criteo.parse_tsv(_block(valid))
    crlf = criteo.parse_tsv(_block(valid, b"\r\n"))
    assert crlf.rejects == []
    assert crlf.table.equals(lf.table)


def test_empty_input_and_last_line_without_newline() -> None:
    empty = criteo.parse_tsv(b"")
    assert (empty.lines, empty.table.num_rows, empty.rejects) == (0, 0, [])
    assert empty.table.schema.equals(PARQUET_SCHEMA)
    valid = _valid_lines(5)
    result = criteo.parse_tsv(b"\n".join(valid))          # no final newline
    assert result.lines == 5 and result.table.num_rows == 5
    only_newlines = criteo.parse_tsv(b"\n\n\n")
    assert only_newlines.lines == 3
    assert [r.reason for r in only_newlines.rejects] == ["empty line"] * 3


def mutated_lines(rng: random.Random, n: int) -> list[bytes]:
    """`n` valid lines with 0-2 bytes each replaced by one of a troublesome alphabet
    (digits, hex, x, signs, space, tab, CR, quote, upper case, NUL, non-UTF-8)."""
    alphabet = b"0123456789abcdefx-+ \t\r.\"AZ\x00\xff\xc3"
    lines = []
    for line in _valid_lines(n):
        mutated = bytearray(line)
        for _ in range(rng.choice([0, 1, 1, 2])):
            mutated[rng.randrange(len(mutated))] = rng.choice(alphabet)
        lines.append(bytes(mutated).replace(b"\n", b""))
    return lines


def test_random_mutations_agree_with_the_per_line_authority() -> None:
    """Fuzz: mutate valid lines byte-wise; whatever tier runs, a line is rejected exactly
    when `line_problems` finds a problem."""
    rng = random.Random(11)
    lines = mutated_lines(rng, 400)
    bad = {i for i, line in enumerate(lines) if criteo.line_problems(line.removesuffix(b"\r"))}
    assert 50 < len(bad) < len(lines)                     # the fuzz produced both kinds
    together = criteo.parse_tsv(_block(lines))
    assert {r.line_no - 1 for r in together.rejects} == bad
    for i in rng.sample(range(len(lines)), 150):          # fast path on single lines
        alone = criteo.parse_tsv(lines[i] + b"\n")
        assert bool(alone.rejects) == (i in bad), lines[i]


def test_reject_round_trips_through_its_file_format() -> None:
    reject = criteo.Reject(7, "invalid UTF-8", b"\xff\x00a\tb\tc")
    assert criteo.Reject.from_bytes(reject.to_bytes()) == reject
    long = criteo.line_problems(_line(ints=["x"] * 13))
    assert len(long) == 13
    assert "and 10 more" in criteo.describe(long)
    assert "\t" not in criteo.describe(long) and "\n" not in criteo.describe(long)


def test_table_to_lines_round_trip() -> None:
    table, _ = synth.generate_table(30, seed=3)
    lines = criteo.table_to_lines(table)
    assert len(lines) == 30
    assert all(line.count("\t") == 39 for line in lines)
    back = criteo.parse_tsv(("\n".join(lines) + "\n").encode())
    assert back.table.equals(table.cast(PARQUET_SCHEMA))
    features = criteo.table_to_lines(table, with_label=False)
    assert all(line.count("\t") == 38 for line in features)


# --- API input -----------------------------------------------------------------------

def test_rows_to_table_builds_the_feature_schema() -> None:
    rows = [{"I1": 3, "I2": -1, "I3": "42", "I4": 7.0, "I5": None, "I6": "", "C1": "68fd1e64",
             "C2": "", "C3": None, "label": 1}, {}]
    table = criteo.rows_to_table(rows)
    assert table.schema.equals(criteo.FEATURE_SCHEMA)
    assert table.column_names == list(FEATURE_COLUMNS)
    first = table.to_pylist()[0]
    assert (first["I1"], first["I2"], first["I3"], first["I4"]) == (3, -1, 42, 7)
    assert first["I5"] is None and first["I6"] is None
    assert first["C1"] == "68fd1e64" and first["C2"] is None and first["C3"] is None
    assert all(v is None for v in table.to_pylist()[1].values())


def test_rows_to_table_reports_every_bad_field() -> None:
    rows = [{"I1": 1.5, "C3": "xyz", "I2": True}, "not a dict",
            {"I14": 1, "I3": 2**70, "C1": 12345678}]
    with pytest.raises(ValidationError) as caught:
        criteo.rows_to_table(rows)  # type: ignore[arg-type]
    errors = caught.value.details["errors"]
    by_loc = {tuple(e["loc"]): e["msg"] for e in errors}
    assert by_loc[("rows", 0, "I1")] == criteo.MSG_INT
    assert by_loc[("rows", 0, "C3")] == criteo.MSG_CAT
    assert by_loc[("rows", 0, "I2")] == criteo.MSG_INT            # bools are not integers
    assert by_loc[("rows", 1)] == "must be an object"
    assert by_loc[("rows", 2, "I14")] == "unknown field"
    assert by_loc[("rows", 2, "I3")] == criteo.MSG_JSON_RANGE       # past 2**53: send a string
    assert by_loc[("rows", 2, "C1")] == criteo.MSG_CAT
    assert caught.value.to_dict()["error"] == "ValidationError"


def test_lines_to_table_with_and_without_label() -> None:
    table, _ = synth.generate_table(6, seed=3)
    with_label = criteo.table_to_lines(table)
    without = criteo.table_to_lines(table, with_label=False)
    mixed = [with_label[0], without[1], with_label[2] + "\r\n", without[3] + "\n"]
    result, errors = criteo.lines_to_table(mixed)
    assert errors == []
    assert result.schema.equals(criteo.FEATURE_SCHEMA)
    assert result.equals(table.select(list(FEATURE_COLUMNS)).slice(0, 4).cast(
        criteo.FEATURE_SCHEMA))


def test_lines_to_table_field_level_errors() -> None:
    table, _ = synth.generate_table(3, seed=3)
    good = criteo.table_to_lines(table, with_label=False)
    fields = good[1].split("\t")
    fields[15] = "nothex!!"                                          # C3
    fields[0] = "abc"                                                # I1
    labelled = "7\t" + good[2]
    lines: list[str] = [good[0], "\t".join(fields), labelled, "1\t2\t3", "a\nb"]
    result, errors = criteo.lines_to_table(lines)
    assert result.num_rows == 1
    locs = [e["loc"] for e in errors]
    assert ["lines", 1, "C3"] in locs and ["lines", 1, "I1"] in locs
    assert ["lines", 2, "label"] in locs
    assert ["lines", 3] in locs and ["lines", 4] in locs
    c3 = next(e for e in errors if e["loc"] == ["lines", 1, "C3"])
    assert c3["msg"] == criteo.MSG_CAT and c3["input"] == "nothex!!"


def test_feature_schema_is_the_parquet_schema_without_label() -> None:
    assert criteo.FEATURE_SCHEMA.names == list(FEATURE_COLUMNS)
    for field in criteo.FEATURE_SCHEMA:
        assert PARQUET_SCHEMA.field(field.name).type == field.type
    assert isinstance(criteo.FEATURE_SCHEMA, pa.Schema)
