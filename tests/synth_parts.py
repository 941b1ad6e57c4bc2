"""Synthetic Parquet parts for training tests: consecutive, time-ordered slices of one
`ctr.synth` stream written as `parquet/part_{i:06d}.parquet` through a Store."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctr import layout, synth
from ctr.storage import Store


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def put_parts(store: Store, first: int, count: int, rows: int, seed: int = 0
              ) -> list[np.ndarray]:
    """Write parts first..first+count-1 (`rows` rows each, part i = stream rows
    [i*rows, (i+1)*rows)); returns each part's true click probabilities."""
    probas = []
    for i in range(first, first + count):
        table, p = synth.generate_table(rows, seed=seed, start_row=i * rows)
        store.put(layout.parquet_key(i), parquet_bytes(table))
        probas.append(p)
    return probas
