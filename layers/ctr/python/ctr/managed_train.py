"""The train step as a managed training job (TrainBackend=sagemaker), SageMaker's
container contract on top of the same code the train Lambda runs.

SageMaker starts the train function's image with `python3 /var/task/app.py train`
(ContainerEntrypoint + ContainerArguments in statemachine/pipeline.sagemaker.asl.json)
and lays out a directory tree under /opt/ml:

* `input/config/hyperparameters.json`: the step's event. Step Functions passes the same
  fields the Lambda payload carries (`execution`, optionally `num_boost_round`,
  `max_train_rows`, `force`); SageMaker turns every value into a string, which
  `ctr.steps.TrainEvent` parses as it would the Lambda's JSON ("8" -> 8, "true" -> True).
* `output/failure`: written on failure; SageMaker reports its text as the job's
  FailureReason (the Step Functions error's cause), so the error keeps its class name.
* `model/`: SageMaker archives it to the job's S3 output; the result is kept there too.

The result, `ctr.steps.TrainResult` exactly as the Lambda returns it, is written
create-only to `train-results/<execution>.json` (ctr.layout.train_result_key); the
state after the job reads it back with an S3 GetObject into `$.train.value`, so the
promotion choice and the reload see the shape they see after the Lambda.

The root is /opt/ml unless CTR_JOB_ROOT names another directory (local runs and tests:
the entry point runs as a plain process without SageMaker).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ctr.errors import ConflictError, ValidationError
from ctr.layout import train_result_key
from ctr.steps import TrainEvent, TrainResult, parse_event
from ctr.storage import Store

log = logging.getLogger(__name__)

ROOT_ENV = "CTR_JOB_ROOT"
DEFAULT_ROOT = "/opt/ml"
COMMAND = "train"                  # the argument SageMaker runs a training image with
FAILURE_LIMIT = 1024               # SageMaker keeps this many characters of the reason
EXIT_FAILED, EXIT_USAGE = 1, 2


def job_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def hyperparameters_path(root: Path) -> Path:
    return root / "input" / "config" / "hyperparameters.json"


def failure_path(root: Path) -> Path:
    return root / "output" / "failure"


def model_result_path(root: Path) -> Path:
    return root / "model" / "train-result.json"


def read_event(root: Path) -> tuple[str, dict[str, Any]]:
    """(execution, event) from the job's hyperparameters. The execution must be named:
    it names the result object the state machine reads."""
    path = hyperparameters_path(root)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raw = {}
    except json.JSONDecodeError as err:
        raise ValidationError(f"{path} is not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValidationError(f"{path} must hold a JSON object, not {type(raw).__name__}")
    if not raw.get("execution"):
        raise ValidationError("the training job's hyperparameters name no execution "
                              "(the state machine passes $$.Execution.Name)",
                              errors=[{"loc": ["execution"], "msg": "Field required"}])
    event = parse_event(TrainEvent, raw)          # field errors before any work is done
    return event.execution, dict(raw)


def write_result(store: Store, execution: str, result: TrainResult) -> str:
    """Create-only: a second job of the same execution may only write the same result."""
    key = train_result_key(execution)
    body = json.dumps(result.to_payload(), sort_keys=True).encode()
    if store.put_if_absent(key, body, content_type="application/json") is None:
        existing = json.loads(store.get(key).body)
        if existing != result.to_payload():
            raise ConflictError(f"{key} already holds another training result")
    return key


def run(argv: Sequence[str], train: Callable[[dict[str, Any]], dict[str, Any]],
        store: Store, root: Path | None = None) -> int:
    """SageMaker's `train` command: event from the hyperparameters -> `train` (the train
    function's own step) -> result to S3 and the model directory. Returns the process's
    exit code; a failure writes `output/failure` (the error's class and message)."""
    root = root or job_root()
    if list(argv) != [COMMAND]:
        print(f"usage: <entry point> {COMMAND}   (SageMaker's training command; "
              f"the job directory is ${ROOT_ENV} or {DEFAULT_ROOT})")
        return EXIT_USAGE
    try:
        execution, event = read_event(root)
        result = TrainResult.model_validate(train(event))
        key = write_result(store, execution, result)
        model = model_result_path(root)
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_text(json.dumps(result.to_payload(), sort_keys=True))
    except Exception as err:  # every failure must reach SageMaker's FailureReason
        log.exception("training job failed")
        failure = failure_path(root)
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{type(err).__name__}: {err}"[:FAILURE_LIMIT])
        return EXIT_FAILED
    log.info("training job done", extra={"result_key": key, "status": result.status})
    return 0
