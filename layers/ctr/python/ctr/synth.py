"""Synthetic Criteo-format click logs with known truth.

Why: the real Kaggle file is 11 GB and cannot be shipped with tests; more importantly,
on real data nobody knows how good a model *could* be. Here every row's label is drawn
from a known logistic model, so its true click probability `p` is known and the
Bayes-optimal logloss/AUC of any holdout can be computed from the sidecar file. A
trained model is then judged by its distance to that optimum, not by a bare number.

What the stream looks like (chosen to resemble the Kaggle Display Advertising data):

* ~25% positives (the bias is calibrated numerically per seed);
* I1..I13: heavy-tailed count-like integers (log-normal, partly driven by one latent
  "activity" factor, so they correlate with each other and with the label); I2 goes
  down to -3 as in the real data; per-column missing rates from 0% to ~76%;
* C1..C26: 32-bit hashes written as 8 lowercase hex characters, ranks drawn from a
  truncated Zipf law with cardinalities from 3 to 1,000,000; per-column missing rates;
* the logit adds per-value effects of every categorical (larger for the head values),
  monotone effects of the integers, informative missingness, two interactions
  (C9 x C20 and log(I1) x C17) and, optionally, a slow drift: a C14-dependent effect
  that changes sinusoidally with the row index (period `DRIFT_PERIOD_ROWS`).
* a covariate shift, optionally (`shift`, for monitoring tests): an integer column's
  latent draw moves by `amount` standard deviations (its median is multiplied by
  exp(sigma * amount)); a categorical column's Zipf ranks rotate by `amount` ranks, so
  its head values become rare and rarer ones take their place. Labels follow the
  shifted values through the same model: only the inputs' distribution changes.

Rows are generated in fixed blocks of `BLOCK_ROWS`, each from its own RNG streams seeded
with (seed, block index) and drawn row by row. So any slice of the stream is reproducible
on its own and costs only the rows up to its end within a block:
`generate_table(10, s, 0)[5:]` equals `generate_table(5, s, 5)`, and consecutive
`start_row` values give consecutive, time-ordered slices of one stream. Everything is
vectorised numpy: a million rows take a few seconds (the model for a seed, ~0.3 s, is
built once and cached).
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ctr.criteo import table_to_tsv
from ctr.schema import N_CAT, N_INT, PARQUET_SCHEMA

BLOCK_ROWS = 1 << 16
TARGET_POSITIVE_RATE = 0.25
DRIFT_PERIOD_ROWS = 20_000_000
SIDECAR_SUFFIX = ".proba.npy"

# Roughly the Kaggle data's per-column figures, scaled down for the high cardinalities.
CARDINALITIES = (1460, 583, 1_000_000, 400_000, 305, 24, 12517, 633, 3, 93145, 5683,
                 800_000, 3194, 27, 14992, 500_000, 10, 5652, 2173, 4, 700_000, 18, 15,
                 286181, 105, 142572)
CAT_MISSING = (0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0,
               0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44)
INT_MISSING = (0.45, 0.0, 0.21, 0.22, 0.026, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.76,
               0.22)
INT_MEDIANS = (1, 3, 7, 4, 2000, 40, 3, 8, 40, 1, 1, 0.5, 4)
INT_SIGMAS = (1.3, 1.8, 1.6, 1.1, 2.0, 1.8, 1.5, 1.2, 1.4, 0.9, 1.0, 1.2, 1.2)
INT_SHIFTS = (0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)  # I2 takes values down to -3

# byte value -> its two lowercase hex characters, as one little-endian uint16
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), dtype="<u2")


@dataclass(frozen=True)
class SynthModel:
    """The known generative model for one seed (see the module docstring)."""

    seed: int
    drift: float
    zipf_exponents: np.ndarray      # (26,)
    hash_mul: np.ndarray            # (26,) odd uint64 < 2**32: rank -> hash is a bijection
    hash_xor: np.ndarray            # (26,)
    activity_loading: np.ndarray    # (13,) how much each integer follows the latent factor
    int_weights: np.ndarray         # (13,) logit per unit of log1p(value)
    int_missing_effect: np.ndarray  # (13,)
    cat_effects: tuple[np.ndarray, ...]  # per column, one effect per rank
    cat_missing_effect: np.ndarray  # (26,)
    pair_effect: np.ndarray         # (3, 4) C9 x C20 interaction
    slope_by_c17: np.ndarray        # (10,) log(I1) x C17 interaction
    drift_by_c14: np.ndarray        # (27,) drift direction per C14 value
    activity_weight: float
    bias: float


def build_model(seed: int = 0, drift: float = 0.0) -> SynthModel:
    """The model for `seed` with the given drift strength (deterministic, cached)."""
    return replace(_stationary_model(seed), drift=drift)


@lru_cache(maxsize=8)
def _stationary_model(seed: int) -> SynthModel:
    """Draw the model for `seed` (~0.2 s). The bias is calibrated without drift, which
    is zero at row 0 where the pilot sample starts."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    cards = np.asarray(CARDINALITIES)
    cat_effects = []
    for k in cards:
        # Head values get stronger effects than the long tail, as in real click logs,
        # and low-cardinality columns carry more signal per value.
        scale = 0.5 / (1.0 + 0.12 * math.log10(k))
        decay = 1.0 / np.sqrt(1.0 + np.arange(k) / 50.0)
        cat_effects.append(rng.normal(0.0, scale, k) * (0.35 + 0.65 * decay))
    model = SynthModel(
        seed=seed,
        drift=0.0,
        zipf_exponents=rng.uniform(1.05, 1.35, N_CAT),
        hash_mul=(rng.integers(0, 1 << 31, N_CAT, dtype=np.uint64) << np.uint64(1))
        | np.uint64(1),
        hash_xor=rng.integers(0, 1 << 32, N_CAT, dtype=np.uint64),
        activity_loading=rng.uniform(0.2, 0.8, N_INT),
        int_weights=rng.normal(0.0, 0.12, N_INT),
        int_missing_effect=rng.normal(0.0, 0.25, N_INT),
        cat_effects=tuple(cat_effects),
        cat_missing_effect=rng.normal(0.0, 0.3, N_CAT),
        pair_effect=rng.normal(0.0, 0.6, (3, 4)),
        slope_by_c17=rng.normal(0.0, 0.25, 10),
        drift_by_c14=rng.choice([-1.0, 1.0], 27),
        activity_weight=0.35,
        bias=0.0,
    )
    # Calibrate the bias on a pilot sample so the stream has ~25% positives.
    pilot = _generate_block(model, np.random.SeedSequence([seed, 0xB1A5]), 0, 50_000)
    logits = pilot["logit"]
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logits + mid).mean() > TARGET_POSITIVE_RATE:
            hi = mid
        else:
            lo = mid
    return replace(model, bias=(lo + hi) / 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf_ranks(u: np.ndarray, k: int, a: float) -> np.ndarray:
    """Inverse CDF of a continuous power law on [1, k+1) -> ranks 0..k-1 (truncated Zipf)."""
    top = (k + 1.0) ** (1.0 - a)
    x = (1.0 + u * (top - 1.0)) ** (1.0 / (1.0 - a))
    return np.minimum(x.astype(np.int64) - 1, k - 1)


def _generate_block(model: SynthModel, seed_seq: np.random.SeedSequence, first_row: int,
                    n: int, shift: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Raw arrays for the first `n` rows of a block starting at row `first_row`.

    Each kind of draw has its own stream and is drawn row by row (shape (n, k)), so the
    first n rows are the same whatever n is: a short slice costs only what it needs."""
    activity_rng, noise_rng, cat_rng, missing_rng, label_rng = (
        np.random.default_rng(s) for s in seed_seq.spawn(5))
    activity = activity_rng.standard_normal(n)
    noise = noise_rng.standard_normal((n, N_INT), dtype=np.float32).T.copy()
    cat_u = cat_rng.random((n, N_CAT)).T.copy()
    missing_u = missing_rng.random((n, N_INT + N_CAT), dtype=np.float32).T.copy()
    label_u = label_rng.random(n)

    logit = np.full(n, model.bias) + model.activity_weight * activity
    ints = np.empty((N_INT, n), dtype=np.int64)
    int_missing = missing_u[:N_INT] < np.asarray(INT_MISSING)[:, None]
    for j in range(N_INT):
        load = model.activity_loading[j]
        z = load * activity + math.sqrt(1.0 - load * load) * noise[j]
        z = z + (shift or {}).get(f"I{j + 1}", 0.0)
        raw = np.exp(math.log1p(INT_MEDIANS[j]) + INT_SIGMAS[j] * z)
        ints[j] = np.maximum(np.minimum(raw, 1e12).astype(np.int64) - 1, 0) - INT_SHIFTS[j]
        contribution = model.int_weights[j] * (np.log1p(np.maximum(ints[j], 0))
                                               - math.log1p(INT_MEDIANS[j]))
        logit += np.where(int_missing[j], model.int_missing_effect[j], contribution)

    ranks = np.empty((N_CAT, n), dtype=np.int64)
    cat_missing = missing_u[N_INT:] < np.asarray(CAT_MISSING)[:, None]
    for j in range(N_CAT):
        ranks[j] = _zipf_ranks(cat_u[j], CARDINALITIES[j], model.zipf_exponents[j])
        if offset := int((shift or {}).get(f"C{j + 1}", 0)):
            ranks[j] = (ranks[j] + offset) % CARDINALITIES[j]
        logit += np.where(cat_missing[j], model.cat_missing_effect[j],
                          model.cat_effects[j][ranks[j]])

    # Interactions (ranks of missing values still exist, the effect just ignores them).
    c9, c20, c17, c14 = ranks[8], ranks[19], ranks[16], ranks[13]
    pair_on = ~(cat_missing[8] | cat_missing[19])
    logit += np.where(pair_on, model.pair_effect[c9, c20], 0.0)
    i1 = np.where(int_missing[0], 0, np.log1p(np.maximum(ints[0], 0)))
    logit += np.where(cat_missing[16], 0.0, model.slope_by_c17[c17] * (i1 - 0.7))
    if model.drift:
        rows = np.arange(first_row, first_row + n, dtype=np.float64)
        phase = np.sin(2.0 * math.pi * rows / DRIFT_PERIOD_ROWS)
        logit += model.drift * phase * model.drift_by_c14[c14]

    p = _sigmoid(logit)
    return {"ints": ints, "int_missing": int_missing, "ranks": ranks,
            "cat_missing": cat_missing, "logit": logit, "p": p,
            "label": (label_u < p).astype(np.int8)}


def _hex_column(hashes: np.ndarray, missing: np.ndarray) -> pa.Array:
    """uint32 hashes -> Arrow string array of 8 lowercase hex chars, built from buffers:
    each byte of the big-endian hash maps to its two hex characters in one table lookup."""
    n = len(hashes)
    digits = _HEX_PAIRS[hashes.astype(">u4").view(np.uint8)]
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    validity = np.packbits(~missing, bitorder="little")
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits),
                                       pa.py_buffer(validity), null_count=int(missing.sum()))


def _block_table(model: SynthModel, block: dict[str, np.ndarray]) -> pa.Table:
    columns: list[pa.Array] = [pa.array(block["label"], pa.int8())]
    for j in range(N_INT):
        columns.append(pa.array(block["ints"][j], pa.int64(), mask=block["int_missing"][j]))
    for j in range(N_CAT):
        hashes = ((block["ranks"][j].astype(np.uint64) + np.uint64(1)) * model.hash_mul[j]
                  & np.uint64(0xFFFFFFFF)) ^ model.hash_xor[j]
        columns.append(_hex_column(hashes, block["cat_missing"][j]))
    return pa.Table.from_arrays(columns, schema=PARQUET_SCHEMA)


def _blocks(rows: int, seed: int, start_row: int, drift: float,
            shift: Mapping[str, float] | None = None) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(table, p) pieces covering rows [start_row, start_row + rows) in order."""
    model = build_model(seed, drift)
    end = start_row + rows
    for b in range(start_row // BLOCK_ROWS, (end + BLOCK_ROWS - 1) // BLOCK_ROWS):
        block_start = b * BLOCK_ROWS
        lo = max(start_row, block_start) - block_start
        hi = min(end, block_start + BLOCK_ROWS) - block_start
        block = _generate_block(model, np.random.SeedSequence([seed, b]), block_start, hi,
                                shift)
        yield _block_table(model, block).slice(lo, hi - lo), block["p"][lo:hi]


def generate_table(rows: int, seed: int = 0, start_row: int = 0, drift: float = 0.0,
                   shift: Mapping[str, float] | None = None) -> tuple[pa.Table, np.ndarray]:
    """`rows` rows of the stream for `seed` starting at row `start_row`.

    Returns a table with exactly `PARQUET_SCHEMA` and the true click probability of each
    row (float64). Deterministic: the same (seed, row index, drift) always gives the
    same row, whatever slice it is drawn in. `shift` ({column: amount}) moves the
    distribution of the named columns (see the module docstring).
    """
    if rows < 0 or start_row < 0:
        raise ValueError("rows and start_row must be >= 0")
    if rows == 0:
        return PARQUET_SCHEMA.empty_table(), np.empty(0)
    tables, probas = zip(*_blocks(rows, seed, start_row, drift, shift), strict=True)
    return pa.concat_tables(tables), np.concatenate(probas)


def sidecar_path(path: str | Path) -> Path:
    """Where `write_tsv` puts the true probabilities of `path` (a .npy float64 array)."""
    return Path(str(path) + SIDECAR_SUFFIX)


def _open_out(path: Path, compresslevel: int) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "wb", compresslevel=compresslevel)  # type: ignore[return-value]
    return path.open("wb")


def write_tsv(path: str | Path, rows: int, seed: int = 0, *, start_row: int = 0,
              drift: float = 0.0, progress: bool = True, compresslevel: int = 1,
              sidecar: bool = True) -> dict[str, Any]:
    """Write `rows` Criteo lines to `path` (gzip when it ends in .gz) and, unless
    `sidecar=False`, their true probabilities to `sidecar_path(path)`.

    gzip level 1 by default: synthetic data compresses well anyway, and level 6 would
    make compression, not generation, the bottleneck.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    probas = (np.lib.format.open_memmap(sidecar_path(path), mode="w+", dtype=np.float64,
                                        shape=(rows,)) if sidecar else None)
    written = 0
    bytes_out = 0
    bar = tqdm(total=rows, unit="rows", unit_scale=True, disable=not progress,
               desc=f"synth {path.name}")
    with _open_out(path, compresslevel) as out, bar:
        for table, p in _blocks(rows, seed, start_row, drift):
            data = table_to_tsv(table)
            out.write(data)
            if probas is not None:
                probas[written:written + len(p)] = p
            written += table.num_rows
            bytes_out += len(data)
            bar.update(table.num_rows)
    if probas is not None:
        probas.flush()
    return {"path": str(path), "rows": written, "bytes": bytes_out, "seed": seed,
            "sidecar": str(sidecar_path(path)) if sidecar else None}
