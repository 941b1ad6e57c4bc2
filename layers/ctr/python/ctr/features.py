"""The feature transform: one code path from a typed Criteo table to an XGBoost matrix,
used by training and by serving, saved next to the model.

Why this module exists: the seed encoded categoricals with
`astype('category').cat.codes` on the training frame, so a code meant "the k-th
distinct value of *this* frame" and nothing at serving time. Here the mapping is
state, fitted once on the training window, written as versioned JSON beside the model
and loaded by the serving function, so a raw value gets the same number on both sides.

Encoding (39 raw columns -> 40 float32 features)
------------------------------------------------
* I1..I13: the integer as a number; missing stays missing (NaN, which XGBoost routes
  along each split's learned default direction). No clipping or log: trees only need
  the order.
* C1..C26 -> `C*_rate`: the smoothed click rate of the value in the training window,
  (clicks + SMOOTHING * prior) / (impressions + SMOOTHING). Values seen fewer than
  `min_count` times (and beyond the `max_categories` most frequent ones) are pooled
  into one "other" bucket with its own pooled rate. A value never seen in training is
  treated exactly like a rare one -- which is what it most likely is -- so an unseen
  value gets an informed number, not an arbitrary code. A missing value gets the click
  rate of rows where that column is missing (missingness carries signal), so only the
  integer columns contain NaN; a denser matrix also makes each boosting round faster.
* `log_odds_sum`: logit(prior) + the sum over all 39 columns of (logit(rate) -
  logit(prior)), where an integer's rate is that of its quantile bin (`INT_BINS` bins
  of the training values, plus "missing"). It is what a naive-Bayes model would
  predict; the trees start from it instead of assembling 39 additive effects one split
  at a time, so they reach a better model in about a third of the rounds.
* Out of fold: inside `fit_transform` the training rows get rates (and log-odds sums)
  computed without their own fold (`FOLDS` contiguous time slices), so the model never
  learns from a rate that contains its own label. Everything that is scored -- the
  holdout, the promotion gate, serving -- goes through `encode` with the full
  statistics: `encode` is the one code path shared by training and serving.
* Categorical values are 32-bit hashes written as 8 hex characters: Parquet parts store
  them as uint32 (used as they are), request tables carry the text (parsed to integers
  straight from the Arrow string buffer, `ctr.cathash.hex_keys`); either is looked up
  by binary search in the sorted kept values. `encode` works on blocks of rows with all
  26 categorical columns stacked into one array (one parse, one search, one gather) and
  all 13 integer columns
  binned by one comparison, against lookup tables built once per transform; so its cost
  is a fixed ~40 NumPy/Arrow calls per block plus the work per row, whatever the number
  of rows -- a single request row at serving time, or two million at training time.
  The result does not depend on how rows are grouped into blocks or requests (tested,
  bit for bit, against the column-by-column definition).

Why this encoding: compared on `ctr.synth` data with native categorical splits over a
vocabulary, hashing and count encoding (`python -m ctr_infra.bench.encodings`; the table
is in docs/measurements.md). Native categorical splits over a large vocabulary overfit
(the larger the vocabulary, the worse), hashing mixes unrelated values, and counts alone
do not say which values click. A value's smoothed click rate carries its effect
directly, and the log-odds sum gives the trees the additive part up front. Counts on top
add 26 features for a gain within noise, so they were left out. The state is at most a
few MB of JSON (kept values x 2 numbers). SMOOTHING was chosen the same way.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from ctr.cathash import hex_keys, to_hex
from ctr.errors import DataError, ValidationError
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS, LABEL

FORMAT_VERSION = 1
KIND = "click-rate+log-odds"

DEFAULT_MIN_COUNT = 10
INT_BINS = 32
DEFAULT_MAX_CATEGORIES = 100_000
SMOOTHING = 100.0
FOLDS = 5
# Rows per block in `encode`: large enough that per-block overhead vanishes,
# small enough that the block's temporaries stay a few MB.
ENCODE_BLOCK_ROWS = 16_384

FEATURE_NAMES = [*INT_COLUMNS, *(f"{c}_rate" for c in CAT_COLUMNS), "log_odds_sum"]
N_FEATURES = len(FEATURE_NAMES)

def _require_columns(table: pa.Table, columns: tuple[str, ...] = FEATURE_COLUMNS) -> None:
    present = set(table.schema.names)          # (table.column_names is much slower)
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValidationError(
            f"table lacks columns {missing}",
            errors=[{"loc": [c], "msg": "column missing"} for c in missing],
        )


@dataclass(frozen=True)
class CategoricalStats:
    """One categorical column: kept values (sorted keys) with their smoothed click
    rates, the pooled rate of every other value, and the rate where it is missing."""

    keys: np.ndarray        # int64, sorted ascending
    rates: np.ndarray       # float64, aligned with keys
    other_rate: float
    missing_rate: float

    def bucket(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Per row: index of the kept value, len(keys) = "other", len(keys)+1 = missing."""
        keys, missing, valid = hex_keys(column)
        bucket = np.full(keys.size, self.keys.size, dtype=np.int64)
        if self.keys.size:
            pos = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
            known = valid & (self.keys[pos] == keys)
            bucket[known] = pos[known]
        bucket[missing] = self.keys.size + 1
        return bucket

    def bucket_rates(self) -> np.ndarray:
        return np.r_[self.rates, self.other_rate, self.missing_rate]

    def to_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.tolist(), "rates": self.rates.tolist(),
                "other_rate": self.other_rate, "missing_rate": self.missing_rate}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoricalStats:
        return cls(np.asarray(d["keys"], dtype=np.int64), np.asarray(d["rates"], dtype=np.float64),
                   float(d["other_rate"]), float(d["missing_rate"]))


@dataclass(frozen=True)
class IntegerStats:
    """One integer column, for the log-odds sum only: quantile bin edges of the
    training values, the smoothed click rate per bin, and the rate where missing."""

    edges: np.ndarray       # float64, sorted, unique; bin i = [edges[i-1], edges[i])
    rates: np.ndarray       # float64, len(edges) + 1 bins
    missing_rate: float

    def bucket(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Per row: bin 0..len(edges), len(edges)+1 = missing."""
        return _int_buckets(_int_values(column), self.edges)

    def bucket_rates(self) -> np.ndarray:
        return np.r_[self.rates, self.missing_rate]

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "rates": self.rates.tolist(),
                "missing_rate": self.missing_rate}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntegerStats:
        return cls(np.asarray(d["edges"], dtype=np.float64),
                   np.asarray(d["rates"], dtype=np.float64), float(d["missing_rate"]))


def _int_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """int64 column -> float64 with NaN for missing (exact below 2**53)."""
    return np.asarray(pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False),
                      dtype=np.float64)


def _int_buckets(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    bucket = np.searchsorted(edges, values, side="right")
    bucket[np.isnan(values)] = edges.size + 1
    return bucket


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


class _RateFitter:
    """Smoothed click rates per bucket, in full and out of fold (FOLDS contiguous
    slices of the rows, each rated with the statistics of the others)."""

    def __init__(self, y: np.ndarray, prior: float) -> None:
        self.y, self.prior = y, prior
        self.bounds = np.linspace(0, y.size, FOLDS + 1).astype(np.int64)

    def _smoothed(self, clicks: np.ndarray, imps: np.ndarray) -> np.ndarray:
        return (clicks + SMOOTHING * self.prior) / (imps + SMOOTHING)

    def rates(self, bucket: np.ndarray, n_buckets: int, out_of_fold: bool
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(rate per bucket, out-of-fold rate per row or None)."""
        imps = np.bincount(bucket, minlength=n_buckets).astype(np.float64)
        clicks = np.bincount(bucket, weights=self.y, minlength=n_buckets)
        full = self._smoothed(clicks, imps)
        if not out_of_fold:
            return full, None
        row_rate = np.empty(bucket.size)
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            b = bucket[lo:hi]
            f_imps = imps - np.bincount(b, minlength=n_buckets)
            f_clicks = clicks - np.bincount(b, weights=self.y[lo:hi], minlength=n_buckets)
            row_rate[lo:hi] = self._smoothed(f_clicks, f_imps)[b]
        return full, row_rate


def _fit_categorical(column: pa.ChunkedArray, fitter: _RateFitter, min_count: int,
                     max_categories: int, out_of_fold: bool
                     ) -> tuple[CategoricalStats, np.ndarray | None]:
    keys, missing, valid = hex_keys(column)
    # Hash-based distinct values (Arrow) rather than sorting every row.
    encoded = pc.dictionary_encode(pa.array(keys[valid]))
    uniq = encoded.dictionary.to_numpy()
    inverse = encoded.indices.to_numpy()
    counts = np.bincount(inverse, minlength=uniq.size)
    kept = np.flatnonzero(counts >= min_count)
    if kept.size > max_categories:               # most frequent first, ties by key
        kept = kept[np.lexsort((uniq[kept], -counts[kept]))[:max_categories]]
    kept = kept[np.argsort(uniq[kept])]          # keys are kept sorted
    other, missing_bucket = kept.size, kept.size + 1
    slot = np.full(uniq.size, other, dtype=np.int64)
    slot[kept] = np.arange(kept.size)
    bucket = np.full(keys.size, other, dtype=np.int64)
    bucket[valid] = slot[inverse]
    bucket[missing] = missing_bucket
    full, row_rate = fitter.rates(bucket, kept.size + 2, out_of_fold)
    stats = CategoricalStats(uniq[kept].astype(np.int64), full[:other], float(full[other]),
                             float(full[missing_bucket]))
    return stats, row_rate


def _fit_integer(column: pa.ChunkedArray, fitter: _RateFitter, out_of_fold: bool
                 ) -> tuple[IntegerStats, np.ndarray | None]:
    values = _int_values(column)
    present = values[~np.isnan(values)]
    quantiles = np.linspace(0, 1, INT_BINS + 1)[1:-1]
    edges = (np.unique(np.quantile(present, quantiles)) if present.size
             else np.empty(0, dtype=np.float64))
    full, row_rate = fitter.rates(_int_buckets(values, edges), edges.size + 2, out_of_fold)
    return IntegerStats(edges, full[:-1], float(full[-1])), row_rate


def _stacked_cats(table: pa.Table) -> pa.Array:
    """C1..C26 one after another in one array: uint32 when every column is (a part),
    else hex strings (requests; a uint32 column among them is formatted as hex)."""
    schema = table.schema
    types = {schema.field(name).type for name in CAT_COLUMNS}
    if types == {pa.uint32()}:
        return _stacked(table, CAT_COLUMNS, pa.uint32())
    if pa.uint32() in types:
        table = pa.Table.from_arrays(
            [to_hex(table.column(n)) if schema.field(n).type == pa.uint32() else table.column(n)
             for n in CAT_COLUMNS], names=list(CAT_COLUMNS))
    return _stacked(table, CAT_COLUMNS, pa.string())


def _stacked(table: pa.Table, names: tuple[str, ...], type_: pa.DataType) -> pa.Array:
    """The columns `names` one after another in one array (column-major), as `type_`."""
    schema = table.schema
    chunks: list[pa.Array] = []
    for name in names:
        i = schema.get_field_index(name)
        column = table.column(i)
        chunks.extend((column if schema.field(i).type == type_ else column.cast(type_)).chunks)
    return pa.concat_arrays(chunks) if chunks else pa.array([], type_)


@dataclass(frozen=True)
class _Lookup:
    """A transform's state laid out for `encode`, built once per transform.

    Every bucket of every column is one entry of two flat tables: its rate, and its
    log-odds term logit(rate) - logit(prior) computed here once instead of per row.
    Entries: the kept values of C1..C26 in column order, then each column's "other"
    bucket, then each column's "missing" bucket, then I1..I13's bins and "missing".
    Kept keys carry their column in the high bits (key + (j << 32), still sorted), so
    one binary search finds the values of all 26 columns at once; integer columns are
    binned by one binary search each, over their own edges.
    """

    cat_keys: np.ndarray            # int64, sorted; ends with a key no value can have
    int_edges: tuple[np.ndarray, ...]   # each integer column's sorted bin edges
    int_missing: np.ndarray         # (13, 1): each integer column's "missing" bin
    int_first: np.ndarray           # (13, 1): entry of each integer column's bin 0
    rates: np.ndarray               # float64 per entry
    terms: np.ndarray               # float64 per entry: logit(rate) - logit(prior)
    base: float                     # logit(prior), where the log-odds sum starts

    @classmethod
    def build(cls, transform: FeatureTransform) -> _Lookup:
        cats = [transform.categoricals[c] for c in CAT_COLUMNS]
        ints = [transform.integers[c] for c in INT_COLUMNS]
        kept = [s.keys + (j << 32) for j, s in enumerate(cats)]
        sentinel = np.array([len(CAT_COLUMNS) << 32], dtype=np.int64)
        int_tables = [s.bucket_rates() for s in ints]
        sizes = np.array([t.size for t in int_tables], dtype=np.int64)
        first = sum(k.size for k in kept) + 2 * len(cats) + np.r_[0, np.cumsum(sizes)[:-1]]
        rates = np.concatenate([*(s.rates for s in cats), [s.other_rate for s in cats],
                                [s.missing_rate for s in cats], *int_tables])
        return cls(np.concatenate([*kept, sentinel]), tuple(s.edges for s in ints),
                   (sizes - 1)[:, None], first[:, None], rates,
                   _logit(rates) - _logit(transform.prior), float(_logit(transform.prior)))

    def encode_block(self, block: pa.Table, out: np.ndarray,
                     terms_out: np.ndarray | None = None) -> None:
        """Fill `out` (rows, 40) with the block's features; `terms_out` (rows, 39), when
        given, receives each raw field's log-odds term (FEATURE_COLUMNS order), the
        summands of `log_odds_sum` (used to explain a prediction)."""
        n, n_cat, n_int = block.num_rows, len(CAT_COLUMNS), len(INT_COLUMNS)
        # Categoricals: all 26 columns in one parse, one search, one gather.
        keys, missing, valid = hex_keys(_stacked_cats(block))
        column = np.arange(n_cat, dtype=np.int64)[:, None]
        keys = keys.reshape(n_cat, n) + (column << 32)
        entry = np.searchsorted(self.cat_keys, keys)
        known = valid.reshape(n_cat, n) & (self.cat_keys[entry] == keys)
        n_kept = self.cat_keys.size - 1
        np.copyto(entry, np.broadcast_to(n_kept + column, entry.shape), where=~known)
        np.copyto(entry, np.broadcast_to(n_kept + n_cat + column, entry.shape),
                  where=missing.reshape(n_cat, n))
        out[:, n_int:n_int + n_cat] = self.rates[entry].T
        # Integers: the feature is the value (float32, NaN = missing); for the log-odds
        # sum, bin = number of edges <= value, as `_int_buckets` bins them in training
        # (one search per column: a comparison against every edge cost 6x as much at
        # 1,000 rows).
        ints = _stacked(block, INT_COLUMNS, pa.int64())
        out[:, :n_int] = (pc.cast(ints, pa.float32(), safe=False)
                          .to_numpy(zero_copy_only=False).reshape(n_int, n).T)
        values = _int_values(ints).reshape(n_int, n)
        bins = np.empty((n_int, n), dtype=np.intp)
        for j, edges in enumerate(self.int_edges):
            bins[j] = edges.searchsorted(values[j], side="right")
        np.copyto(bins, np.broadcast_to(self.int_missing, bins.shape), where=np.isnan(values))
        # The log-odds sum, added column by column in a fixed order (C1..C26, I1..I13),
        # so the floats do not depend on how many rows are encoded together.
        log_odds = np.full(n, self.base)
        cat_terms, int_terms = self.terms[entry], self.terms[self.int_first + bins]
        for terms in (cat_terms, int_terms):
            for row in terms:
                log_odds += row
        out[:, -1] = log_odds
        if terms_out is not None:
            terms_out[:, :n_int] = int_terms.T
            terms_out[:, n_int:] = cat_terms.T


@dataclass(frozen=True, eq=False)
class FeatureTransform:
    """Fitted encoding state. Build with `fit` (or `fit_transform` for training),
    persist with `to_dict`/`from_dict`."""

    categoricals: dict[str, CategoricalStats]
    integers: dict[str, IntegerStats]
    prior: float
    min_count: int = DEFAULT_MIN_COUNT
    max_categories: int = DEFAULT_MAX_CATEGORIES
    _lookup: _Lookup = field(init=False, repr=False)     # derived, for `encode`

    # --- fitting -------------------------------------------------------------
    @classmethod
    def fit(cls, table: pa.Table, min_count: int = DEFAULT_MIN_COUNT,
            max_categories: int = DEFAULT_MAX_CATEGORIES) -> FeatureTransform:
        """Statistics of `table` (which must have the label column)."""
        return cls.fit_transform(table, min_count, max_categories, out_of_fold=False)[0]

    @classmethod
    def fit_transform(cls, table: pa.Table, min_count: int = DEFAULT_MIN_COUNT,
                      max_categories: int = DEFAULT_MAX_CATEGORIES, out_of_fold: bool = True
                      ) -> tuple[FeatureTransform, np.ndarray | None]:
        """(transform, training matrix built from out-of-fold rates) -- the matrix is
        None when `out_of_fold` is False."""
        _require_columns(table, (LABEL, *FEATURE_COLUMNS))
        if table.num_rows == 0:
            raise DataError("cannot fit a feature transform on an empty table")
        y = table.column(LABEL).to_numpy().astype(np.float64)
        prior = float(y.mean())
        if not 0.0 < prior < 1.0:
            raise DataError("the training window needs both clicks and non-clicks",
                            positive_rate=prior)
        fitter = _RateFitter(y, prior)
        # Columns are independent; NumPy and Arrow release the GIL in the heavy parts.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            cat_jobs = {name: pool.submit(_fit_categorical, table.column(name), fitter,
                                          min_count, max_categories, out_of_fold)
                        for name in CAT_COLUMNS}
            int_jobs = {name: pool.submit(_fit_integer, table.column(name), fitter,
                                          out_of_fold) for name in INT_COLUMNS}
            cat_results = {name: job.result() for name, job in cat_jobs.items()}
            int_results = {name: job.result() for name, job in int_jobs.items()}
        categoricals = {name: stats for name, (stats, _) in cat_results.items()}
        integers = {name: stats for name, (stats, _) in int_results.items()}
        out = cls._alloc(table) if out_of_fold else None
        if out is not None:
            # Same summation order as `encode`: categoricals, then integers.
            log_odds = np.full(table.num_rows, _logit(prior))
            for name, (_, row_rate) in [*cat_results.items(), *int_results.items()]:
                assert row_rate is not None
                log_odds += _logit(row_rate) - _logit(prior)
                if name in categoricals:
                    out[:, FEATURE_NAMES.index(f"{name}_rate")] = row_rate
        transform = cls(categoricals, integers, prior, min_count, max_categories)
        if out is not None:
            transform._fill_ints(table, out)
            out[:, -1] = log_odds
        return transform, out

    # --- persistence ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "feature_names": FEATURE_NAMES,
            "smoothing": SMOOTHING,
            "prior": self.prior,
            "min_count": self.min_count,
            "max_categories": self.max_categories,
            "int_bins": INT_BINS,
            "categoricals": {c: self.categoricals[c].to_dict() for c in CAT_COLUMNS},
            "integers": {c: self.integers[c].to_dict() for c in INT_COLUMNS},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureTransform:
        if d.get("format_version") != FORMAT_VERSION or d.get("kind") != KIND:
            raise ValidationError(
                f"feature transform {d.get('kind')!r} format_version "
                f"{d.get('format_version')!r} is not supported (this code reads {KIND!r} "
                f"format_version {FORMAT_VERSION})",
                errors=[{"loc": ["format_version"], "msg": "unsupported"}],
            )
        return cls({c: CategoricalStats.from_dict(d["categoricals"][c]) for c in CAT_COLUMNS},
                   {c: IntegerStats.from_dict(d["integers"][c]) for c in INT_COLUMNS},
                   float(d["prior"]), int(d["min_count"]), int(d["max_categories"]))

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> FeatureTransform:
        return cls.from_dict(json.loads(data))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureTransform) and self.to_dict() == other.to_dict()

    # --- encoding ------------------------------------------------------------
    def __post_init__(self) -> None:
        object.__setattr__(self, "_lookup", _Lookup.build(self))

    @staticmethod
    def _alloc(table: pa.Table) -> np.ndarray:
        return np.empty((table.num_rows, N_FEATURES), dtype=np.float32)

    @staticmethod
    def _fill_ints(table: pa.Table, out: np.ndarray) -> None:
        for j, name in enumerate(INT_COLUMNS):
            out[:, j] = pc.cast(table.column(name), pa.float32(), safe=False).to_numpy()

    def encode(self, table: pa.Table, block_rows: int = ENCODE_BLOCK_ROWS) -> np.ndarray:
        """(rows, 40) float32 in FEATURE_NAMES order; NaN only for missing integers.
        Arrow -> NumPy without a pandas frame in between. A label column, if present, is
        ignored. Rows are encoded in blocks of `block_rows` (the result does not depend
        on it): a block costs a fixed number of NumPy/Arrow calls, so one request row is
        as cheap as the lookups allow, and a block's temporaries stay small."""
        _require_columns(table)
        out = self._alloc(table)
        for start in range(0, table.num_rows, block_rows):
            block = table.slice(start, block_rows)
            self._lookup.encode_block(block, out[start:start + block.num_rows])
        return out

    def encode_with_terms(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(`encode(table)`, each row's log-odds term per raw field: (rows, 39) float64
        in FEATURE_COLUMNS order, logit(rate) - logit(prior); they sum, with
        logit(prior), to the `log_odds_sum` feature)."""
        _require_columns(table)
        out = self._alloc(table)
        terms = np.empty((table.num_rows, len(FEATURE_COLUMNS)), dtype=np.float64)
        for start in range(0, table.num_rows, ENCODE_BLOCK_ROWS):
            block = table.slice(start, ENCODE_BLOCK_ROWS)
            stop = start + block.num_rows
            self._lookup.encode_block(block, out[start:stop], terms[start:stop])
        return out, terms

    def matrix(self, table: pa.Table, label: np.ndarray | None = None) -> xgb.DMatrix:
        """The DMatrix for prediction; labels only if passed explicitly."""
        return as_dmatrix(self.encode(table), label)


def as_dmatrix(x: np.ndarray, label: np.ndarray | None = None,
               nthread: int | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(x, label=label, missing=np.nan, feature_names=FEATURE_NAMES,
                       nthread=nthread)


def as_quantile_dmatrix(x: np.ndarray, label: np.ndarray, max_bin: int = 256
                        ) -> xgb.QuantileDMatrix:
    """Training-side matrix: XGBoost keeps only the quantised bins, not a float copy."""
    return xgb.QuantileDMatrix(x, label=label, missing=np.nan, feature_names=FEATURE_NAMES,
                               max_bin=max_bin)
