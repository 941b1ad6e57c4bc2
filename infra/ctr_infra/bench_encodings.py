"""Compare categorical encodings for the trainer on `ctr.synth` data (figures quoted in
`ctr.features`' docstring). Not a test: prints a Markdown table.

    python -m ctr_infra.bench_encodings --train-rows 400000 --holdout-rows 100000

Every variant encodes the integers the same way (float32, NaN = missing) and trains
XGBoost hist with the seed's settings (max_depth 8, eta 0.15, up to 200 rounds) and
early stopping on the holdout; only C1..C26 differ:

* vocabulary: `ctr.features.FeatureTransform` (frequent values -> codes, rest ->
  "other", native categorical splits), at two vocabulary sizes;
* count: each value -> its count in the training window (unseen -> 0), numeric;
* hashing: the value's 32-bit hash modulo 1024 buckets, native categorical (stateless,
  but unrelated values collide).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from ctr import metrics, synth
from ctr.features import FeatureTransform
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS, LABEL

HASH_BUCKETS = 1024
Encoder = Callable[[pa.Table, pa.Table], tuple[np.ndarray, np.ndarray, list[str]]]


def _ints(table: pa.Table) -> np.ndarray:
    return np.column_stack([pc.cast(table.column(c), pa.float32()).to_numpy()
                            for c in INT_COLUMNS])


def vocabulary(max_categories: int, min_count: int) -> Encoder:
    def encode(train: pa.Table, hold: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
        t = FeatureTransform.fit(train, max_categories=max_categories, min_count=min_count)
        return t.encode(train), t.encode(hold), ["q"] * 13 + ["c"] * 26
    return encode


def count(train: pa.Table, hold: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
    def cols(table: pa.Table, tables: dict[str, tuple[pa.Array, np.ndarray]]) -> np.ndarray:
        out = []
        for c in CAT_COLUMNS:
            values, counts = tables[c]
            col = table.column(c)
            idx = pc.index_in(col, value_set=values).to_numpy(zero_copy_only=False)
            known = ~np.isnan(idx)
            x = np.zeros(len(idx), dtype=np.float32)
            x[known] = counts[idx[known].astype(np.int64)]
            x[~pc.is_valid(col).to_numpy(zero_copy_only=False)] = np.nan
            out.append(x)
        return np.column_stack(out)

    tables = {}
    for c in CAT_COLUMNS:
        vc = pc.value_counts(train.column(c).drop_null())
        tables[c] = (vc.field("values"), vc.field("counts").to_numpy().astype(np.float32))
    return (np.hstack([_ints(train), cols(train, tables)]),
            np.hstack([_ints(hold), cols(hold, tables)]), ["q"] * 39)


def hashing(train: pa.Table, hold: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
    def cols(table: pa.Table) -> np.ndarray:
        out = []
        for c in CAT_COLUMNS:
            values = table.column(c).to_pylist()
            out.append(np.array([np.nan if v is None else int(v, 16) % HASH_BUCKETS
                                 for v in values], dtype=np.float32))
        return np.column_stack(out)
    return (np.hstack([_ints(train), cols(train)]), np.hstack([_ints(hold), cols(hold)]),
            ["q"] * 13 + ["c"] * 26)


def run(train_rows: int, holdout_rows: int, seed: int) -> list[dict[str, float | str]]:
    table, p_true = synth.generate_table(train_rows + holdout_rows, seed=seed)
    train, hold = table.slice(0, train_rows), table.slice(train_rows)
    y_tr = train.column(LABEL).to_numpy().astype(np.float32)
    y_ho = hold.column(LABEL).to_numpy().astype(np.float32)
    bayes = metrics.logloss(y_ho, p_true[train_rows:])
    prior = metrics.logloss(y_ho, np.full(holdout_rows, y_tr.mean()))
    variants: dict[str, Encoder] = {
        "vocabulary 1000 (min count 20) + native categorical": vocabulary(1000, 20),
        "vocabulary 10000 (min count 5) + native categorical": vocabulary(10_000, 5),
        "count encoding (numeric)": count,
        f"hashing to {HASH_BUCKETS} buckets + native categorical": hashing,
    }
    rows: list[dict[str, float | str]] = []
    for name, encode in variants.items():
        started = time.perf_counter()
        x_tr, x_ho, types = encode(train, hold)
        kw = {"feature_names": list(FEATURE_COLUMNS), "feature_types": types,
              "enable_categorical": True}
        dtr = xgb.QuantileDMatrix(x_tr, label=y_tr, **kw)
        dho = xgb.QuantileDMatrix(x_ho, label=y_ho, ref=dtr, **kw)
        encoded = time.perf_counter()
        booster = xgb.train(
            {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
             "max_depth": 8, "eta": 0.15, "max_cat_to_onehot": 1, "seed": 0},
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
    rows.append({"encoding": "Bayes-optimal (true p)", "logloss": bayes,
                 "auc": metrics.auc(y_ho, p_true[train_rows:]), "gap": 0.0})
    rows.append({"encoding": "constant prior", "logloss": prior, "auc": 0.5, "gap": 1.0})
    return rows


def to_markdown(rows: list[dict[str, float | str]]) -> str:
    lines = ["| encoding | logloss | AUC | gap | ECE | rounds | encode s | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(key: str, fmt: str, r: dict[str, float | str] = r) -> str:
            return format(r[key], fmt) if key in r else ""
        lines.append(f"| {r['encoding']} | {f('logloss', '.5f')} | {f('auc', '.4f')} | "
                     f"{f('gap', '.3f')} | {f('ece', '.4f')} | {f('rounds', 'd')} | "
                     f"{f('encode_s', '.1f')} | {f('train_s', '.1f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=400_000)
    parser.add_argument("--holdout-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(to_markdown(run(args.train_rows, args.holdout_rows, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
