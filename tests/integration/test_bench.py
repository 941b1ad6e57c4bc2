"""`ctr bench --quick` once, through the CLI's main(), on the session's local cloud
(`--existing-cloud`, so no second cloud is started): every section runs and every
figure is well formed (finite, positive, with its unit; baseline in the same unit and
ratio = value / baseline), the result files are written, the functions' configuration
is restored, and a cloud holding data is refused. Timings are printed, not asserted."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from ctr_infra.bench import runner
from ctr_infra.bench.cloud import existing_cloud
from ctr_infra.bench.plan import QUICK
from ctr_infra.cli import main
from ctr_infra.localcloud import CloudError

pytestmark = pytest.mark.slow

# Figures the bench must produce, and whether each has a baseline to compare with.
EXPECTED = {
    "sizes.predict.total_mb": True,
    "training.seconds": True, "training.holdout_logloss": True, "training.holdout_auc": True,
    "training.normalized_gap": True, "training.peak_rss_mb": True,
    "data.chunk.mb_per_s": True, "data.chunk.lines_per_s": True, "data.chunk.seconds": True,
    "data.chunk.last_over_first": True, "data.aggregate.mb_per_s": True,
    "data.aggregate.lines_per_s": True, "data.gzip_transcode.mb_per_s": True,
    "monitoring.seconds_per_million": False, "monitoring.peak_rss_mb": True,
    "pipeline.total_s": False, "pipeline.state.chunk_new_lines_s": True,
    "pipeline.state.aggregate_to_parquet_s": True, "pipeline.state.train_model_s": False,
    "pipeline.state.reload_serving_model_s": False,
    **{f"serving.in_process.{n}_rows.{m}": True for n in (1, 100, 1000)
       for m in ("p50_ms", "p99_ms", "rows_per_s")},
    **{f"serving.http.{server}.{n}_rows.{m}": True for server in ("uvicorn", "api_gateway")
       for n in (1, 100) for m in ("p50_ms", "p99_ms", "rps")},
    "serving.cold_start_s": True, "serving.process_start_s": False,
    **{f"serving.explain.{n}_rows.{m}": True for n in (1, 100) for m in ("p50_ms", "p99_ms")},
    "batch.rows_per_min": True,
    f"scale.{QUICK.scale_lines[0]}.total_s": False,
    f"scale.{QUICK.scale_lines[0]}.backfill_lines_per_s": True,
    f"scale.{QUICK.scale_lines[0]}.state.aggregate_chunks_in_parallel_s": False,
    f"scale.{QUICK.scale_lines[0]}.peak_rss.localstack_mb": False,
    f"scale.{QUICK.scale_lines[0]}.peak_rss.lambda_chunk_mb": True,
    "scale.extrapolated_criteo_s": False,
}


def _function_envs(cloud) -> dict[str, dict[str, str]]:
    return {logical: cloud.lambda_client.get_function_configuration(
                FunctionName=cloud.function_name(logical)).get("Environment", {})
            .get("Variables", {}) for logical in ("ChunkFunction", "PredictFunction")}


@pytest.fixture(scope="module")
def quick(cloud, tmp_path_factory):
    cloud.reset_data()
    out = tmp_path_factory.mktemp("bench")
    envs_before = _function_envs(cloud)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"CTR_STATE_DIR": cloud.cfg.state_dir,
                            "CTR_LOCALSTACK_PORT": cloud.cfg.localstack_port,
                            "CTR_MLFLOW_PORT": cloud.cfg.mlflow_port,
                            "CTR_STACK_NAME": cloud.cfg.stack_name}.items():
            mp.setenv(name, str(value))
        t0 = time.monotonic()
        code = main(["bench", "--quick", "--existing-cloud", "--output", str(out)])
        wall = time.monotonic() - t0
    print(f"\n`ctr bench --quick` on the session cloud: exit {code} in {wall:.0f}s")
    yield {"code": code, "out": out, "results": json.loads((out / "results.json").read_text()),
           "envs_before": envs_before, "envs_after": _function_envs(cloud)}
    # Leave the shared cloud as other modules expect it: no data, no model served.
    cloud.reset_data()
    cloud.wait_for("the API to serve no model", lambda: httpx.get(
        f"{cloud.api_url}/health", timeout=30).json().get("model_loaded") is False,
        timeout_s=30)


def _finite_positive(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_every_section_runs_and_the_command_succeeds(quick):
    sections = quick["results"]["sections"]
    assert list(sections) == list(runner.SECTIONS)
    assert {name: entry["error"] for name, entry in sections.items()} == dict.fromkeys(
        runner.SECTIONS)
    assert all(entry["status"] == "ok" and entry["figures"] for entry in sections.values())
    assert quick["code"] == 0


def test_every_figure_is_well_formed(quick):
    figures = [f for entry in quick["results"]["sections"].values() for f in entry["figures"]]
    ids = [f["id"] for f in figures]
    assert len(ids) == len(set(ids))
    for f in figures:
        assert set(f) == {"id", "name", "value", "unit", "n", "spread", "baseline", "ratio",
                          "better", "note"}, f["id"]
        assert _finite_positive(f["value"]), f
        assert isinstance(f["unit"], str) and f["unit"], f
        assert isinstance(f["n"], int) and f["n"] >= 1, f
        assert f["better"] in ("lower", "higher"), f
        if f["spread"] is not None:
            assert f["spread"]["kind"] in ("min-max", "p50-p99"), f
            assert _finite_positive(f["spread"]["low"]), f
            assert f["spread"]["low"] <= f["spread"]["high"], f
        if f["baseline"] is None:
            assert f["ratio"] is None, f
        else:
            assert f["baseline"]["name"] and f["baseline"]["unit"] == f["unit"], f
            assert _finite_positive(f["baseline"]["value"]), f
            assert f["ratio"] == pytest.approx(f["value"] / f["baseline"]["value"]), f


def test_the_expected_figures_are_there_with_their_baselines(quick):
    by_id = {f["id"]: f for entry in quick["results"]["sections"].values()
             for f in entry["figures"]}
    missing = sorted(set(EXPECTED) - set(by_id))
    assert missing == []
    assert {fid: by_id[fid]["baseline"] is not None for fid in EXPECTED} == EXPECTED
    assert by_id["serving.cold_start_s"]["n"] == QUICK.cold_starts
    pipeline = quick["results"]["sections"]["pipeline"]["raw"]
    assert pipeline["status"] == "SUCCEEDED"
    assert pipeline["chunk"]["lines"] == QUICK.pipeline_lines
    assert pipeline["train"]["promoted"] is True
    scale = quick["results"]["sections"]["scale"]["raw"]
    (run,) = scale["runs"]
    assert run["invariant"]["ok"] and run["invariant"]["source_lines"] == QUICK.scale_lines[0]
    assert run["peak_rss_mb"]["envs:Chunk"] >= 1
    assert scale["extrapolation"]["total_s"] > run["total_s"]


def test_machine_plan_and_cloud_are_described(quick):
    results = quick["results"]
    assert results["schema"] == runner.SCHEMA and results["mode"] == "quick"
    m = results["machine"]
    assert m["cpu_model"] and m["os"] and m["python"] and m["date"]
    assert m["cores"] >= 1 and m["ram_gib"] > 0
    assert results["plan"]["pipeline_lines"] == QUICK.pipeline_lines
    assert results["cloud"]["private"] is False
    assert _finite_positive(results["wall_s"])


def test_files_json_copy_and_markdown(quick):
    out = quick["out"]
    copies = list(out.glob("results-*-quick.json"))
    assert len(copies) == 1
    assert json.loads(copies[0].read_text()) == quick["results"]
    markdown = (out / "results.md").read_text()
    assert "| section | figure | value | spread | n | baseline | baseline value | ratio |" \
        in markdown
    for entry in quick["results"]["sections"].values():
        for f in entry["figures"]:
            assert f"| {f['name']} |" in markdown, f["id"]


def test_function_configuration_is_restored(quick):
    assert quick["envs_after"] == quick["envs_before"]


def test_a_cloud_holding_data_is_refused(quick, cloud):
    with pytest.raises(CloudError, match="holds data"), existing_cloud(cloud.cfg):
        pass
