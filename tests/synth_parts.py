"""Synthetic Parquet parts for training tests: consecutive, time-ordered slices of one
`ctr.synth` stream written as `parquet/part_{i:06d}.parquet` through a Store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctr import aggregate, layout, synth
from ctr.schema import PART_SCHEMA_VERSION, to_part
from ctr.storage import Store


def parquet_bytes(table: pa.Table, version: int = PART_SCHEMA_VERSION) -> bytes:
    """A part as the aggregate step writes it (version 2: uint32 categoricals), or as
    it wrote it before (version 1: hex strings, pyarrow's default options)."""
    if version == PART_SCHEMA_VERSION:
        return aggregate.parquet_bytes(to_part(table))
    assert version == 1, version
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def put_parts(store: Store, first: int, count: int, rows: int, seed: int = 0,
              versions: tuple[int, ...] = (PART_SCHEMA_VERSION,)) -> list[np.ndarray]:
    """Write parts first..first+count-1 (`rows` rows each, part i = stream rows
    [i*rows, (i+1)*rows)), part i in format `versions[i % len(versions)]`; returns each
    part's true click probabilities."""
    probas = []
    for i in range(first, first + count):
        table, p = synth.generate_table(rows, seed=seed, start_row=i * rows)
        store.put(layout.parquet_key(i), parquet_bytes(table, versions[i % len(versions)]))
        probas.append(p)
    return probas
