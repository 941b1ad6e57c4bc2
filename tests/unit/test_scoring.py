"""Batch scoring's domain (`ctr.scoring`) on an in-memory S3 with a real bundle: the
plan's line-aligned ranges, the joined output, rejects, gzip, retries that adopt
instead of duplicating, and the manifest's accounting."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from ctr import bundle, criteo, layout, scoring
from ctr.errors import ConflictError, DataError, NoModelError, ValidationError
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.unit.serving_support import (
    MODEL_NAME,
    FakeMlflowClient,
    copy_downloader,
    sample_table,
    tiny_predictor,
)

TABLE = sample_table().slice(0, 600)
GOOD = criteo.table_to_tsv(TABLE).splitlines()             # with the label
BAD = [b"not a criteo line", b"", b"1\t" + b"\t".join([b"x"] * 39)]


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(MemoryS3(), "bucket")
    registry = FakeMlflowClient(tmp_path / "mlflow")
    registry.set_alias("production", registry.add_version(tiny_predictor(1)))
    bundle.publish_production(registry, store, MODEL_NAME, downloader=copy_downloader)
    scoring._PREDICTORS.clear()
    return store


def input_lines() -> list[bytes]:
    """Good lines with and without the label, and bad ones in between."""
    lines = list(GOOD)
    for i in range(0, len(lines), 3):
        lines[i] = lines[i].split(b"\t", 1)[1]           # label-less
    for k, bad in enumerate(BAD):
        lines.insert(50 + 200 * k, bad)
    return lines


def run(store: Store, key: str, run_id: str = "run-1", range_bytes: int = 20_000
        ) -> tuple[scoring.ScorePlan, list[scoring.ScoredRange], scoring.ScoreManifest]:
    plan = scoring.plan(store, input_key=key, output_prefix="batch/out/", run_id=run_id,
                        range_bytes=range_bytes)
    scored = [scoring.score_range(store, input_key=plan.input_key, index=r.index,
                                  start=r.start, end=r.end, compressed=plan.compressed,
                                  model_prefix=plan.model_prefix,
                                  model_version=plan.model_version, run_prefix=plan.run_prefix)
              for r in plan.ranges]
    return plan, scored, scoring.write_manifest(store, plan, scored)


def test_ranges_are_line_aligned_and_cover_the_input(store):
    data = b"\n".join(input_lines()) + b"\n"
    store.put("batch/in/day.tsv", data)
    plan = scoring.plan(store, input_key="batch/in/day.tsv", output_prefix="batch/out",
                        run_id="r", range_bytes=10_000)
    assert plan.range_count == len(plan.ranges) > 5
    assert plan.ranges[0].start == 0 and plan.ranges[-1].end == len(data)
    for a, b in zip(plan.ranges[:-1], plan.ranges[1:], strict=True):
        assert a.end == b.start and data[b.start - 1:b.start] == b"\n"
    assert plan.run_prefix == "batch/out/r/" and plan.model_version == 1


def test_output_joins_each_valid_line_to_its_probability_and_rejects_the_rest(store):
    lines = input_lines()
    store.put("batch/in/day.tsv", b"\n".join(lines) + b"\n")
    _plan, _scored, manifest = run(store, "batch/in/day.tsv")
    assert manifest.lines == len(lines) == manifest.rows + manifest.rejects
    assert manifest.rejects == len(BAD) and manifest.rows == len(GOOD)
    out = b"".join(store.get(k).body for k in manifest.parts)
    joined = out.splitlines()
    assert [line.rsplit(b"\t", 1)[0] for line in joined] == [x for x in lines if x not in BAD]
    expected = tiny_predictor(1).predict_table(TABLE)
    np.testing.assert_allclose(scoring.probabilities_of(out), expected, rtol=1e-12)
    rejects = [criteo.Reject.from_bytes(line) for k in manifest.rejects_parts
               for line in store.get(k).body.splitlines()]
    assert sorted(r.text for r in rejects) == sorted(BAD)
    assert all(r.reason for r in rejects)
    doc = json.loads(store.get(manifest.manifest_key).body)
    assert doc["model_version"] == 1 and doc["rows"] == len(GOOD)
    assert doc["input_digest"] == manifest.input_digest
    assert manifest.adopted_ranges == 0


def test_a_retried_range_adopts_its_part_and_a_different_one_conflicts(store):
    store.put("batch/in/day.tsv", b"\n".join(GOOD) + b"\n")
    plan, scored, manifest = run(store, "batch/in/day.tsv")
    keys_before = sorted(store.list_keys("batch/out/"))
    r = plan.ranges[1]
    again = scoring.score_range(store, input_key=plan.input_key, index=r.index, start=r.start,
                                end=r.end, compressed=False, model_prefix=plan.model_prefix,
                                model_version=plan.model_version, run_prefix=plan.run_prefix)
    assert again.adopted and again.rows == scored[1].rows
    assert sorted(store.list_keys("batch/out/")) == keys_before
    with pytest.raises(ConflictError):           # other bytes under the same key
        scoring.score_range(store, input_key=plan.input_key, index=r.index, start=r.start,
                            end=r.end - 5, compressed=False, model_prefix=plan.model_prefix,
                            model_version=plan.model_version, run_prefix=plan.run_prefix)
    # The manifest step retried writes nothing new either.
    assert scoring.write_manifest(store, plan, scored).rows == manifest.rows


def test_gzip_input_is_one_range_and_scores_the_same(store):
    store.put("batch/in/day.tsv", b"\n".join(GOOD) + b"\n")
    store.put("batch/in/day.tsv.gz", gzip.compress(b"\n".join(GOOD) + b"\n"))
    *_, plain = run(store, "batch/in/day.tsv", run_id="plain")
    plan, _, packed = run(store, "batch/in/day.tsv.gz", run_id="packed")
    assert plan.range_count == 1 and plan.compressed
    assert packed.rows == plain.rows
    body = lambda m: b"".join(store.get(k).body for k in m.parts)  # noqa: E731
    assert body(packed) == body(plain)


def test_the_manifest_refuses_missing_ranges(store):
    store.put("batch/in/day.tsv", b"\n".join(GOOD) + b"\n")
    plan, scored, _ = run(store, "batch/in/day.tsv", run_id="r2")
    with pytest.raises(DataError, match="do not match"):
        scoring.write_manifest(store, plan, scored[:-1])


def test_keys_outside_batch_and_no_model_are_clear_errors(tmp_path):
    store = Store(MemoryS3(), "bucket")
    with pytest.raises(ValidationError, match="batch/"):
        scoring.plan(store, input_key="parquet/part_000000.parquet", output_prefix="batch/o/",
                     run_id="r")
    with pytest.raises(ValidationError, match="batch/"):
        scoring.plan(store, input_key="batch/in.tsv", output_prefix="serving/", run_id="r")
    with pytest.raises(NoModelError):
        scoring.plan(store, input_key="batch/in.tsv", output_prefix="batch/o/", run_id="r")


def test_an_empty_input_gives_an_empty_part_and_a_manifest(store):
    store.put("batch/in/empty.tsv", b"")
    plan, _scored, manifest = run(store, "batch/in/empty.tsv")
    assert plan.range_count == 1 and manifest.lines == manifest.rows == 0
    assert store.get(layout.score_part_key(plan.run_prefix, 0)).body == b""


def test_the_cli_reads_uris_of_the_stack_bucket_and_uploads_create_only(tmp_path):
    from ctr_infra.commands import score as command

    assert command.parse_s3_uri("s3://b/batch/in/x.tsv", "b", "SOURCE") == "batch/in/x.tsv"
    with pytest.raises(ValidationError, match="stack's bucket"):
        command.parse_s3_uri("s3://other/batch/x.tsv", "b", "SOURCE")
    with pytest.raises(ValidationError, match="s3://"):
        command.parse_s3_uri("/tmp/x.tsv", "b", "--out")
    store = Store(MemoryS3(), "b")
    path = tmp_path / "day.tsv"
    path.write_bytes(b"1\t2\n")
    assert command.upload(store, path) == "batch/input/day.tsv"
    assert command.upload(store, path) == "batch/input/day.tsv"      # same bytes again
    path.write_bytes(b"other\n")
    with pytest.raises(ConflictError):
        command.upload(store, path)
