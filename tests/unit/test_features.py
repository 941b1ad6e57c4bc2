"""FeatureTransform and Predictor: encoding rules, persistence, and training/serving parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ctr import criteo, synth
from ctr.errors import DataError, ValidationError
from ctr.features import (
    FEATURE_NAMES,
    FOLDS,
    FORMAT_VERSION,
    INT_BINS,
    SMOOTHING,
    FeatureTransform,
    hex_keys,
)
from ctr.predictor import Predictor
from ctr.schema import CAT_COLUMNS, FEATURE_COLUMNS, INT_COLUMNS, PARQUET_SCHEMA, to_record
from ctr.training import TrainParams, fit
from tests.synth_parts import parquet_bytes

RATE = {c: FEATURE_NAMES.index(f"{c}_rate") for c in CAT_COLUMNS}
LOG_ODDS = FEATURE_NAMES.index("log_odds_sum")


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def rows_table(rows: list[dict]) -> pa.Table:
    """Raw rows (as the predict API receives them, label optional) -> typed table."""
    full = [{"label": r.get("label", 0), **{c: r.get(c) for c in FEATURE_COLUMNS}}
            for r in rows]
    return pa.Table.from_pylist(full, schema=PARQUET_SCHEMA)


def small_table() -> pa.Table:
    """C1: "0000000a" x40 (every other one clicked), "0000000b" x19 (never clicked),
    "000000ff" once (clicked). Other categoricals: one value everywhere."""
    rows = []
    for i in range(60):
        value, label = ("0000000a", i % 2) if i < 40 else ("0000000b", 0)
        rows.append({"label": label, **{c: i % 7 for c in INT_COLUMNS},
                     **{c: "00000001" for c in CAT_COLUMNS}, "C1": value})
    rows[-1].update(C1="000000ff", label=1)
    return rows_table(rows)


@pytest.fixture(scope="module")
def trained():
    table, _ = synth.generate_table(6000, seed=3)
    train, validation, holdout = table.slice(0, 4500), table.slice(4500, 500), table.slice(5000)
    result = fit(train, validation, holdout,
                 TrainParams(num_boost_round=15, min_count=5, nthread=1))
    return result, holdout


def test_hex_keys_parse_from_the_arrow_buffers():
    arr = pa.array(["ffffffff", None, "0000000A", "abc", "00000010", "zzzzzzzz", "00000001"])
    keys, missing, valid = hex_keys(pa.chunked_array([arr.slice(0, 3), arr.slice(3)]))
    assert keys[0] == 0xFFFFFFFF and keys[4] == 16 and keys[6] == 1
    assert missing.tolist() == [False, True, False, False, False, False, False]
    # Uppercase, wrong length and non-hex strings are not values seen in training.
    assert valid.tolist() == [True, False, False, False, True, False, True]
    sliced = hex_keys(arr.slice(4, 3))[0]
    assert sliced.tolist() == [16, 0, 1]
    odd_arrays = (pa.array(["", None]), pa.array([None, None], pa.string()),
                  pa.array([], pa.string()))
    for odd in odd_arrays:
        _, missing, valid = hex_keys(odd)
        assert not valid.any() and missing.tolist() == [v is None for v in odd.to_pylist()]


def test_fit_keeps_values_seen_min_count_times_with_smoothed_rates():
    t = FeatureTransform.fit(small_table(), min_count=5)
    prior = 21 / 60                                  # 20 clicks on "a" + the "ff" one
    assert t.prior == pytest.approx(prior)
    stats = t.categoricals["C1"]
    assert stats.keys.tolist() == [0xA, 0xB]
    assert stats.rates[0] == pytest.approx((20 + SMOOTHING * prior) / (40 + SMOOTHING))
    assert stats.rates[1] == pytest.approx((0 + SMOOTHING * prior) / (19 + SMOOTHING))
    # The single rare value forms the "other" bucket.
    assert stats.other_rate == pytest.approx((1 + SMOOTHING * prior) / (1 + SMOOTHING))
    assert stats.missing_rate == pytest.approx(prior)          # no missing C1: the prior
    capped = FeatureTransform.fit(small_table(), min_count=5, max_categories=1)
    assert capped.categoricals["C1"].keys.tolist() == [0xA]     # the most frequent one


def test_encode_integers_as_numbers_and_missing_as_nan():
    t = FeatureTransform.fit(small_table(), min_count=5)
    x = t.encode(rows_table([{"I1": 5, "I2": -3, "I3": None, "I4": 2**40}]))
    assert x.shape == (1, len(FEATURE_NAMES)) and x.dtype == np.float32
    assert x[0, 0] == 5 and x[0, 1] == -3 and math.isnan(x[0, 2])
    assert x[0, 3] == np.float32(2**40)
    # Only missing integers are NaN: every categorical rate and the sum are numbers.
    assert not np.isnan(x[0, len(INT_COLUMNS):]).any()


def test_encode_categoricals_known_rare_unseen_and_missing():
    t = FeatureTransform.fit(small_table(), min_count=5)
    stats = t.categoricals["C1"]
    x = t.encode(rows_table([{"C1": "0000000b"}, {"C1": "000000ff"}, {"C1": "deadbeef"},
                             {"C1": "not-hex!"}, {"C1": None}]))
    rate = x[:, RATE["C1"]]
    assert rate[0] == np.float32(stats.rates[1])
    # Rare in training, never seen, malformed: all the pooled "other" bucket.
    assert np.all(rate[1:4] == np.float32(stats.other_rate))
    # Missing: the rate of missing C1 (none in training: the smoothed prior).
    assert rate[4] == np.float32(stats.missing_rate) == np.float32(t.prior)


def test_integers_are_binned_by_training_quantiles_for_the_log_odds_sum():
    t = FeatureTransform.fit(small_table(), min_count=5)
    stats = t.integers["I1"]                  # training values 0..6
    assert stats.edges.tolist() == sorted(set(stats.edges.tolist()))
    assert 0 < stats.edges.size <= INT_BINS - 1 and stats.rates.size == stats.edges.size + 1
    col = pa.array([-5, 0, 6, 10**9, None], pa.int64())
    assert stats.bucket(col).tolist() == [0, int(np.searchsorted(stats.edges, 0, "right")),
                                          stats.edges.size, stats.edges.size,
                                          stats.edges.size + 1]


def test_log_odds_sum_adds_every_column():
    t = FeatureTransform.fit(small_table(), min_count=5)
    row = {"C1": "0000000b", "I1": 3}
    x = t.encode(rows_table([row, {}]))
    def contribution(name: str, value: object) -> float:
        stats = t.categoricals.get(name) or t.integers[name]
        column = pa.array([value], PARQUET_SCHEMA.field(name).type)
        rate = stats.bucket_rates()[stats.bucket(column)][0]
        return logit(rate) - logit(t.prior)
    expected = logit(t.prior) + sum(contribution(c, row.get(c)) for c in FEATURE_COLUMNS)
    assert x[0, LOG_ODDS] == pytest.approx(expected, rel=1e-6)
    assert contribution("C1", "0000000b") == pytest.approx(
        logit(t.categoricals["C1"].rates[1]) - logit(t.prior))
    all_missing = logit(t.prior) + sum(contribution(c, None) for c in FEATURE_COLUMNS)
    assert x[1, LOG_ODDS] == pytest.approx(all_missing, rel=1e-6)


def test_training_rows_get_out_of_fold_rates():
    table = small_table()
    t, x = FeatureTransform.fit_transform(table, min_count=5)
    assert x is not None and x.shape == (60, len(FEATURE_NAMES))
    # Row 58 ("0000000b", last fold) gets the rate of the other folds only: 8 of the
    # value's 19 rows, none clicked; serving uses all 19.
    oof = (0 + SMOOTHING * t.prior) / (8 + SMOOTHING)
    assert x[58, RATE["C1"]] == np.float32(oof)
    assert x[58, RATE["C1"]] != np.float32(t.categoricals["C1"].rates[1])
    # The integers are exactly what `encode` gives; the log-odds sum uses the
    # out-of-fold rates too.
    full = t.encode(table)
    np.testing.assert_array_equal(x[:, :len(INT_COLUMNS)], full[:, :len(INT_COLUMNS)])
    assert x[58, LOG_ODDS] != full[58, LOG_ODDS]
    assert FOLDS == 5                       # 60 rows -> folds of 12: row 58 is in the last


def test_dictionary_encoded_columns_encode_like_strings():
    table = small_table()
    t = FeatureTransform.fit(table, min_count=5)
    as_dict = table.set_column(table.schema.get_field_index("C1"), "C1",
                               table.column("C1").dictionary_encode())
    np.testing.assert_array_equal(t.encode(as_dict), t.encode(table))


def test_missing_column_is_a_validation_error():
    t = FeatureTransform.fit(small_table(), min_count=5)
    with pytest.raises(ValidationError) as err:
        t.encode(small_table().drop_columns(["C7"]))
    assert err.value.details["errors"][0]["loc"] == ["C7"]


def test_state_round_trips_through_versioned_json():
    t = FeatureTransform.fit(small_table(), min_count=5)
    d = json.loads(t.to_json())
    assert d["format_version"] == FORMAT_VERSION and d["feature_names"] == FEATURE_NAMES
    again = FeatureTransform.from_json(json.dumps(d))
    assert again == t
    np.testing.assert_array_equal(again.encode(small_table()), t.encode(small_table()))
    with pytest.raises(ValidationError):
        FeatureTransform.from_dict({**d, "format_version": FORMAT_VERSION + 1})


def test_fit_needs_both_classes():
    no_clicks = small_table().set_column(0, "label", pa.array([0] * 60, pa.int8()))
    with pytest.raises(DataError):
        FeatureTransform.fit(no_clicks)


def test_same_raw_row_same_prediction_training_side_and_serving_side(trained, tmp_path):
    result, holdout = trained
    # Training side: what `fit` measured on the holdout rows, as read from Parquet.
    training_side = result.holdout_predictions
    # Serving side: the bytes as shipped in the bundle, and raw requests as the predict
    # API receives them -- JSON rows and TSV lines -- through ctr.criteo's parsers.
    served = Predictor.from_bytes(result.predictor.model_bytes(),
                                  result.predictor.transform.to_json())
    stored = pq.read_table(pa.BufferReader(parquet_bytes(holdout)))      # uint32 categoricals
    # requests carry the hex text (as the samples API hands it out)
    raw_rows = json.loads(json.dumps(to_record(stored).drop_columns(["label"]).to_pylist()))
    from_rows = served.predict_table(criteo.rows_to_table(raw_rows))
    np.testing.assert_allclose(from_rows, training_side, rtol=0, atol=1e-6)
    lines = criteo.table_to_lines(stored, with_label=False)
    table, errors = criteo.lines_to_table(lines)
    assert errors == []
    np.testing.assert_allclose(served.predict_table(table), training_side, rtol=0, atol=1e-6)
    for i in (0, 17, 999):                  # one row at a time, as single requests
        one = served.predict_table(criteo.rows_to_table([raw_rows[i]]))
        assert one[0] == pytest.approx(training_side[i], abs=1e-6)
    result.predictor.save(tmp_path / "bundle")
    loaded = Predictor.load(tmp_path / "bundle")
    np.testing.assert_allclose(loaded.predict_table(holdout), training_side, atol=1e-6)


def test_unseen_and_missing_values_predict_finite_probabilities(trained):
    result, _ = trained
    rows = [{c: None for c in FEATURE_COLUMNS},
            {**{c: "ffffffff" for c in CAT_COLUMNS}, **{c: 10**12 for c in INT_COLUMNS}}]
    p = result.predictor.predict_table(rows_table(rows))
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    assert result.predictor.predict_table(rows_table([])).shape == (0,)


def encode_column_by_column(t: FeatureTransform, table: pa.Table) -> np.ndarray:
    """The encoding as the module docstring defines it, one column at a time with each
    column's own `bucket`/`bucket_rates` (how `encode` worked before it went block-wise):
    the reference the block-wise `encode` must match bit for bit."""
    out = np.empty((table.num_rows, len(FEATURE_NAMES)), dtype=np.float32)
    def term(rate: np.ndarray | float) -> np.ndarray:
        return np.log(rate) - np.log1p(-np.asarray(rate))
    log_odds = np.full(table.num_rows, term(t.prior))
    for name in (*CAT_COLUMNS, *INT_COLUMNS):
        stats = t.categoricals.get(name) or t.integers[name]
        rate = stats.bucket_rates()[stats.bucket(table.column(name))]
        log_odds += term(rate) - term(t.prior)
        if name in t.categoricals:
            out[:, RATE[name]] = rate
        else:
            out[:, INT_COLUMNS.index(name)] = pc.cast(table.column(name), pa.float32(),
                                                      safe=False).to_numpy()
    out[:, LOG_ODDS] = log_odds
    return out


def awkward_table(holdout: pa.Table) -> pa.Table:
    """Holdout rows plus unseen, malformed and missing values, in several chunks, with
    a dictionary-encoded and a large_string categorical column."""
    rows = holdout.slice(0, 300).to_pylist()
    rows[0] |= {"C1": "ffffffff", "C2": None, "I1": None}       # unseen, missing
    rows[1] = {"label": 0}                                      # every value missing
    rows[2] |= {"C3": "NOT-HEX!", "C4": "", "I2": 2**40, "I3": -7}
    rows[3] = {"label": 1, **{c: "ffffffff" for c in CAT_COLUMNS},
               **{c: 10**12 for c in INT_COLUMNS}}              # everything unseen
    table = rows_table(rows)
    table = table.set_column(table.schema.get_field_index("C5"), "C5",
                             table.column("C5").dictionary_encode())
    table = table.set_column(table.schema.get_field_index("C6"), "C6",
                             table.column("C6").cast(pa.large_string()))
    return pa.concat_tables([table.slice(0, 1), table.slice(1, 120), table.slice(121)])


def test_encode_matches_the_column_by_column_definition_bit_for_bit(trained):
    result, holdout = trained
    t = result.predictor.transform
    table = awkward_table(holdout)
    assert table.column("C1").num_chunks == 3

    encoded = t.encode(table)

    np.testing.assert_array_equal(encoded, encode_column_by_column(t, table))
    assert np.isnan(encoded[1, :len(INT_COLUMNS)]).all()
    assert not np.isnan(encoded[:, len(INT_COLUMNS):]).any()


def test_encode_does_not_depend_on_how_rows_are_batched(trained):
    result, holdout = trained
    t = result.predictor.transform
    table = awkward_table(holdout)
    whole = t.encode(table)

    in_blocks = t.encode(table, block_rows=7)             # block edges inside chunks
    one_by_one = np.vstack([t.encode(table.slice(i, 1)) for i in range(table.num_rows)])
    valid = [0, 1, *range(3, 40)]                         # row 2 is not a valid request
    rows = [table.slice(i, 1).to_pylist()[0] for i in valid]
    from_request = t.encode(criteo.rows_to_table(rows))     # the API's path

    np.testing.assert_array_equal(in_blocks, whole)
    np.testing.assert_array_equal(one_by_one, whole)
    np.testing.assert_array_equal(from_request, whole[valid])


def test_in_place_prediction_equals_dmatrix_prediction(trained):
    result, holdout = trained
    predictor = result.predictor
    table = awkward_table(holdout)

    served = predictor.predict_table(table)
    via_dmatrix = predictor.booster.predict(predictor.transform.matrix(table))

    assert served.dtype == np.float64
    np.testing.assert_array_equal(served, via_dmatrix.astype(np.float64))
    one = predictor.predict_table(table.slice(3, 1))
    assert one.tolist() == [served[3]]
