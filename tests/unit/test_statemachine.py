"""Static checks of statemachine/pipeline.asl.json: valid, every state reachable, every
Task retried, every failure path releases the lease, substitutions all defined."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ctr_infra.deploy import load_template

ROOT = Path(__file__).resolve().parents[2]
ASL_TEXT = (ROOT / "statemachine" / "pipeline.asl.json").read_text()
ASL = json.loads(ASL_TEXT)


def successors(state: dict) -> set[str]:
    nxt = {state["Next"]} if "Next" in state else set()
    nxt |= {c["Next"] for c in state.get("Choices", [])}
    if "Default" in state:
        nxt.add(state["Default"])
    nxt |= {c["Next"] for c in state.get("Catch", [])}
    return nxt


def all_states(states: dict) -> dict[str, dict]:
    out = dict(states)
    for st in states.values():
        if st["Type"] == "Map":
            out.update(all_states(st["ItemProcessor"]["States"]))
    return out


def test_every_state_is_reachable_and_every_target_exists():
    states = ASL["States"]
    seen, todo = set(), [ASL["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in states, f"transition to missing state {name!r}"
        todo.extend(successors(states[name]))
    assert seen == set(states), f"unreachable: {set(states) - seen}"


def test_every_task_has_retry_with_backoff_and_jitter():
    for name, st in all_states(ASL["States"]).items():
        if st["Type"] == "Task":
            assert st.get("Retry"), f"{name} has no Retry"
            for r in st["Retry"]:
                assert r.get("BackoffRate", 1) > 1 and r.get("JitterStrategy") == "FULL", name


def test_failures_after_the_lease_release_it():
    states = ASL["States"]
    holders = [n for n, st in states.items() if st["Type"] in ("Task", "Map")
               and "Guard" not in json.dumps(st.get("Parameters", {}))]
    for name in holders:
        catches = states[name].get("Catch", [])
        assert any(c["Next"] == "Release lease after failure" and "States.ALL" in c["ErrorEquals"]
                   for c in catches), f"{name} does not release the lease on failure"
    assert states["Release lease after failure"]["Next"] == "Pipeline failed"
    assert states["Pipeline failed"]["Type"] == "Fail"


def test_a_failed_acquire_also_releases_a_lease_it_may_have_written():
    """The guard can crash after its conditional write: without a release the lease
    would block every run for LeaseSeconds (release is a no-op for a non-holder)."""
    catches = ASL["States"]["Acquire lease"]["Catch"]
    assert [c["Next"] for c in catches] == ["Release lease after failure"]


def test_idempotent_data_steps_retry_a_crash_or_timeout_once():
    states = all_states(ASL["States"])
    for name in ("Chunk new lines", "Aggregate to Parquet", "Aggregate one chunk"):
        crash = [r for r in states[name]["Retry"] if "Runtime.ExitError" in r["ErrorEquals"]]
        assert crash and "Sandbox.Timedout" in crash[0]["ErrorEquals"], name
        assert crash[0]["MaxAttempts"] == 1, name
    # training is not idempotent in time (a second fit costs minutes): not retried on crash
    assert not any("Runtime.ExitError" in r["ErrorEquals"]
                   for r in states["Train model"]["Retry"])


def test_substitutions_are_all_defined_in_the_template():
    used = set(re.findall(r"\$\{(\w+)\}", ASL_TEXT))
    tpl = load_template(ROOT / "template.yaml")
    defined = set(tpl["Resources"]["PipelineStateMachine"]["Properties"]
                  ["DefinitionSubstitutions"])
    assert used and used <= defined, used - defined


def test_overlap_and_nothing_new_end_as_success_not_failure():
    states = ASL["States"]
    assert states[states["Lease acquired?"]["Default"]]["Type"] == "Succeed"
    nothing = states["Anything new to train on?"]["Choices"][0]
    assert nothing["StringEquals"] == "exhausted"
    assert states[states[nothing["Next"]]["Next"]]["Type"] == "Succeed"
