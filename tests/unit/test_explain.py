"""Explanations: XGBoost's per-feature contributions mapped back to the 39 raw fields
(`Predictor.explain_table`) and `POST /predict?explain=true`."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ctr import bundle
from ctr.features import FEATURE_NAMES, _logit
from ctr.schema import FEATURE_COLUMNS
from ctr.serving.app import ServingSettings, create_app
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import (
    MODEL_NAME,
    FakeMlflowClient,
    copy_downloader,
    sample_table,
    tiny_predictor,
)

TABLE = sample_table().slice(0, 200)
# float32 trees: contributions sum to the margin within float32 rounding of ~40 terms.
LOGIT_TOLERANCE = 1e-4


def test_encoded_columns_come_from_raw_fields_in_order():
    # explain_table relies on it: encoded column j < 39 is raw field j.
    assert FEATURE_NAMES[:39] == [c if c.startswith("I") else f"{c}_rate"
                                  for c in FEATURE_COLUMNS]
    assert FEATURE_NAMES[39:] == ["log_odds_sum"]


def test_terms_sum_to_the_log_odds_feature():
    transform = tiny_predictor().transform
    encoded, terms = transform.encode_with_terms(TABLE)
    assert np.array_equal(encoded, transform.encode(TABLE), equal_nan=True)
    assert terms.shape == (TABLE.num_rows, 39)
    np.testing.assert_allclose(terms.sum(axis=1) + _logit(transform.prior), encoded[:, -1],
                               rtol=0, atol=1e-5)


def test_contributions_plus_base_are_the_logit_of_the_prediction():
    predictor = tiny_predictor(1)
    why = predictor.explain_table(TABLE)
    assert why.contributions.shape == (TABLE.num_rows, 39)
    np.testing.assert_array_equal(why.probabilities, predictor.predict_table(TABLE))
    margin = why.base + why.contributions.sum(axis=1)
    np.testing.assert_allclose(margin, _logit(why.probabilities), atol=LOGIT_TOLERANCE)
    # Not all zero and not one field only: the explanation says something.
    assert (np.abs(why.contributions) > 1e-6).sum(axis=1).min() >= 2


def test_a_field_that_differs_moves_its_own_contribution():
    predictor = tiny_predictor(1)
    rows = TABLE.slice(0, 1).to_pylist()
    row = rows[0]
    changed = dict(row, C1=None)      # missing C1 has its own rate
    from ctr import criteo
    table = criteo.rows_to_table([{k: row[k] for k in FEATURE_COLUMNS},
                                  {k: changed[k] for k in FEATURE_COLUMNS}])
    why = predictor.explain_table(table)
    c1 = FEATURE_COLUMNS.index("C1")
    if why.probabilities[0] != why.probabilities[1]:
        assert why.contributions[0, c1] != why.contributions[1, c1]


@pytest.fixture
def api(tmp_path) -> TestClient:
    store = Store(MemoryS3(), "bucket")
    registry = FakeMlflowClient(tmp_path / "mlflow")
    registry.set_alias("production", registry.add_version(tiny_predictor(1)))
    bundle.publish_production(registry, store, MODEL_NAME, downloader=copy_downloader)
    settings = ServingSettings(bucket_name="bucket", web_dir=None)
    return TestClient(create_app(settings, store_factory=lambda: store))


def test_predict_explain_returns_every_field_sorted_and_consistent(api):
    rows = TABLE.slice(0, 5).select(list(FEATURE_COLUMNS)).to_pylist()
    plain = api.post("/predict", json={"rows": rows})
    assert plain.status_code == 200 and "explanations" not in plain.json()
    answer = api.post("/predict?explain=true", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == plain.json()["predictions"]
    assert len(body["explanations"]) == 5
    for p, exp in zip(body["predictions"], body["explanations"], strict=True):
        assert set(exp) == {"base_value", "contributions"}
        fields = [c["field"] for c in exp["contributions"]]
        assert sorted(fields) == sorted(FEATURE_COLUMNS)
        sizes = [abs(c["value"]) for c in exp["contributions"]]
        assert sizes == sorted(sizes, reverse=True)
        total = exp["base_value"] + sum(c["value"] for c in exp["contributions"])
        assert total == pytest.approx(float(_logit(p)), abs=LOGIT_TOLERANCE)


def test_explain_false_and_other_forms(api):
    line = "\t".join("" if v is None else str(v) for v in
                     TABLE.slice(0, 1).select(list(FEATURE_COLUMNS)).to_pylist()[0].values())
    body = api.post("/predict?explain=false", json={"lines": [line]}).json()
    assert "explanations" not in body
    body = api.post("/predict?explain=true", json={"lines": [line]}).json()
    assert len(body["explanations"]) == 1
    assert api.post("/predict?explain=maybe", json={"lines": [line]}).status_code == 422


def test_an_unknown_query_parameter_is_a_field_level_422(api):
    answer = api.post("/predict?explain=true&verbose=1", json={"rows": [{"I1": 1}]})
    assert answer.status_code == 422
    assert any(e["loc"][-1] == "verbose" for e in answer.json()["errors"]), answer.text
