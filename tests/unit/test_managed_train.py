"""The managed training job's entry point (TrainBackend=sagemaker): SageMaker's
container contract (`train` argument, /opt/ml/input/config/hyperparameters.json,
/opt/ml/output/failure) around the train function's own step, and the typed result
written where the state machine reads it. SageMaker cannot run here: the last test runs
`functions/train/app.py train` as a plain process against a fake /opt/ml directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from ctr import layout, managed_train
from ctr.steps import TrainResult
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3

ROOT = Path(__file__).resolve().parents[2]

TRAINED = {"status": "trained", "version": 3, "promoted": True, "reason": "better",
           "metrics": {"train_rows": 10.0}, "run_id": "r1"}


def job_dir(tmp_path: Path, hyperparameters: Any | None) -> Path:
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    if hyperparameters is not None:
        (root / "input" / "config" / "hyperparameters.json").write_text(
            json.dumps(hyperparameters))
    return root


class Step:
    """Stands for the train function's `_train`: records its events, returns `result`."""

    def __init__(self, result: dict[str, Any] | Exception) -> None:
        self.result, self.events = result, []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_runs_the_step_with_the_hyperparameters_and_writes_the_result(tmp_path):
    store = Store(MemoryS3(), "bucket")
    root = job_dir(tmp_path, {"execution": "exec-7", "num_boost_round": "8"})
    step = Step(TRAINED)
    assert managed_train.run(["train"], step, store, root) == 0
    assert step.events == [{"execution": "exec-7", "num_boost_round": "8"}]
    assert json.loads(store.get("train-results/exec-7.json").body) == TRAINED
    assert layout.train_result_key("exec-7") == "train-results/exec-7.json"
    assert json.loads((root / "model" / "train-result.json").read_text()) == TRAINED
    assert not (root / "output" / "failure").exists()


def test_the_root_comes_from_the_environment(tmp_path, monkeypatch):
    root = job_dir(tmp_path, {"execution": "e"})
    monkeypatch.setenv(managed_train.ROOT_ENV, str(root))
    assert managed_train.job_root() == root
    monkeypatch.delenv(managed_train.ROOT_ENV)
    assert managed_train.job_root() == Path("/opt/ml")


@pytest.mark.parametrize("argv", [[], ["serve"], ["train", "extra"]])
def test_anything_but_the_train_command_is_a_usage_error(tmp_path, argv, capsys):
    step = Step(TRAINED)
    assert managed_train.run(argv, step, Store(MemoryS3(), "b"), job_dir(tmp_path, {})) == 2
    assert step.events == [] and "usage" in capsys.readouterr().out


@pytest.mark.parametrize(("hyperparameters", "expected"), [
    (None, "ValidationError: the training job's hyperparameters name no execution"),
    ({"num_boost_round": "8"}, "ValidationError: the training job's hyperparameters"),
    ({"execution": "e", "num_boost_round": "many"}, "ValidationError: invalid TrainEvent"),
    (["execution"], "ValidationError: "),
])
def test_a_bad_event_fails_the_job_with_its_reason_before_any_work(
        tmp_path, hyperparameters, expected):
    s3 = MemoryS3()
    root = job_dir(tmp_path, hyperparameters)
    step = Step(TRAINED)
    assert managed_train.run(["train"], step, Store(s3, "b"), root) == 1
    assert step.events == [] and s3.objects == {}
    assert (root / "output" / "failure").read_text().startswith(expected)


def test_a_failing_step_reports_its_error_class_and_writes_no_result(tmp_path):
    s3 = MemoryS3()
    root = job_dir(tmp_path, {"execution": "e"})
    step = Step(RuntimeError("x" * 5000))
    assert managed_train.run(["train"], step, Store(s3, "b"), root) == 1
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("RuntimeError: xxx") and len(failure) == 1024
    assert s3.objects == {}


def test_a_result_of_the_wrong_shape_fails_the_job(tmp_path):
    s3 = MemoryS3()
    root = job_dir(tmp_path, {"execution": "e"})
    assert managed_train.run(["train"], Step({**TRAINED, "extra": 1}), Store(s3, "b"), root) == 1
    assert "ValidationError" in (root / "output" / "failure").read_text()
    assert s3.objects == {}


def test_the_result_is_create_only(tmp_path):
    store = Store(MemoryS3(), "b")
    assert managed_train.run(["train"], Step(TRAINED), store, job_dir(tmp_path / "1", {
        "execution": "e"})) == 0
    # The same result again is fine (a repeated job of the same execution)...
    assert managed_train.run(["train"], Step(TRAINED), store, job_dir(tmp_path / "2", {
        "execution": "e"})) == 0
    # ...another one is refused and the first stays.
    other = job_dir(tmp_path / "3", {"execution": "e"})
    assert managed_train.run(["train"], Step({**TRAINED, "version": 4}), store, other) == 1
    assert (other / "output" / "failure").read_text().startswith("ConflictError")
    assert TrainResult.model_validate_json(store.get("train-results/e.json").body).version == 3


def run_child(tmp_path: Path, hyperparameters: dict[str, str], *args: str,
              parts: int = 2) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    if not (tmp_path / "mlflow.db").exists():
        MlflowClient(uri).create_experiment("exp", artifact_location=(tmp_path / "a").as_uri())
    root = job_dir(tmp_path / f"job{len(list(tmp_path.glob('job*')))}", hyperparameters)
    report = root / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CTR_"))}
    env.update({"CTR_JOB_ROOT": str(root), "CHILD_REPORT": str(report),
                "CHILD_PARTS": str(parts), "BUCKET_NAME": "bucket",
                "MLFLOW_TRACKING_URI": uri, "MODEL_NAME": "m", "EXPERIMENT_NAME": "exp",
                "MPLCONFIGDIR": str(tmp_path / "mpl"), "HOLDOUT_MIN_ROWS": "300",
                "MIN_NEW_ROWS": "1", "POWERTOOLS_TRACE_DISABLED": "1",
                "AWS_DEFAULT_REGION": "us-east-1"})
    proc = subprocess.run([sys.executable, "-m", "tests.managed_train_child", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, json.loads(report.read_text()), root


def test_the_train_entry_point_runs_as_a_plain_process(tmp_path):
    """`app.py train` with a fake /opt/ml: the real training step (MLflow on SQLite),
    the result where the state machine reads it, equal to what the Lambda returns."""
    proc, report, root = run_child(tmp_path, {"execution": "exec-42", "num_boost_round": "8"},
                                   "train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = report["results"]["train-results/exec-42.json"]
    TrainResult.model_validate(result)
    assert (result["status"], result["version"], result["promoted"]) == ("trained", 1, True)
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(result["run_id"])
    assert run.data.params["num_boost_round"] == "8"          # "8" from the job reached the fit
    assert report["event_types"] == ["ModelRegistered", "ModelPromoted"]
    assert "serving/registry.json" in report["keys"]            # as after the Lambda
    assert json.loads((root / "model" / "train-result.json").read_text()) == result
    assert '"ModelsTrained"' in proc.stdout                     # the metrics were flushed


def test_the_entry_point_fails_a_job_it_cannot_run(tmp_path):
    proc, report, root = run_child(tmp_path, {"num_boost_round": "8"}, "train")
    assert proc.returncode == 1
    assert (root / "output" / "failure").read_text().startswith("ValidationError")
    assert not [k for k in report["keys"] if not k.startswith("parquet/")]
