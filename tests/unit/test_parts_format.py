"""Parquet parts, format version 2: categoricals as uint32 (`ctr.cathash`,
`ctr.schema.PART_SCHEMA`), parsed by `ctr.criteo.parse_part`, and every reader taking
parts of both versions."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctr import aggregate, cathash, criteo, synth
from ctr.features import FeatureTransform
from ctr.monitoring.baseline import build_baseline, cat_counts
from ctr.schema import (
    CAT_COLUMNS,
    PARQUET_SCHEMA,
    PART_SCHEMA,
    part_version,
    read_part,
    to_part,
    to_record,
)
from tests.synth_parts import parquet_bytes
from tests.unit.test_criteo import CORPUS, _block, _line, _valid_lines, mutated_lines

HEX = "0123456789abcdef"


# --------------------------------------------------------------------------- uint32 <-> hex

def _hex_samples() -> list[str]:
    """Every hex digit at every position, the extremes, and random values."""
    rng = random.Random(5)
    values = ["00000000", "ffffffff", "7fffffff", "80000000", "00000001", "10000000"]
    values += [("0" * pos + d + "0" * 7)[:8] for pos in range(8) for d in HEX]
    values += ["".join(rng.choice(HEX) for _ in range(8)) for _ in range(5000)]
    return values


def test_hex_to_uint32_and_back_is_lossless_for_everything_the_parser_accepts() -> None:
    """The parser accepts exactly 8 characters of [0-9a-f] (or empty = missing): each is
    one uint32 and comes back as the same 8 characters, through every conversion."""
    text = _hex_samples()
    assert all(criteo.field_problem("C1", v) is None for v in text)
    strings = pa.array([*text, None], pa.string())
    numbers = cathash.from_hex(strings)
    assert numbers.type == pa.uint32()
    assert numbers.to_pylist() == [*(int(v, 16) for v in text), None]
    assert cathash.to_hex(numbers).to_pylist() == [*text, None]
    # the reader's fixed-width path gives the same numbers
    fixed = pa.array([v.encode() for v in text] + [None], pa.binary(8))
    decoded = cathash.from_fixed8([fixed])
    assert decoded is not None and decoded[0].equals(numbers)
    # and every uint32 is 8 characters that the parser accepts
    rng = np.random.default_rng(1)
    every = pa.array(np.r_[0, 2**32 - 1, rng.integers(0, 2**32, 20_000)].astype(np.uint32))
    formatted = cathash.to_hex(every).to_pylist()
    assert formatted == [f"{v:08x}" for v in every.to_pylist()]
    assert all(criteo.field_problem("C1", v) is None for v in formatted)
    assert cathash.from_hex(pa.array(formatted)).equals(every)


def test_what_the_parser_refuses_is_not_converted() -> None:
    """Upper case, other lengths, any byte outside [0-9a-f] at any position: refused by
    the parser and by the conversions (never silently turned into a number)."""
    for value in ("68FD1E64", "68fd1e6", "68fd1e645", "-8fd1e64", "0x8fd1e6", "g0000000"):
        assert criteo.field_problem("C1", value) is not None
        with pytest.raises(ValueError, match="not a categorical hash"):
            cathash.from_hex(pa.array([value]))
    for position in range(8):
        for byte in range(256):
            if bytes([byte]) in HEX.encode():
                continue
            value = bytearray(b"0123abcd")
            value[position] = byte
            column = pa.array([b"00000000", bytes(value)], pa.binary(8))
            assert cathash.from_fixed8([column]) is None, (position, byte)
            assert cathash.decode_values(b"00000000" + bytes(value)) is None, (position, byte)
            assert not cathash.hex_keys(pa.array([bytes(value).decode("latin-1")]))[2].any()


def test_values_back_to_back_decode_in_one_call() -> None:
    """`decode_values` (the request path's hex decoding: all values valid, no
    separators) gives the numbers `from_hex` gives, and only for whole 8-character
    values."""
    text = _hex_samples()
    decoded = cathash.decode_values("".join(text).encode())
    assert decoded is not None
    assert decoded.tolist() == [int(v, 16) for v in text]
    assert cathash.decode_values(b"") is not None
    assert cathash.decode_values(b"0123abcd0") is None           # not whole values
    with_nulls = pa.array(["0123abcd", None, "", "ffffffff"]).cast(pa.string())
    keys, missing, valid = cathash.hex_keys(with_nulls)
    assert missing.tolist() == [False, True, False, False]
    assert valid.tolist() == [True, False, False, True]         # "" is not a value here
    assert keys[[0, 3]].tolist() == [0x0123ABCD, 0xFFFFFFFF]


# --------------------------------------------------------------------------- parse_part

@pytest.mark.parametrize(("line", "expected"), CORPUS)
def test_parse_part_keeps_and_rejects_exactly_what_parse_tsv_does(line: bytes,
                                                                  expected: str | None) -> None:
    valid = _valid_lines(20)
    for block in ([line], [*valid[:10], line, *valid[10:]]):
        ours, theirs = criteo.parse_part(_block(block)), criteo.parse_tsv(_block(block))
        assert ours.rejects == theirs.rejects and ours.lines == theirs.lines
        assert ours.table.schema.equals(PART_SCHEMA, check_metadata=True)
        assert ours.table.equals(to_part(theirs.table))
        assert (expected is None) == (not ours.rejects)


def test_parse_part_fast_path_on_clean_data_and_crlf() -> None:
    valid = _valid_lines(300)
    result = criteo.parse_part(_block(valid))
    assert not result.careful and result.rejects == []
    assert criteo.table_to_tsv(result.table) == _block(valid)
    crlf = criteo.parse_part(_block(valid, b"\r\n"))
    assert crlf.rejects == [] and crlf.table.equals(result.table)
    empty = criteo.parse_part(b"")
    assert empty.lines == 0 and empty.table.schema.equals(PART_SCHEMA)
    no_final_newline = criteo.parse_part(b"\n".join(valid[:5]))
    assert no_final_newline.lines == 5 and no_final_newline.table.num_rows == 5
    only_newlines = criteo.parse_part(b"\n\n\n")
    assert [r.reason for r in only_newlines.rejects] == ["empty line"] * 3


def test_the_fast_path_relies_only_on_what_arrow_integers_really_accept() -> None:
    """`_parse_clean_part` trusts Arrow's typed read for label and integers, except for
    the bytes in `_INT_LENIENT_BYTES`. Every byte value before, inside and after a
    number: whenever the fast path accepts the line, the per-line authority does too
    (fails if a pyarrow upgrade starts accepting more; "0x1f" is why 'x' is there)."""
    accepted = 0
    for byte in range(256):
        b = bytes([byte])
        for field, value in (("label", b"1"), ("label", b"01"), ("int", b"12"),
                             ("int", b"01f")):
            for variant in (b + value, value[:1] + b + value[1:], value + b, b):
                text = variant.decode("latin-1")
                line = (_line(label=text) if field == "label" else
                        _line(ints=["1", "1", text] + ["1"] * 10)) if byte < 128 else None
                if line is None:            # non-ASCII: build the bytes directly
                    parts = _line().split(b"\t")
                    parts[0 if field == "label" else 3] = variant
                    line = b"\t".join(parts)
                if criteo._parse_clean_part(line + b"\n") is not None:
                    accepted += 1
                    assert criteo.line_problems(line) == [], line
    assert accepted > 0


def test_random_mutations_parse_part_agrees_with_the_per_line_authority() -> None:
    rng = random.Random(12)
    lines = mutated_lines(rng, 400)
    bad = {i for i, line in enumerate(lines) if criteo.line_problems(line.removesuffix(b"\r"))}
    assert 50 < len(bad) < len(lines)
    together = criteo.parse_part(_block(lines))
    assert {r.line_no - 1 for r in together.rejects} == bad
    for i in rng.sample(range(len(lines)), 150):
        alone = criteo.parse_part(lines[i] + b"\n")
        assert bool(alone.rejects) == (i in bad), lines[i]


# --------------------------------------------------------------------------- both versions

@pytest.fixture(scope="module")
def record() -> pa.Table:
    return synth.generate_table(3000, seed=4)[0]


def test_parts_carry_their_version_and_read_back_as_the_same_rows(record) -> None:
    v1, v2 = parquet_bytes(record, 1), parquet_bytes(record, 2)
    assert part_version(pq.read_schema(pa.BufferReader(v1))) == 1
    assert part_version(pq.read_schema(pa.BufferReader(v2))) == 2
    assert pq.read_schema(pa.BufferReader(v2)).field("C1").type == pa.uint32()
    a, b = read_part(v1), read_part(v2)
    assert a.schema.equals(PART_SCHEMA, check_metadata=True) and a.equals(b)
    assert to_record(b).equals(record.cast(PARQUET_SCHEMA))
    # the line invariant's view: identical text from either version, = the source lines
    text = criteo.table_to_tsv(record)
    assert criteo.table_to_tsv(pq.read_table(pa.BufferReader(v1))) == text
    assert criteo.table_to_tsv(pq.read_table(pa.BufferReader(v2))) == text


def test_version_2_is_smaller(record) -> None:
    assert len(parquet_bytes(record, 2)) < len(aggregate_v1_bytes(record))


def aggregate_v1_bytes(table: pa.Table) -> bytes:
    """A part as the aggregate step wrote it before version 2 (hex strings, no codec,
    dictionary encoding, statistics of label and integers)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none",
                   write_statistics=aggregate.PARQUET_OPTIONS["write_statistics"])
    return sink.getvalue().to_pybytes()


def test_training_serving_and_monitoring_see_the_same_values_in_either_version(record):
    part = to_part(record)
    transform = FeatureTransform.fit(record)
    assert FeatureTransform.fit(part) == transform
    assert np.array_equal(transform.encode(part), transform.encode(record), equal_nan=True)
    # a request table mixing both kinds of column encodes the same too
    mixed = record.set_column(record.schema.get_field_index("C5"), "C5", part.column("C5"))
    assert np.array_equal(transform.encode(mixed), transform.encode(record), equal_nan=True)
    predictions = np.linspace(0.01, 0.9, 100)
    base_text = build_baseline(record, predictions, transform)
    base_part = build_baseline(part, predictions, transform)
    assert base_part == base_text
    top = base_part.cats[0].values
    assert top and all(criteo.field_problem("C1", v) is None for v in top)   # hex for people
    for name, cb in zip(CAT_COLUMNS, base_part.cats, strict=True):
        assert np.array_equal(cat_counts(part.column(name), cb.values),
                              cat_counts(record.column(name), cb.values))


def test_aggregate_writes_version_2_parts_with_its_options(record) -> None:
    data = aggregate.parquet_bytes(to_part(record))
    meta = pq.read_metadata(pa.BufferReader(data))
    column = meta.row_group(0).column(meta.schema.names.index("C1"))
    assert column.physical_type == "INT32" and column.compression == "UNCOMPRESSED"
    assert part_version(pq.read_schema(pa.BufferReader(data))) == 2
