"""The Criteo record: column names and the typed Parquet schema (the contract between
aggregate, training and serving)."""

from __future__ import annotations

import pyarrow as pa

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
