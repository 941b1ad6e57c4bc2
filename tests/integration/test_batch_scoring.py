"""Batch scoring and explanations on the local cloud, with a model trained and published
by the real train and reload functions.

* `POST /predict?explain=true` through API Gateway: per row, base value + the 39 raw
  fields' contributions = the logit of the returned probability.
* The scoring state machine on a file with bad lines and label-less lines, in several
  ranges, with a child that crashes after writing its part (`score.after_write`): rows +
  rejects = lines, every valid line joined to the probability the bundle gives it, and
  the retried child adopted its part instead of writing output twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from ctr import bundle, criteo, layout, scoring
from ctr.schema import FEATURE_COLUMNS, read_part, to_record
from ctr_infra.commands import score as score_command
from tests.synth_parts import put_parts

ROWS_PER_PART = 4000
LOGIT_TOLERANCE = 1e-4     # float32 trees: the contributions' sum is exact to ~1e-6
BAD_LINES = [b"not a criteo line", b"", b"1\t" + b"\t".join([b"zz"] * 39),
             b"0\t1\t2\t3"]


@pytest.fixture(scope="module")
def served(cloud):
    cloud.reset_data()
    for key in list(cloud.store.list_keys(layout.BATCH_PREFIX)):
        cloud.s3.delete_object(Bucket=cloud.bucket, Key=key)
    put_parts(cloud.store, 0, 2, ROWS_PER_PART, seed=33)
    trained = cloud.invoke("TrainFunction", {"num_boost_round": 20, "execution": "it-score"})
    assert trained["status"] == "trained" and trained["promoted"], trained
    assert cloud.invoke("ReloadFunction")["status"] == "published"
    return cloud


def parts_table(cloud) -> pa.Table:
    keys = sorted(cloud.store.list_keys(layout.PARQUET_PREFIX), key=layout.index_of)
    # as a client sees the rows: categoricals as hex text (parts store uint32)
    return pa.concat_tables(to_record(read_part(cloud.store.get(k).body)) for k in keys)


def local_predictor(cloud):
    pointer = bundle.load_pointer(cloud.store)
    assert pointer is not None
    return bundle.load_bundle(cloud.store, pointer)[0]


def test_explain_through_api_gateway(served):
    rows = parts_table(served).slice(0, 20).select(list(FEATURE_COLUMNS)).to_pylist()
    url = f"{served.api_url.rstrip('/')}/predict"
    served.wait_for("the API to serve a model",
                    lambda: httpx.get(url.replace("/predict", "/health"),
                                      timeout=60).json().get("model_loaded"), timeout_s=30)
    answer = httpx.post(f"{url}?explain=true", json={"rows": rows}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["explanations"]) == len(rows) == len(body["predictions"])
    worst = 0.0
    for p, why in zip(body["predictions"], body["explanations"], strict=True):
        assert [c["field"] for c in why["contributions"]].__len__() == 39
        assert {c["field"] for c in why["contributions"]} == set(FEATURE_COLUMNS)
        total = why["base_value"] + sum(c["value"] for c in why["contributions"])
        worst = max(worst, abs(total - float(np.log(p) - np.log1p(-p))))
    assert worst <= LOGIT_TOLERANCE, worst
    plain = httpx.post(url, json={"rows": rows}, timeout=60).json()
    assert "explanations" not in plain and plain["predictions"] == body["predictions"]


def scoring_input(cloud) -> tuple[list[bytes], pa.Table]:
    table = parts_table(cloud)
    lines = criteo.table_to_tsv(table).splitlines()
    for i in range(0, len(lines), 4):
        lines[i] = lines[i].split(b"\t", 1)[1]            # some without the label
    for k, bad in enumerate(BAD_LINES):
        lines.insert(100 + 1500 * k, bad)
    return lines, table


def run_scoring(cloud, key: str, run_id: str, **options: Any) -> dict[str, Any]:
    arn = score_command.start(cloud, key, "batch/out/", run_id, **options)
    desc = cloud.wait_execution(arn, timeout_s=600)
    assert desc["status"] == "SUCCEEDED", desc
    return json.loads(desc["output"])


def test_batch_scoring_joins_rejects_and_survives_a_crashed_child(served, tmp_path):
    lines, table = scoring_input(served)
    served.store.put("batch/in/day.tsv", b"\n".join(lines) + b"\n")
    faults_dir = tmp_path / "faults"
    served.set_env("ScoreFunction", CTR_FAULTS="score.after_write=crash*1",
                   CTR_FAULTS_DIR=str(faults_dir))
    try:
        started = time.monotonic()
        out = run_scoring(served, "batch/in/day.tsv", "it-score-1", range_bytes=300_000,
                          max_concurrency=2)
        seconds = time.monotonic() - started
    finally:
        served.set_env("ScoreFunction", CTR_FAULTS=None, CTR_FAULTS_DIR=None)
    manifest, plan = out["manifest"]["value"], out["plan"]["value"]
    assert plan["range_count"] >= 3
    assert (faults_dir / "score.after_write.0").exists()          # a child did crash
    assert manifest["adopted_ranges"] == 1                         # ... and its retry adopted
    assert manifest["lines"] == len(lines) == manifest["rows"] + manifest["rejects"]
    assert manifest["rejects"] == len(BAD_LINES) and manifest["rows"] == table.num_rows
    keys = sorted(served.store.list_keys("batch/out/it-score-1/"))
    assert keys == sorted([*manifest["parts"], *manifest["rejects_parts"],
                           manifest["manifest_key"]])
    output = b"".join(served.store.get(k).body for k in manifest["parts"])
    joined = output.splitlines()
    assert [line.rsplit(b"\t", 1)[0] for line in joined] == [x for x in lines
                                                             if x not in BAD_LINES]
    expected = local_predictor(served).predict_table(table)
    np.testing.assert_allclose(scoring.probabilities_of(output), expected, rtol=1e-12)
    rejected = [criteo.Reject.from_bytes(line).text for k in manifest["rejects_parts"]
                for line in served.store.get(k).body.splitlines()]
    assert sorted(rejected) == sorted(BAD_LINES)
    doc = json.loads(served.store.get(manifest["manifest_key"]).body)
    assert doc["model_version"] == manifest["model_version"] == plan["model_version"]
    assert doc["input_digest"] == manifest["input_digest"]
    print(f"\nbatch scoring: {manifest['lines']:,} lines in {plan['range_count']} ranges, "
          f"{seconds:.1f}s wall (with one crashed child retried)")


def test_batch_scoring_throughput(served):
    """Rows per second on the local cloud for a larger file (printed, with the load)."""
    table = parts_table(served)
    block = criteo.table_to_tsv(table)
    copies = 60                                       # 480,000 lines, ~60 MB
    served.store.put("batch/in/big.tsv", block * copies)
    started = time.monotonic()
    out = run_scoring(served, "batch/in/big.tsv", "it-score-big", range_bytes=8_000_000,
                      max_concurrency=4)
    seconds = time.monotonic() - started
    manifest = out["manifest"]["value"]
    assert manifest["rows"] == table.num_rows * copies and manifest["rejects"] == 0
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"\nbatch scoring throughput: {manifest['rows']:,} rows in {seconds:.1f}s = "
          f"{manifest['rows'] / seconds * 60:,.0f} rows/min "
          f"({out['plan']['value']['range_count']} ranges, concurrency 4; load {load})")


def test_predict_cold_start_figures(served):
    """The predict function's cold start measured as `ctr bench` does (first invoke of
    the alias the API uses after a configuration update: a new SnapStart version, so an
    environment restored from its snapshot), against $LATEST's cold start on the same
    cloud and load (no snapshot: imports and the bundle load), and a bare process start
    to the first answered request; printed with the load average. Asserted: every
    alias cold start was a restore (the executor logged the snapshots and no fallback)."""
    import statistics

    from ctr_infra.bench.plan import Plan
    from ctr_infra.bench.serve import measure_cold_start, measure_process_start

    row = parts_table(served).slice(0, 1).select(list(FEATURE_COLUMNS)).to_pylist()[0]
    plan = Plan(mode="quick", cold_starts=3, warm_invokes=5)
    logs = sorted((served.cfg.logs_dir / "lambda").glob("*PredictFunction*.log"))
    before = sum(p.read_text().count("snapshot taken") for p in logs)
    cold = measure_cold_start(served, plan, row)
    logs = sorted((served.cfg.logs_dir / "lambda").glob("*PredictFunction*.log"))
    text = "".join(p.read_text() for p in logs)
    assert cold["qualifier"] == "live"     # what the API invokes (SnapStart version)
    assert text.count("snapshot taken") - before >= plan.cold_starts
    assert "starts cold" not in text
    latest = measure_cold_start(served, plan, row, via_alias=False)
    process = measure_process_start(served, row, times=3)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]

    def spread(xs: list[float]) -> str:
        return f"{statistics.median(xs):.2f}s ({min(xs):.2f}-{max(xs):.2f})"

    print(f"\npredict cold start, first invoke after a configuration update: alias "
          f"(restored from the snapshot) {spread(cold['cold_s'])}; $LATEST (no snapshot) "
          f"{spread(latest['cold_s'])}: ratio "
          f"{statistics.median(cold['cold_s']) / statistics.median(latest['cold_s']):.2f}; "
          f"warm {statistics.median(cold['warm_s']) * 1e3:.0f} ms; bare process start to "
          f"first answer {spread(process)} (load {load})")
