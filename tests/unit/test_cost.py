"""`ctr cost` (ctr_infra.cost): the arithmetic on cases worked out by hand, the walk
of the real definitions state by state, and the inputs (template, bench results,
flags)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from ctr.errors import ConfigError
from ctr_infra import cli, cost
from ctr_infra.commands import cost as cost_cmd
from ctr_infra.deploy import load_template

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_ASL = json.loads((ROOT / "statemachine/pipeline.asl.json").read_text())
SAGEMAKER_ASL = json.loads((ROOT / "statemachine/pipeline.sagemaker.asl.json").read_text())
GB_S = 0.0000166667          # the Lambda price, written out again on purpose


def task(function: str, nxt: str | None = None) -> dict:
    st = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
          "Parameters": {"FunctionName": f"${{{function}Arn}}"}}
    return {**st, "Next": nxt} if nxt else {**st, "End": True}


# --------------------------------------------------------------------------- the walk

def test_the_walk_follows_the_chosen_branch_and_counts_map_children():
    asl = {"StartAt": "A", "States": {
        "A": task("GuardFunction", "C"),
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "BooleanEquals": True,
                                             "Next": "M"}], "Default": "End"},
        "M": {"Type": "Map", "ItemProcessor": {"StartAt": "X", "States": {
            "X": task("AggregateFunction", "Y"),
            "Y": {"Type": "Pass", "End": True}}}, "Next": "End"},
        "End": {"Type": "Succeed"}}}
    # A, C, M, End in the parent; X and Y in each of 3 children.
    path = cost.walk(asl, {"C": "M"}, map_items=3)
    assert path.transitions == 4 + 3 * 2
    assert path.entries == {"A": 1, "C": 1, "M": 1, "X": 3, "Y": 3, "End": 1}
    assert cost.walk(asl, {}).entries == {"A": 1, "C": 1, "End": 1}        # the Default
    with pytest.raises(ValueError, match="cannot go to 'A'"):
        cost.walk(asl, {"C": "A"})


STEADY_STATES = ["Acquire lease", "Lease acquired?", "Sync serving model", "Plan backfill",
                 "Backfill planned?", "Chunk new lines",
                 "Plan aggregation", "How many chunks pending?", "Aggregate to Parquet",
                 "Evaluate served model", "Rolled back?", "Anything new to train on?",
                 "Train model", "Promoted?", "Reload serving model", "Release lease",
                 "What happened?", "Done"]
IDLE_STATES = ["Acquire lease", "Lease acquired?", "Sync serving model", "Plan backfill",
               "Backfill planned?", "Chunk new lines",
               "Plan aggregation", "How many chunks pending?", "Evaluate served model",
               "Rolled back?", "Anything new to train on?", "Release lease",
               "What happened?", "Nothing new"]


def test_the_real_definitions_paths_state_by_state():
    steady = cost.walk(LAMBDA_ASL, cost.STEADY)
    assert steady.entries == dict.fromkeys(STEADY_STATES, 1) and steady.transitions == 18
    idle = cost.walk(LAMBDA_ASL, cost.IDLE)
    assert idle.entries == dict.fromkeys(IDLE_STATES, 1) and idle.transitions == 14
    fan = cost.walk(LAMBDA_ASL, cost.FANOUT, map_items=46)
    assert fan.entries["Aggregate one chunk"] == 46 and "Aggregate to Parquet" not in fan.entries
    assert fan.entries["Cut one range"] == 46 and fan.entries["Finish backfill"] == 1
    # backfill: the cut Map, its 46 children, Finish, then Plan backfill and its Choice
    # once more (nothing left: one chunk step); the aggregate Map replaces the inline one
    assert fan.entries["Plan backfill"] == 2 and fan.entries["Chunk new lines"] == 1
    assert fan.transitions == 18 + (1 + 46 + 1 + 2) + 46
    # The sagemaker definition adds one state: the read of the job's result.
    assert cost.walk(SAGEMAKER_ASL, cost.STEADY).transitions == 19


def test_task_functions_come_from_the_definition():
    functions = cost.task_functions(LAMBDA_ASL)
    assert functions["Train model"] == "TrainFunction"
    assert functions["Aggregate one chunk"] == "AggregateFunction"
    assert "Train model" not in cost.task_functions(SAGEMAKER_ASL)   # no Lambda there


# --------------------------------------------------------------------------- arithmetic

ONE_TASK = {"StartAt": "Train model", "States": {"Train model": task("TrainFunction")}}


def inputs(**kw) -> cost.Inputs:
    base = cost.Inputs(memory_mb={"TrainFunction": 2048, "AggregateFunction": 1024},
                       ephemeral_mb={"TrainFunction": 1536}, measured_lines=1000,
                       max_train_rows=4000, seconds={"Train model": 100.0,
                                                     "Aggregate one chunk": 8.0})
    return replace(base, **kw)


def test_lambda_compute_requests_and_ephemeral_storage_by_hand():
    # 100 s at a 1,000-row window (= the measured one), 2 GB, 1 GB of /tmp above 512 MB.
    c = cost.execution_cost(inputs(), ONE_TASK, {}, lines=1000, window=1000)
    assert c.lambda_gb_s == pytest.approx(200.0)
    assert c.lambda_ephemeral_gb_s == pytest.approx(100.0)
    assert (c.lambda_requests, c.transitions) == (1, 1)
    usd = c.dollars("ml.m5.4xlarge")
    assert usd["lambda_compute"] == pytest.approx(200 * GB_S + 100 * 0.0000000309)
    assert usd["lambda_requests"] == pytest.approx(0.0000002)
    assert usd["step_functions"] == pytest.approx(0.000025)
    # S3: Train model's fixed 4 PUT-class and 4 GET-class requests.
    assert usd["s3_requests"] == pytest.approx(4 * 0.000005 + 4 * 0.0000004)
    assert usd["total"] == pytest.approx(sum(v for k, v in usd.items() if k != "total"))


def test_seconds_scale_with_lines_and_the_training_window():
    i = inputs()
    assert cost.state_seconds(i, "Aggregate one chunk", 500, 0) == pytest.approx(4.0)
    assert cost.state_seconds(i, "Train model", 0, 3000) == pytest.approx(300.0)
    # The measured window was min(1,000 lines, MaxTrainRows 4,000) = 1,000 rows.
    assert cost.state_seconds(replace(i, max_train_rows=500), "Train model", 0, 500) == (
        pytest.approx(100.0))
    assert cost.state_seconds(i, "Release lease", 10**6, 10**6) == 0.0          # fixed
    assert cost.state_seconds(i, "Chunk new lines", 0, 0) == cost.IDLE_SECONDS


def test_sequential_backfill_trains_on_a_growing_window():
    # 3 chunks of 1,000 lines, MaxTrainRows 2,000: windows 1,000, 2,000, 2,000 rows,
    # so 100 + 200 + 200 = 500 s of training at 2 GB.
    asl = {"StartAt": "Train model", "States": {"Train model": task("TrainFunction")}}
    i = inputs(lines=3000, chunk_lines=1000, max_train_rows=2000)
    c = cost.backfill_sequential(i, asl)
    assert c.executions == 3
    assert c.lambda_gb_s == pytest.approx(500 * 2)


def test_fanout_aggregates_each_chunk_once():
    asl = {"StartAt": "Aggregate chunks in parallel", "States": {
        "Aggregate chunks in parallel": {"Type": "Map", "End": True, "ItemProcessor": {
            "StartAt": "Aggregate one chunk",
            "States": {"Aggregate one chunk": task("AggregateFunction")}}}}}
    # 2,500 lines in chunks of 1,000: 3 children of 1,000, 1,000 and 500 lines; the
    # aggregate runs 8 s per 1,000 lines at 1 GB: 20 GB-s in all.
    i = inputs(lines=2500, chunk_lines=1000)
    c = cost.backfill_fanout(i, asl)
    assert c.lambda_requests == 3 and c.transitions == 1 + 3
    assert c.lambda_gb_s == pytest.approx(20.0, rel=1e-3)


def test_s3_requests_of_ranged_reads_and_multipart_writes():
    r = cost.Requests(put=4, get=2, get_per_bytes=16, put_per_bytes=32)
    assert r.count(100) == (4 + 4, 2 + 7)       # ceil(100/32) = 4 parts, ceil(100/16) = 7
    assert r.count(0) == (4, 2)
    assert cost.chunk_sizes(45_840_617, 1_000_000) == [1_000_000] * 45 + [840_617]


def test_sagemaker_instance_hours_by_hand():
    # 100 s of training at speedup 2 -> 50 s, plus 120 s start: 170 s on ml.m5.4xlarge.
    memory, _ = cost.template_sizes(load_template(ROOT / "template.yaml"))
    i = inputs(backend="sagemaker", sagemaker_speedup=2.0, memory_mb=memory)
    c = cost.execution_cost(i, SAGEMAKER_ASL, cost.STEADY, lines=1000, window=1000)
    assert c.sagemaker_hours == pytest.approx(170 / 3600)
    usd = c.dollars("ml.m5.4xlarge")
    volume = 100 * (170 / 3600) / 730 * 0.14
    assert usd["sagemaker"] == pytest.approx(170 / 3600 * 0.922 + volume)
    assert c.lambda_requests == 9                # every Lambda but train's


def test_storage_and_prediction_log_by_hand():
    st = cost.storage(replace(cost.Inputs(), lines=1_000_000))
    assert st["raw_gzip_gb"] == pytest.approx(0.094)
    assert st["total_gb"] == pytest.approx((94 + 240 + 240 + 51.2) / 1000)
    assert st["usd_per_month"] == pytest.approx(0.6252 * 0.023)
    plog = cost.prediction_log_per_million(1200)       # one 5 KB unit per record
    assert plog["billed_gb"] == pytest.approx(5.12)
    assert plog["usd"] == pytest.approx(5.12 * 0.029)
    assert cost.prediction_log_per_million(6000)["billed_gb"] == pytest.approx(10.24)


def test_every_state_of_the_definitions_has_a_scaling_and_every_named_one_exists():
    tasks = {n for asl in (LAMBDA_ASL, SAGEMAKER_ASL) for n, st in
             cost.walk(asl, cost.STEADY).entries.items()
             if asl["States"].get(n, {}).get("Type") in ("Task", None)}
    tasks |= set(cost.walk(LAMBDA_ASL, cost.FANOUT, 1).entries) & set(cost.SCALING)
    assert tasks <= set(cost.SCALING)
    assert set(cost.S3_REQUESTS) <= set(cost.SCALING) | {"Aggregate chunks in parallel",
                                                         "Cut backlog in parallel"}
    assert all(p.usd > 0 and p.unit for p in cost.PRICES.values())
    assert cost.PRICE_REGION == "us-east-1" and cost.PRICES_AS_OF.startswith("20")


# --------------------------------------------------------------------------- inputs and CLI

def bench_results(lines: int, train_s: float) -> dict:
    return {"mode": "full", "machine": {"date": "2026-12-01T10:00:00+00:00"},
            "sections": {"pipeline": {"status": "ok", "raw": {
                "chunk": {"lines": lines},
                "states": [{"name": "Train model", "type": "Task", "seconds": train_s},
                           {"name": "Aggregate to Parquet", "type": "Task", "seconds": 3.0},
                           {"name": "Promoted?", "type": "Choice", "seconds": 0.0}]}}}}


def test_inputs_come_from_the_template_and_the_newest_bench(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bench_results(500_000, 60.0)))
    i = cost.load_inputs(ROOT, path)
    assert i.memory_mb["TrainFunction"] == 10240 and i.ephemeral_mb["TrainFunction"] == 4096
    assert i.memory_mb["GuardFunction"] == 256
    params = load_template(ROOT / "template.yaml")["Parameters"]
    assert i.chunk_lines == params["ChunkLines"]["Default"]
    assert i.max_train_rows == params["MaxTrainRows"]["Default"]
    assert i.measured_lines == 500_000 and i.source.startswith("bench 2026-12-01")
    assert i.seconds["Train model"] == 60.0
    assert i.seconds["Aggregate one chunk"] == 3.0      # the inline aggregate's rate
    # A state the bench did not report: the README figure scaled to the bench's lines.
    assert i.seconds["Chunk new lines"] == pytest.approx(4.0 * 0.5)
    assert i.seconds["Release lease"] == cost.DEFAULT_SECONDS["Release lease"]
    default = cost.load_inputs(ROOT, tmp_path / "absent.json")
    assert default.seconds == cost.DEFAULT_SECONDS and default.measured_lines == 1_000_000


def run_cli(capsys, *argv: str) -> str:
    assert cli.main(["cost", *argv]) == 0
    return capsys.readouterr().out


def test_cli_json_and_overrides(capsys, tmp_path):
    est = json.loads(run_cli(capsys, "--json", "--no-bench"))
    steady = est["scenarios"]["steady_execution"]["quantities"]
    # Train at the template's MaxTrainRows window: 102 s measured at a 1M-row window,
    # scaled by the window, at 10 GB is most of the execution's GB-seconds.
    scale = est["inputs"]["max_train_rows"] / est["inputs"]["measured_lines"]
    assert steady["lambda_gb_s"] > 102 * scale * 10
    half = json.loads(run_cli(capsys, "--json", "--no-bench", "--memory-mb", "train=5120"))
    half_steady = half["scenarios"]["steady_execution"]["quantities"]
    assert steady["lambda_gb_s"] - half_steady["lambda_gb_s"] == pytest.approx(102 * scale * 5)
    small = json.loads(run_cli(capsys, "--json", "--no-bench", "--lines", "2500000"))
    assert small["scenarios"]["backfill_sequential"]["quantities"]["executions"] == 3
    assert est["prices"]["as_of"] == cost.PRICES_AS_OF
    idle_usd = est["scenarios"]["idle_execution"]["usd"]["total"]
    assert est["idle_month"]["usd"] == pytest.approx(730 * 6 * idle_usd)
    text = run_cli(capsys, "--no-bench", "--backend", "sagemaker")
    assert "SageMaker ml.m5.4xlarge hours" in text and "us-east-1" in text


def test_cli_refuses_bad_flags(capsys):
    with pytest.raises(ConfigError, match="FUNCTION=MB"):
        cost_cmd.parse_memory(["train"])
    assert cli.main(["cost", "--memory-mb", "nosuch=128"]) == 2
    assert "no function NosuchFunction" in capsys.readouterr().err
    assert cli.main(["cost", "--lines", "0"]) == 2
    assert cli.main(["cost", "--results", "/nonexistent/results.json"]) == 2
    assert math.isclose(cost.PRICES["lambda_gb_s"].usd, GB_S)
