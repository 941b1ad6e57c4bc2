"""The feature transform fitted part by part: the same state as
`FeatureTransform.fit_transform` on the concatenated rows, without holding them.

Everything `fit_transform` computes is a function of counts, and counts add up:

* the prior is clicks / rows;
* a categorical column's kept values are chosen from the impressions of each distinct
  value, and every bucket's rate (kept value, "other", "missing") is a smoothed ratio
  of the bucket's clicks and impressions;
* an integer column's bin edges are quantiles of its present values, which depend only
  on the multiset of values: a histogram (distinct value -> count) gives them exactly
  (`quantiles_from_counts`, NumPy's "linear" method step by step);
* the out-of-fold rates subtract one fold's counts from the totals; the folds are
  `FOLDS` contiguous slices of the training rows, known in advance from the row count.

So `StreamFit` keeps, per fold and column, the distinct values seen with their
impressions and clicks (sorted, merged as parts arrive: memory grows with the distinct
values, not the rows), and `finish` turns them into the `FeatureTransform` and the
per-fold tables that `encode_training` uses to give any training rows exactly the
features `fit_transform` would give them (bit for bit: counts are exact integers in
float64, and each row's arithmetic is the same; tested).

Values are read only through `ctr.features` (`hex_keys`, `_int_values`), so a change
of the stored type of C1..C26 stays inside those functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr.errors import DataError
from ctr.features import (
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_MIN_COUNT,
    FEATURE_NAMES,
    FOLDS,
    INT_BINS,
    N_FEATURES,
    SMOOTHING,
    CategoricalStats,
    FeatureTransform,
    IntegerStats,
    _int_buckets,
    _int_values,
    _logit,
    _require_columns,
    hex_keys,
)
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS, LABEL

# Pending per-part count tables are merged once they hold this many entries.
_MERGE_ENTRIES = 4_000_000


def quantiles_from_counts(values: np.ndarray, counts: np.ndarray, q: np.ndarray
                          ) -> np.ndarray:
    """`np.quantile(np.repeat(values, counts), q)` (method "linear") without the
    repeat: `values` sorted ascending and distinct, `counts` positive. Follows NumPy's
    steps: virtual index (n - 1) * q, its floor and the next order statistic, and the
    interpolation `a + (b - a) * g`, or `b - (b - a) * (1 - g)` when g >= 0.5."""
    n = int(counts.sum())
    virtual = (n - 1) * np.asarray(q, dtype=np.float64)
    previous = np.floor(virtual)
    gamma = virtual - previous
    lo = np.clip(previous.astype(np.int64), 0, n - 1)
    hi = np.clip(lo + 1, 0, n - 1)
    upper = np.cumsum(counts)                       # order statistic k -> first upper > k
    a = values[np.searchsorted(upper, lo, side="right")]
    b = values[np.searchsorted(upper, hi, side="right")]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


class _Counts:
    """Distinct values (sorted) with impressions and clicks, merged as batches come."""

    def __init__(self) -> None:
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.entries = 0

    def add(self, values: np.ndarray, y: np.ndarray) -> None:
        if values.size == 0:
            return
        encoded = pc.dictionary_encode(pa.array(values))
        uniq = encoded.dictionary.to_numpy()
        inverse = encoded.indices.to_numpy()
        imps = np.bincount(inverse, minlength=uniq.size)
        clicks = np.bincount(inverse, weights=y, minlength=uniq.size).astype(np.int64)
        order = np.argsort(uniq)
        self.pending.append((uniq[order], imps[order], clicks[order]))
        self.entries += uniq.size
        if len(self.pending) > 1 and self.entries > _MERGE_ENTRIES:
            self.merge()

    def merge(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.pending) != 1:
            if not self.pending:
                empty = np.empty(0, dtype=np.int64)
                return np.empty(0), empty, empty
            values = np.concatenate([p[0] for p in self.pending])
            uniq, inverse = np.unique(values, return_inverse=True)
            imps = np.bincount(inverse, weights=np.concatenate([p[1] for p in self.pending]),
                               minlength=uniq.size).astype(np.int64)
            clicks = np.bincount(inverse, weights=np.concatenate([p[2] for p in self.pending]),
                                 minlength=uniq.size).astype(np.int64)
            self.pending = [(uniq, imps, clicks)]
            self.entries = uniq.size
        return self.pending[0]


@dataclass
class _ColumnCounts:
    """One column in one fold: present values' counts, plus missing (and, for a
    categorical, non-missing values that are not a valid key, pooled into "other")."""

    values: _Counts = field(default_factory=_Counts)
    missing: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))
    invalid: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))


def _imps_clicks(mask: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([int(mask.sum()), int(y[mask].sum())], dtype=np.int64)


def _add_categorical(counts: _ColumnCounts, column: pa.ChunkedArray, y: np.ndarray) -> None:
    keys, missing, valid = hex_keys(column)
    counts.values.add(keys[valid], y[valid])
    counts.missing += _imps_clicks(missing, y)
    counts.invalid += _imps_clicks(~missing & ~valid, y)


def _add_integer(counts: _ColumnCounts, column: pa.ChunkedArray, y: np.ndarray) -> None:
    values = _int_values(column)
    missing = np.isnan(values)
    counts.values.add(values[~missing], y[~missing])
    counts.missing += _imps_clicks(missing, y)


def _smoothed(clicks: np.ndarray, imps: np.ndarray, prior: float) -> np.ndarray:
    # The same expression as ctr.features._RateFitter._smoothed.
    return (clicks + SMOOTHING * prior) / (imps + SMOOTHING)


@dataclass(frozen=True)
class _Buckets:
    """A column's buckets: total impressions/clicks and each fold's, as float64 (exact
    integers, as the in-memory fit's bincounts)."""

    imps: np.ndarray                # (buckets,)
    clicks: np.ndarray
    fold_imps: np.ndarray           # (FOLDS, buckets)
    fold_clicks: np.ndarray

    def out_of_fold(self, prior: float) -> np.ndarray:
        """(FOLDS, buckets): each fold's rates from the other folds' counts."""
        return _smoothed(self.clicks - self.fold_clicks, self.imps - self.fold_imps, prior)


# One fold of one column: its counts, and its merged (values, impressions, clicks).
_FoldTable = tuple[_ColumnCounts, tuple[np.ndarray, np.ndarray, np.ndarray]]


class StreamFit:
    """Accumulate the statistics of `train_rows` training rows given in time order
    (`add`), then `finish` to get the transform; `encode_training` then gives the
    out-of-fold training matrix for any slice of those rows."""

    def __init__(self, train_rows: int, min_count: int = DEFAULT_MIN_COUNT,
                 max_categories: int = DEFAULT_MAX_CATEGORIES) -> None:
        if train_rows < 1:
            raise DataError("cannot fit a feature transform on an empty table")
        self.train_rows = train_rows
        self.min_count, self.max_categories = min_count, max_categories
        # The same fold bounds as ctr.features._RateFitter.
        self.bounds = np.linspace(0, train_rows, FOLDS + 1).astype(np.int64)
        self.folds = [{name: _ColumnCounts() for name in FEATURE_COLUMNS}
                      for _ in range(FOLDS)]
        self.rows_added = 0
        self.clicks = 0
        self.transform: FeatureTransform | None = None
        self._buckets: dict[str, _Buckets] = {}
        self._oof: dict[str, np.ndarray] = {}

    def _fold_pieces(self, first_row: int, rows: int) -> list[tuple[int, int, int]]:
        """(fold, start within the batch, stop) pieces of rows [first_row, +rows)."""
        pieces = []
        for fold in range(FOLDS):
            lo = max(first_row, int(self.bounds[fold]))
            hi = min(first_row + rows, int(self.bounds[fold + 1]))
            if lo < hi:
                pieces.append((fold, lo - first_row, hi - first_row))
        return pieces

    def add(self, table: pa.Table) -> None:
        """The next training rows, in time order (any batch size)."""
        if self.transform is not None:
            raise DataError("StreamFit.add after finish")
        _require_columns(table, (LABEL, *FEATURE_COLUMNS))
        if self.rows_added + table.num_rows > self.train_rows:
            raise DataError("more training rows than announced",
                            train_rows=self.train_rows,
                            rows=self.rows_added + table.num_rows)
        y_all = table.column(LABEL).to_numpy().astype(np.float64)
        self.clicks += int(y_all.sum())
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for fold, lo, hi in self._fold_pieces(self.rows_added, table.num_rows):
                part, y = table.slice(lo, hi - lo), y_all[lo:hi]
                counts = self.folds[fold]
                jobs = [pool.submit(_add_categorical, counts[name], part.column(name), y)
                        for name in CAT_COLUMNS]
                jobs += [pool.submit(_add_integer, counts[name], part.column(name), y)
                         for name in INT_COLUMNS]
                for job in jobs:
                    job.result()
        self.rows_added += table.num_rows

    # --- the fitted state ----------------------------------------------------
    def finish(self) -> FeatureTransform:
        if self.transform is not None:
            return self.transform
        if self.rows_added != self.train_rows:
            raise DataError("fewer training rows than announced",
                            train_rows=self.train_rows, rows=self.rows_added)
        prior = float(np.float64(self.clicks) / np.float64(self.train_rows))
        if not 0.0 < prior < 1.0:
            raise DataError("the training window needs both clicks and non-clicks",
                            positive_rate=prior)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            cat_jobs = {name: pool.submit(self._finish_categorical, name, prior)
                        for name in CAT_COLUMNS}
            int_jobs = {name: pool.submit(self._finish_integer, name, prior)
                        for name in INT_COLUMNS}
            categoricals = {name: job.result() for name, job in cat_jobs.items()}
            integers = {name: job.result() for name, job in int_jobs.items()}
        self.folds = []                                     # the counts are done with
        self._oof = {name: b.out_of_fold(prior) for name, b in self._buckets.items()}
        self.transform = FeatureTransform(categoricals, integers, prior, self.min_count,
                                          self.max_categories)
        return self.transform

    def _fold_tables(self, name: str) -> list[_FoldTable]:
        return [(f[name], f[name].values.merge()) for f in self.folds]

    @staticmethod
    def _total(tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        merged = _Counts()
        merged.pending = [t for t in tables if t[0].size]
        return merged.merge()

    @staticmethod
    def _bucket_counts(folds: list[_FoldTable], bucket_of: Callable[[np.ndarray], np.ndarray],
                       n_buckets: int, other: int | None) -> _Buckets:
        fold_imps = np.zeros((FOLDS, n_buckets))
        fold_clicks = np.zeros((FOLDS, n_buckets))
        for f, (counts, (values, imps, clicks)) in enumerate(folds):
            b = bucket_of(values)
            fold_imps[f] = np.bincount(b, weights=imps, minlength=n_buckets)
            fold_clicks[f] = np.bincount(b, weights=clicks, minlength=n_buckets)
            fold_imps[f, -1] += counts.missing[0]
            fold_clicks[f, -1] += counts.missing[1]
            if other is not None:
                fold_imps[f, other] += counts.invalid[0]
                fold_clicks[f, other] += counts.invalid[1]
        return _Buckets(fold_imps.sum(axis=0), fold_clicks.sum(axis=0), fold_imps,
                        fold_clicks)

    def _finish_categorical(self, name: str, prior: float) -> CategoricalStats:
        folds = self._fold_tables(name)
        uniq, counts, _ = self._total([t for _, t in folds])
        kept = np.flatnonzero(counts >= self.min_count)
        if kept.size > self.max_categories:      # most frequent first, ties by key
            kept = kept[np.lexsort((uniq[kept], -counts[kept]))[:self.max_categories]]
        keys = np.sort(uniq[kept]).astype(np.int64)
        other = keys.size

        def bucket_of(values: np.ndarray) -> np.ndarray:
            pos = np.searchsorted(keys, values)
            known = pos < keys.size
            known[known] = keys[pos[known]] == values[known]
            return np.where(known, pos, other)

        buckets = self._bucket_counts(folds, bucket_of, other + 2, other)
        self._buckets[name] = buckets
        full = _smoothed(buckets.clicks, buckets.imps, prior)
        return CategoricalStats(keys, full[:other], float(full[other]), float(full[other + 1]))

    def _finish_integer(self, name: str, prior: float) -> IntegerStats:
        folds = self._fold_tables(name)
        values, counts, _ = self._total([t for _, t in folds])
        quantiles = np.linspace(0, 1, INT_BINS + 1)[1:-1]
        edges = (np.unique(quantiles_from_counts(values, counts, quantiles)) if values.size
                 else np.empty(0, dtype=np.float64))
        buckets = self._bucket_counts(folds, lambda v: _int_buckets(v, edges),
                                      edges.size + 2, None)
        self._buckets[name] = buckets
        full = _smoothed(buckets.clicks, buckets.imps, prior)
        return IntegerStats(edges, full[:-1], float(full[-1]))

    # --- the training matrix -------------------------------------------------
    def encode_training(self, table: pa.Table, first_row: int) -> np.ndarray:
        """(rows, 40) float32: the rows of `fit_transform`'s matrix for training rows
        [first_row, first_row + table.num_rows) -- out-of-fold rates and log-odds sums."""
        transform = self.finish()
        _require_columns(table)
        n = table.num_rows
        if first_row < 0 or first_row + n > self.train_rows:
            raise DataError("rows outside the training rows", first_row=first_row, rows=n,
                            train_rows=self.train_rows)
        fold = np.searchsorted(self.bounds, np.arange(first_row, first_row + n),
                               side="right") - 1
        out = np.empty((n, N_FEATURES), dtype=np.float32)
        base = _logit(transform.prior)
        log_odds = np.full(n, base)
        for name in (*CAT_COLUMNS, *INT_COLUMNS):
            if name in transform.categoricals:
                bucket = transform.categoricals[name].bucket(table.column(name))
            else:
                bucket = transform.integers[name].bucket(table.column(name))
            row_rate = self._oof[name][fold, bucket]
            log_odds += _logit(row_rate) - base
            if name in transform.categoricals:
                out[:, FEATURE_NAMES.index(f"{name}_rate")] = row_rate
        FeatureTransform._fill_ints(table, out)
        out[:, -1] = log_odds
        return out
