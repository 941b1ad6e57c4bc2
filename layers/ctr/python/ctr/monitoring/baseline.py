"""The training baseline that drift and skew are measured against, built by the train
step and shipped with the model (MLflow artifact `monitoring/baseline.json`, exported by
reload to `serving/vN/baseline.json`).

What it holds, per feature, as a probability distribution over fixed bins:

* I1..I13: `INT_BINS` quantile bins of the training values (edges at the 1/B .. (B-1)/B
  quantiles, duplicates dropped: count-like integers have many ties, so some bins hold
  more than 1/B), plus one bin for "missing";
* C1..C26: the `TOP_K` most frequent values, then "other" (every other value), then
  "missing"; and `unseen_share`, the share of non-missing training values that the
  model's feature transform did not keep (seen fewer than its `min_count` times: the
  model gives them one pooled rate, it has learned nothing specific about them);
* the prediction: `PREDICTION_BINS` quantile bins of the model's predictions on its own
  holdout.

The bins are fixed at training time, so a new part is summarised by counting its rows
into the same bins (`distribution`), and two summaries compare bin by bin
(`ctr.monitoring.drift`). The training rows used are the newest `MAX_ROWS` of the
training slice (the closest to what the model will serve); the counts are exact on them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pydantic

from ctr import cathash
from ctr.features import FeatureTransform
from ctr.schema import CAT_COLUMNS, INT_COLUMNS

FORMAT = 1
INT_BINS = 10
TOP_K = 20
PREDICTION_BINS = 10
MAX_ROWS = 1_000_000
BASELINE_FILE = "baseline.json"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)


class IntBaseline(_Model):
    feature: str
    kind: Literal["int"] = "int"
    edges: list[float] = pydantic.Field(description="bin i = [edges[i-1], edges[i])")
    freqs: list[float] = pydantic.Field(description="len(edges)+1 bins, then missing")
    missing_share: float


class CatBaseline(_Model):
    feature: str
    kind: Literal["cat"] = "cat"
    values: list[str] = pydantic.Field(description="the top-K values, most frequent first")
    freqs: list[float] = pydantic.Field(description="one per value, then other, then missing")
    missing_share: float
    unseen_share: float | None = pydantic.Field(
        None, description="share of non-missing values the transform did not keep")


class PredictionBaseline(_Model):
    edges: list[float]
    freqs: list[float]
    mean: float


class Baseline(_Model):
    format: int = FORMAT
    rows: int = pydantic.Field(description="training rows summarised")
    holdout_rows: int
    ints: list[IntBaseline]
    cats: list[CatBaseline]
    prediction: PredictionBaseline | None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Baseline:
        return cls.model_validate_json(data)


# --------------------------------------------------------------------------- counting

def _int_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False),
                      dtype=np.float64)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)


def int_counts(column: pa.ChunkedArray | pa.Array, edges: list[float]) -> np.ndarray:
    """Rows per bin of `edges` (len(edges)+1 bins), then the missing rows."""
    values = _int_values(column)
    missing = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values[~missing], side="right")
    return np.r_[np.bincount(bins, minlength=len(edges) + 1), missing.sum()].astype(np.float64)


def cat_counts(column: pa.ChunkedArray | pa.Array, values: list[str]) -> np.ndarray:
    """Rows per top-K value (hex text), then "other", then missing; the column may hold
    hex strings or uint32 (Parquet parts)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    missing = int(arr.null_count)
    if not values:
        return np.r_[float(len(arr) - missing), float(missing)]
    value_set = pa.array(values, pa.string())
    if pa.types.is_uint32(arr.type):
        value_set = cathash.from_hex(value_set)
    index = pc.index_in(arr, value_set=value_set)
    found = index.drop_null().to_numpy(zero_copy_only=False)
    counts = np.bincount(found, minlength=len(values)).astype(np.float64)
    other = len(arr) - missing - found.size
    return np.r_[counts, float(other), float(missing)]


def prediction_counts(predictions: np.ndarray, edges: list[float]) -> np.ndarray:
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), predictions, side="right")
    return np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)


def unseen_share(column: pa.ChunkedArray | pa.Array, transform: FeatureTransform | None,
                 feature: str) -> float | None:
    """Share of non-missing values the transform has no rate of its own for (values it
    saw fewer than `min_count` times in its training window, or never)."""
    if transform is None or feature not in transform.categoricals:
        return None
    stats = transform.categoricals[feature]
    bucket = stats.bucket(column)
    present = bucket != stats.keys.size + 1
    n = int(present.sum())
    return float((bucket[present] == stats.keys.size).sum() / n) if n else 0.0


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    levels = np.arange(1, bins) / bins
    return [float(e) for e in np.unique(np.quantile(values, levels))]


# --------------------------------------------------------------------------- building

def build_baseline(train: pa.Table, holdout_predictions: np.ndarray,
                   transform: FeatureTransform | None = None, *, max_rows: int = MAX_ROWS,
                   int_bins: int = INT_BINS, top_k: int = TOP_K,
                   prediction_bins: int = PREDICTION_BINS) -> Baseline:
    """Summarise the newest `max_rows` training rows and the holdout predictions."""
    table = train.slice(max(0, train.num_rows - max_rows))
    ints = []
    for name in INT_COLUMNS:
        values = _int_values(table.column(name))
        edges = quantile_edges(values, int_bins)
        counts = int_counts(table.column(name), edges)
        ints.append(IntBaseline(feature=name, edges=edges, freqs=_shares(counts).tolist(),
                                missing_share=float(counts[-1] / max(table.num_rows, 1))))
    cats = []
    for name in CAT_COLUMNS:
        column = table.column(name)
        vc = pc.value_counts(column.drop_null())
        if len(vc):
            counts_arr = vc.field("counts").to_numpy()
            order = np.argsort(-counts_arr, kind="stable")[:top_k]
            # hex text for people, whatever the column's type (parts store uint32)
            top_values = vc.field("values").take(pa.array(order))
            if pa.types.is_uint32(top_values.type):
                top_values = cathash.to_hex(top_values)
            top = [str(v) for v in top_values.to_pylist()]
        else:
            top = []
        counts = cat_counts(column, top)
        cats.append(CatBaseline(feature=name, values=top, freqs=_shares(counts).tolist(),
                                missing_share=float(counts[-1] / max(table.num_rows, 1)),
                                unseen_share=unseen_share(column, transform, name)))
    prediction = None
    preds = np.asarray(holdout_predictions, dtype=np.float64)
    if preds.size:
        edges = quantile_edges(preds, prediction_bins)
        prediction = PredictionBaseline(
            edges=edges, freqs=_shares(prediction_counts(preds, edges)).tolist(),
            mean=float(preds.mean()))
    return Baseline(rows=table.num_rows, holdout_rows=int(preds.size), ints=ints, cats=cats,
                    prediction=prediction)

