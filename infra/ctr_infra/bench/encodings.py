"""Compare categorical encodings for the trainer on `ctr.synth` data (the figures are in
docs/measurements.md, "Feature encoding"). Not a test: prints a Markdown table.

    python -m ctr_infra.bench.encodings --train-rows 400000 --holdout-rows 100000 --nthread 1

Every variant encodes the integers the same way (float32, NaN = missing) and trains
XGBoost hist with the seed's settings (max_depth 8, eta 0.15, up to 200 rounds) and
early stopping on the holdout; only C1..C26 differ:

* rates + log-odds sum: `ctr.features.FeatureTransform` (what the trainer uses);
* rates only: the same without the log-odds sum;
* rates + log-odds sum + counts: plus each value's count in the training window;
* counts only (count/frequency encoding; unseen -> 0);
* vocabulary + native categorical: the K most frequent values (seen >= min count) ->
  codes 0..K-1, every other value -> K, XGBoost's native categorical splits;
* hashing: the value's 32-bit hash modulo 1024 buckets, native categorical (stateless,
  but unrelated values collide).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from ctr import metrics, synth
from ctr.features import FEATURE_NAMES, FeatureTransform, hex_keys
from ctr.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
from ctr_infra.bench.report import markdown_table

HASH_BUCKETS = 1024
Encoded = tuple[np.ndarray, np.ndarray, list[str]]      # train X, holdout X, feature types
Encoder = Callable[[pa.Table, pa.Table], Encoded]
_RATES = [FEATURE_NAMES.index(f"{c}_rate") for c in CAT_COLUMNS]
_LOG_ODDS = [FEATURE_NAMES.index("log_odds_sum")]
_INTS = list(range(len(INT_COLUMNS)))


def _ints(table: pa.Table) -> np.ndarray:
    return np.column_stack([pc.cast(table.column(c), pa.float32(), safe=False).to_numpy()
                            for c in INT_COLUMNS])


def _counts(train: pa.Table, tables: list[pa.Table]) -> list[np.ndarray]:
    """Per table: each categorical value's count in `train` (unseen 0, missing NaN)."""
    out: list[list[np.ndarray]] = [[] for _ in tables]
    for c in CAT_COLUMNS:
        keys, _, valid = hex_keys(train.column(c))
        uniq, counts = np.unique(keys[valid], return_counts=True)
        for i, table in enumerate(tables):
            k, miss, ok = hex_keys(table.column(c))
            pos = np.minimum(np.searchsorted(uniq, k), max(uniq.size - 1, 0))
            x = np.where(ok & (uniq[pos] == k), counts[pos], 0).astype(np.float32)
            x[miss] = np.nan
            out[i].append(x)
    return [np.column_stack(cols) for cols in out]


def transform_columns(columns: list[int], with_counts: bool = False) -> Encoder:
    def encode(train: pa.Table, hold: pa.Table) -> Encoded:
        t, x_train = FeatureTransform.fit_transform(train)
        assert x_train is not None
        x_tr, x_ho = x_train[:, columns], t.encode(hold)[:, columns]
        if with_counts:
            c_tr, c_ho = _counts(train, [train, hold])
            x_tr, x_ho = np.hstack([x_tr, c_tr]), np.hstack([x_ho, c_ho])
        return x_tr, x_ho, ["q"] * x_tr.shape[1]
    return encode


def counts_only(train: pa.Table, hold: pa.Table) -> Encoded:
    c_tr, c_ho = _counts(train, [train, hold])
    return (np.hstack([_ints(train), c_tr]), np.hstack([_ints(hold), c_ho]),
            ["q"] * (len(INT_COLUMNS) + len(CAT_COLUMNS)))


def vocabulary(max_categories: int, min_count: int) -> Encoder:
    def codes(table: pa.Table, vocab: dict[str, pa.Array]) -> np.ndarray:
        out = []
        for c in CAT_COLUMNS:
            col = table.column(c)
            known = pc.index_in(col, value_set=vocab[c])
            code = pc.if_else(pc.is_valid(col),
                              pc.coalesce(known, pa.scalar(len(vocab[c]), pa.int32())),
                              pa.scalar(None, pa.int32()))
            out.append(pc.cast(code, pa.float32()).to_numpy(zero_copy_only=False))
        return np.column_stack(out)

    def encode(train: pa.Table, hold: pa.Table) -> Encoded:
        vocab = {}
        for c in CAT_COLUMNS:
            vc = pc.value_counts(train.column(c).drop_null())
            counts = vc.field("counts").to_numpy()
            order = np.argsort(-counts, kind="stable")
            keep = order[counts[order] >= min_count][:max_categories]
            vocab[c] = vc.field("values").take(pa.array(keep))
        types = ["q"] * len(INT_COLUMNS) + ["c"] * len(CAT_COLUMNS)
        return (np.hstack([_ints(train), codes(train, vocab)]),
                np.hstack([_ints(hold), codes(hold, vocab)]), types)
    return encode


def hashing(train: pa.Table, hold: pa.Table) -> Encoded:
    def cols(table: pa.Table) -> np.ndarray:
        out = []
        for c in CAT_COLUMNS:
            keys, missing, _ = hex_keys(table.column(c))
            x = (keys % HASH_BUCKETS).astype(np.float32)
            x[missing] = np.nan
            out.append(x)
        return np.column_stack(out)
    types = ["q"] * len(INT_COLUMNS) + ["c"] * len(CAT_COLUMNS)
    return np.hstack([_ints(train), cols(train)]), np.hstack([_ints(hold), cols(hold)]), types


VARIANTS: dict[str, Encoder] = {
    "rates + log-odds sum (ctr.features)": transform_columns(_INTS + _RATES + _LOG_ODDS),
    "rates + log-odds sum + counts": transform_columns(_INTS + _RATES + _LOG_ODDS, True),
    "rates only": transform_columns(_INTS + _RATES),
    "counts only": counts_only,
    "vocabulary <=100 (min 20) + native categorical": vocabulary(100, 20),
    "vocabulary <=1000 (min 20) + native categorical": vocabulary(1000, 20),
    f"hashing to {HASH_BUCKETS} buckets + native categorical": hashing,
}


def run(train_rows: int, holdout_rows: int, seed: int = 0,
        nthread: int = 0) -> list[dict[str, float | str]]:
    table, p_true = synth.generate_table(train_rows + holdout_rows, seed=seed)
    train, hold = table.slice(0, train_rows), table.slice(train_rows)
    y_tr = train.column(LABEL).to_numpy().astype(np.float32)
    y_ho = hold.column(LABEL).to_numpy().astype(np.float32)
    bayes = metrics.logloss(y_ho, p_true[train_rows:])
    prior = metrics.logloss(y_ho, np.full(holdout_rows, y_tr.mean()))
    rows: list[dict[str, float | str]] = []
    for name, encode in VARIANTS.items():
        started = time.perf_counter()
        x_tr, x_ho, types = encode(train, hold)
        kw = {"feature_types": types, "enable_categorical": True}
        dtr = xgb.QuantileDMatrix(x_tr, label=y_tr, **kw)
        dho = xgb.QuantileDMatrix(x_ho, label=y_ho, ref=dtr, **kw)
        encoded = time.perf_counter()
        booster = xgb.train(
            {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
             "max_depth": 8, "eta": 0.15, "max_cat_to_onehot": 1, "seed": 0,
             "nthread": nthread},
            dtr, num_boost_round=200, evals=[(dho, "holdout")], verbose_eval=False,
            callbacks=[xgb.callback.EarlyStopping(rounds=20, save_best=True)])
        p = booster.predict(dho)
        ll = metrics.logloss(y_ho, p)
        rows.append({"encoding": name, "logloss": ll, "auc": metrics.auc(y_ho, p),
                     "gap": (ll - bayes) / (prior - bayes),
                     "ece": metrics.calibration_error(y_ho, p),
                     "rounds": booster.num_boosted_rounds(),
                     "encode_s": encoded - started,
                     "train_s": time.perf_counter() - encoded})
        print(to_markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    rows.append({"encoding": "Bayes-optimal (true p)", "logloss": bayes,
                 "auc": metrics.auc(y_ho, p_true[train_rows:]), "gap": 0.0})
    rows.append({"encoding": "constant prior", "logloss": prior, "auc": 0.5, "gap": 1.0})
    return rows


def to_markdown(rows: list[dict[str, float | str]]) -> str:
    formats = {"logloss": ".5f", "auc": ".4f", "gap": ".3f", "ece": ".4f", "rounds": "d",
               "encode_s": ".1f", "train_s": ".1f"}
    cells = [(r["encoding"], *(format(r[k], f) if k in r else "" for k, f in formats.items()))
             for r in rows]
    return "\n".join(markdown_table(("encoding", "logloss", "AUC", "gap", "ECE", "rounds",
                                      "encode s", "train s"), cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=400_000)
    parser.add_argument("--holdout-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nthread", type=int, default=0, help="XGBoost threads (0 = all)")
    args = parser.parse_args(argv)
    print(to_markdown(run(args.train_rows, args.holdout_rows, args.seed, args.nthread)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
