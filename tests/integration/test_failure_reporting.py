"""The failure path on the emulator itself (issue 15): the state machine's own
`What happened?` choice and Fail states, fed a step error by a Pass state, must end the
execution with the step's real error and cause for every error name -- a `States.*` one
included, which the emulator refuses as a Fail state's error (the old definition's
defect, shown here too)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cloud import Cloud

ASL = json.loads((Path(__file__).resolve().parents[2] / "statemachine" /
                  "pipeline.asl.json").read_text())
ROLE = "arn:aws:iam::000000000000:role/ctr-failure-reporting"
CAUSE = ("Connection was closed before we received a valid response from endpoint URL: "
         "\"http://localhost:4566/\".")


def ending_machine(data: dict[str, Any], states: dict[str, Any] | None = None) -> str:
    """A machine: Pass `data` -> the pipeline's 'What happened?' and its endings."""
    source = states or ASL["States"]
    choice = source["What happened?"]
    targets = {c["Next"] for c in choice["Choices"]} | {choice["Default"]}
    chosen = {name: copy.deepcopy(source[name]) for name in targets}
    return json.dumps({"StartAt": "Seed", "States": {
        "Seed": {"Type": "Pass", "Result": data, "Next": "What happened?"},
        "What happened?": choice, **chosen}})


def run(cloud: Cloud, definition: str) -> dict[str, Any]:
    arn = cloud.sfn.create_state_machine(name=f"failure-{uuid.uuid4().hex[:8]}",
                                         definition=definition, roleArn=ROLE)["stateMachineArn"]
    execution = cloud.sfn.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
    for _ in range(120):
        desc = cloud.sfn.describe_execution(executionArn=execution)
        if desc["status"] != "RUNNING":
            return dict(desc)
        time.sleep(0.5)
    raise AssertionError("execution did not end")


@pytest.mark.parametrize(("where", "error", "reported"), [
    ("error", "States.Runtime", "Pipeline.States.Runtime"),
    ("error", "States.TaskFailed", "Pipeline.States.TaskFailed"),
    ("error", "DataError", "DataError"),
    ("release_error", "States.Runtime", "Pipeline.States.Runtime"),
    ("release_error", "TransientError", "TransientError"),
])
def test_the_execution_fails_with_the_steps_real_error_and_cause(cloud: Cloud, where: str,
                                                                 error: str, reported: str):
    desc = run(cloud, ending_machine({"lease": {}, where: {"Error": error, "Cause": CAUSE}}))
    assert desc["status"] == "FAILED"
    assert (desc.get("error"), desc.get("cause")) == (reported, CAUSE)


def test_the_old_fail_state_lost_the_cause_of_a_states_error(cloud: Cloud):
    """The defect, as the emulator shows it: ErrorPath $.error.Error with States.Runtime."""
    old = {"What happened?": {"Type": "Choice", "Choices": [
        {"Variable": "$.error", "IsPresent": True, "Next": "Pipeline failed"}],
        "Default": "Done"},
        "Pipeline failed": {"Type": "Fail", "ErrorPath": "$.error.Error",
                            "CausePath": "$.error.Cause"},
        "Done": {"Type": "Succeed"}}
    desc = run(cloud, ending_machine({"error": {"Error": "States.Runtime", "Cause": CAUSE}},
                                     old))
    assert desc["status"] == "FAILED"
    assert CAUSE not in (desc.get("cause") or "")
    assert "MUST NOT begin with the prefix 'States.'" in (desc.get("cause") or "")
