"""The Criteo record: column names and the typed schemas (the contract between
aggregate, training and serving).

Two forms of the same record:

* `PARQUET_SCHEMA` -- the record as text carries it (lines, API requests): C1..C26 are
  strings of 8 lowercase hex characters. `ctr.criteo.parse_tsv` and the API builders
  return it; version-1 Parquet parts were written with it.
* `PART_SCHEMA` -- what Parquet parts store since version 2 (`PART_SCHEMA_VERSION`,
  written in the file's key-value metadata): C1..C26 as the uint32 the hex stands for
  (`ctr.cathash`; lossless for every value the parser accepts). Half the bytes per value
  and no text to parse again when reading: measured in the README ("Aggregate and
  the part format").

Readers of parts call `to_part` (any part -> `PART_SCHEMA`) or `to_record` (any part
-> `PARQUET_SCHEMA`, hex for people and for TSV), so old and new parts mix freely.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ctr import cathash

N_INT = 13
N_CAT = 26
INT_COLUMNS = tuple(f"I{i}" for i in range(1, N_INT + 1))
CAT_COLUMNS = tuple(f"C{i}" for i in range(1, N_CAT + 1))
FEATURE_COLUMNS = INT_COLUMNS + CAT_COLUMNS          # 39, the seed's `features` order
LABEL = "label"
ALL_COLUMNS = (LABEL, *FEATURE_COLUMNS)              # 40 fields per TSV line

PARQUET_SCHEMA = pa.schema(
    [pa.field(LABEL, pa.int8(), nullable=False)]
    + [pa.field(c, pa.int64(), nullable=True) for c in INT_COLUMNS]
    + [pa.field(c, pa.string(), nullable=True) for c in CAT_COLUMNS]
)

PART_SCHEMA_VERSION = 2
SCHEMA_VERSION_KEY = b"ctr.schema_version"
PART_SCHEMA = pa.schema(
    [pa.field(LABEL, pa.int8(), nullable=False)]
    + [pa.field(c, pa.int64(), nullable=True) for c in INT_COLUMNS]
    + [pa.field(c, pa.uint32(), nullable=True) for c in CAT_COLUMNS],
    metadata={SCHEMA_VERSION_KEY: str(PART_SCHEMA_VERSION).encode()},
)


def part_version(schema: pa.Schema) -> int:
    """1 for parts with hex-string categoricals (before the version key existed), else
    the version in the metadata."""
    raw = (schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    return int(raw) if raw is not None else 1


def _convert_cats(table: pa.Table, want: pa.DataType) -> pa.Table:
    columns = []
    for name in table.schema.names:
        column = table.column(name)
        if name in CAT_COLUMNS and column.type != want:
            if pa.types.is_uint32(want):
                column = cathash.from_hex(column)       # validated text only
            elif pa.types.is_uint32(column.type):
                column = cathash.to_hex(column)         # (other text types: the cast)
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.schema.names)


def with_hex_categoricals(table: pa.Table) -> pa.Table:
    """The table with any uint32 categorical turned into its hex strings (nothing else
    changes; a table without uint32 categoricals comes back as it is)."""
    if not any(pa.types.is_uint32(table.schema.field(n).type)
               for n in CAT_COLUMNS if n in table.schema.names):
        return table
    return _convert_cats(table, pa.string())


def to_part(table: pa.Table) -> pa.Table:
    """Any table of record columns (hex strings or uint32 categoricals; a subset of the
    columns is fine) -> the same columns with `PART_SCHEMA` types and metadata."""
    converted = _convert_cats(table, pa.uint32())
    return converted.cast(pa.schema([PART_SCHEMA.field(n) for n in converted.schema.names],
                                    metadata=PART_SCHEMA.metadata))


def to_record(table: pa.Table) -> pa.Table:
    """Any table of record columns -> the same columns with `PARQUET_SCHEMA` types
    (categoricals as 8 lowercase hex characters)."""
    converted = _convert_cats(table, pa.string())
    return converted.cast(pa.schema([PARQUET_SCHEMA.field(n)
                                     for n in converted.schema.names]))


def read_part(body: bytes, columns: list[str] | None = None) -> pa.Table:
    """A Parquet part of any version -> `PART_SCHEMA` (its columns, or `columns`)."""
    return to_part(pq.read_table(pa.BufferReader(body), columns=columns))
