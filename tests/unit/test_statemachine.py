"""Static checks of statemachine/pipeline.asl.json: valid, every state reachable, every
Task retried with one of the named Retry policies, one "Release lease" that every path
after the lease reaches, failures still failing with the step's error, substitutions all
defined. (What each state reads from another is checked in test_step_contracts.py.)"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

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


# The Retry policies, named once. ASL has no references, so each Task carries a copy of
# the policies it uses; these tests keep every copy equal to its named original.
_LAMBDA_SERVICE = ["Lambda.ServiceException", "Lambda.AWSLambdaException",
                   "Lambda.SdkClientException", "Lambda.TooManyRequestsException"]
RETRY_POLICIES = {
    # a step that can be re-run at any time: a few quick retries of transient failures
    "transient": {"ErrorEquals": ["TransientError", "ConflictError", *_LAMBDA_SERVICE],
                  "IntervalSeconds": 2, "MaxAttempts": 4, "BackoffRate": 2.0,
                  "MaxDelaySeconds": 30, "JitterStrategy": "FULL"},
    # an idempotent data step whose attempt crashed or timed out: once more
    "crash once": {"ErrorEquals": ["Runtime.ExitError", "Sandbox.Timedout"],
                   "IntervalSeconds": 2, "MaxAttempts": 1, "BackoffRate": 2.0,
                   "JitterStrategy": "FULL"},
    # training: slower, fewer retries, no ConflictError (a fit is not a cheap re-run)
    "train": {"ErrorEquals": ["TransientError", *_LAMBDA_SERVICE],
              "IntervalSeconds": 5, "MaxAttempts": 3, "BackoffRate": 2.0,
              "MaxDelaySeconds": 30, "JitterStrategy": "FULL"},
}
TASK_POLICIES = {
    "Acquire lease": ["transient"],
    "Sync serving model": ["transient"],
    "Plan backfill": ["transient", "crash once"],
    "Cut one range": ["transient", "crash once"],
    "Finish backfill": ["transient", "crash once"],
    "Chunk new lines": ["transient", "crash once"],
    "Plan aggregation": ["transient"],
    "Aggregate to Parquet": ["transient", "crash once"],
    "Aggregate one chunk": ["transient", "crash once"],
    "Train model": ["train"],
    "Reload serving model": ["transient"],
    "Evaluate served model": ["transient"],
    "Publish rolled-back model": ["transient"],
    "Release lease": ["transient"],
}


def policy_name(retrier: dict) -> str | None:
    return next((name for name, policy in RETRY_POLICIES.items() if retrier == policy), None)


def test_every_retry_block_is_one_of_the_named_policies():
    tasks = {n: st for n, st in all_states(ASL["States"]).items() if st["Type"] == "Task"}
    assert set(tasks) == set(TASK_POLICIES), "a Task without a declared Retry policy"
    for name, st in tasks.items():
        used = [policy_name(r) for r in st["Retry"]]
        assert None not in used, (
            f"{name}: Retry block {st['Retry'][used.index(None)]} is none of "
            f"{sorted(RETRY_POLICIES)}; change the policy in RETRY_POLICIES and every copy")
        assert used == TASK_POLICIES[name], name


def test_every_task_has_retry_with_backoff_and_jitter():
    for name, st in all_states(ASL["States"]).items():
        if st["Type"] == "Task":
            assert st.get("Retry"), f"{name} has no Retry"
            for r in st["Retry"]:
                assert r.get("BackoffRate", 1) > 1 and r.get("JitterStrategy") == "FULL", name


def releases(state: dict) -> bool:
    return state.get("Parameters", {}).get("Payload", {}).get("action") == "release"


def _lookup(data: dict, path: str) -> object:
    """A `$.a.b` reference path in `data`; KeyError when absent."""
    node: object = data
    for part in path.removeprefix("$.").split("."):
        assert isinstance(node, dict)
        node = node[part]
    return node


def _matches(rule: dict, data: dict) -> bool:
    """One Choice rule of the kinds 'What happened?' uses: And, IsPresent, StringMatches."""
    if "And" in rule:
        return all(_matches(r, data) for r in rule["And"])
    try:
        value = _lookup(data, rule["Variable"])
    except KeyError:
        return rule.get("IsPresent") is False
    if "IsPresent" in rule:
        return rule["IsPresent"] is True
    assert set(rule) - {"Next"} == {"Variable", "StringMatches"}, rule
    return isinstance(value, str) and fnmatch.fnmatch(value, rule["StringMatches"])


def ending(present: set[str] | dict) -> str:
    """Where 'What happened?' leads for the execution data `present` (a dict, or the set
    of its top-level keys, each an error {"Error": "SomeError", "Cause": "..."})."""
    data = present if isinstance(present, dict) else {
        k: {"Error": "SomeError", "Cause": "c"} for k in present}
    choice = ASL["States"]["What happened?"]
    for rule in choice["Choices"]:
        if _matches(rule, data):
            return str(rule["Next"])
    return str(choice["Default"])


def fail_error(state: dict, data: dict) -> tuple[str, str]:
    """(error, cause) a Fail state reports for `data`: ErrorPath/CausePath as a reference
    path or States.Format('<prefix>{}', <path>), the two forms used here."""
    def value(expr: str) -> str:
        if expr.startswith("States.Format("):
            m = re.fullmatch(r"States\.Format\('([^']*)', (\$[\w.]+)\)", expr)
            assert m, expr
            return m.group(1).replace("{}", str(_lookup(data, m.group(2))), 1)
        return str(_lookup(data, expr))
    return value(state["ErrorPath"]), value(state["CausePath"])


def test_one_release_state_and_every_path_after_the_lease_reaches_it():
    states = ASL["States"]
    assert [n for n, st in all_states(states).items() if releases(st)] == ["Release lease"]
    holders = [n for n, st in states.items() if st["Type"] in ("Task", "Map")
               and "Guard" not in json.dumps(st.get("Parameters", {}))]
    for name in holders:
        assert states[name].get("Catch") == [{"ErrorEquals": ["States.ALL"],
                                              "ResultPath": "$.error",
                                              "Next": "Release lease"}], (
            f"{name} does not release the lease on failure")
    release = states["Release lease"]
    assert release["Next"] == "What happened?"
    assert release["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.release_error",
                                 "Next": "What happened?"}]


def test_failures_after_the_lease_release_it_and_fail_with_the_steps_error():
    states = ASL["States"]
    for release_failed in (False, True):   # the step's error wins over a failed release
        present = {"lease", "chunk", "error"} | ({"release_error"} if release_failed else set())
        assert ending(present) == "Pipeline failed"
    failed = states["Pipeline failed"]
    assert failed["Type"] == "Fail"
    assert (failed["ErrorPath"], failed["CausePath"]) == ("$.error.Error", "$.error.Cause")


def test_success_paths_end_as_today():
    states = ASL["States"]
    assert states[ending({"lease", "chunk", "plan", "aggregate", "train"})]["Type"] == "Succeed"
    assert states[ending({"lease", "chunk", "plan", "fanout", "train", "reload"})][
        "Type"] == "Succeed"
    # a failed release after successful steps fails the execution with the release's error
    nope = states[ending({"lease", "chunk", "plan", "train", "release_error"})]
    assert nope["Type"] == "Fail"
    assert (nope["ErrorPath"], nope["CausePath"]) == ("$.release_error.Error",
                                                      "$.release_error.Cause")


@pytest.mark.parametrize("error", ["States.Runtime", "States.Timeout", "States.TaskFailed",
                                   "States.Permissions", "DataError", "Sandbox.Timedout",
                                   "Lambda.ServiceException"])
@pytest.mark.parametrize("where", ["error", "release_error"])
def test_every_failure_reports_the_real_error_and_cause_whatever_its_name(where, error):
    """Regression (issue 15): a Fail state whose error is a 'States.*' name is refused by
    the service ("Custom Error Names MUST NOT begin with the prefix 'States.'", the ASL
    spec's rule), which replaced a States.Runtime from the Lambda call by that refusal.
    Every error name must reach a Fail state that reports a legal name that still says
    what failed, and the step's own cause."""
    cause = 'Connection was closed before we received a valid response from endpoint URL'
    data = {"lease": {}, where: {"Error": error, "Cause": cause}}
    state = ASL["States"][ending(data)]
    assert state["Type"] == "Fail"
    reported, reported_cause = fail_error(state, data)
    assert not reported.startswith("States."), reported
    assert reported.endswith(error) and reported_cause == cause
    if not error.startswith("States."):
        assert reported == error            # custom names are reported as they are


def test_a_failed_acquire_also_releases_a_lease_it_may_have_written():
    """The guard can crash after its conditional write: without a release the lease
    would block every run for LeaseSeconds (release is a no-op for a non-holder)."""
    catches = ASL["States"]["Acquire lease"]["Catch"]
    assert [c["Next"] for c in catches] == ["Release lease"]
    assert ending({"error"}) == "Pipeline failed"


def test_idempotent_data_steps_retry_a_crash_or_timeout_once():
    states = all_states(ASL["States"])
    for name in ("Chunk new lines", "Aggregate to Parquet", "Aggregate one chunk",
                 "Plan backfill", "Cut one range", "Finish backfill"):
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
    # exhausted AND nothing was pending: chunks aggregated from a backlog still train
    assert nothing["And"] == [
        {"Variable": "$.chunk.value.status", "StringEquals": "exhausted"},
        {"Variable": "$.plan.value.pending_count", "NumericEquals": 0}]
    assert states[nothing["Next"]]["Next"] == "What happened?"
    assert ending({"lease", "chunk", "plan", "released"}) == "Nothing new"
    assert states["Nothing new"]["Type"] == "Succeed"


def all_state_names(states: dict = ASL["States"]) -> set[str]:
    """Every state name, including those inside Map/Parallel branches."""
    names = set(states)
    for state in states.values():
        for sub in [state.get("ItemProcessor") or state.get("Iterator"),
                    *state.get("Branches", [])]:
            if sub:
                names |= all_state_names(sub["States"])
    return names


def test_the_definition_stays_short_enough_to_read():
    """Retry/Catch blocks are kept compact (one policy per line or two); a reformat that
    spreads them out again would double the file. (The backfill's four states took it
    from 274 to 343 lines.)"""
    assert len(ASL_TEXT.splitlines()) < 360


def test_the_state_diagram_in_the_docs_names_only_real_states():
    """docs/architecture.md draws the state machine; a renamed state must be renamed
    there too."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    block = doc.split("```mermaid\nflowchart TD\n", 1)[1].split("```", 1)[0]
    drawn = {label.split("<br/>")[0]
             for label in re.findall(r'[\[{(]+"([^"]+)"[\]})]+', block)}
    drawn -= {"EventBridge rule, ctr run"}          # the start, not a state
    assert drawn, "no state found in the diagram"
    assert drawn <= all_state_names(), drawn - all_state_names()


def test_every_execution_first_syncs_serving_with_the_registry():
    """Serving follows the registry: right after the lease, before any data step, the
    reload function in sync mode publishes production if the serving pointer lags (a
    reload that failed after a promotion heals on the next run)."""
    states = ASL["States"]
    acquired = states["Lease acquired?"]["Choices"]
    assert [c["Next"] for c in acquired if c.get("BooleanEquals") is True] == [
        "Sync serving model"]
    sync = states["Sync serving model"]
    assert sync["Parameters"]["FunctionName"] == "${ReloadFunctionArn}"
    assert sync["Parameters"]["Payload"]["action"] == "sync"
    assert sync["Next"] == "Plan backfill"          # the first data step
    # the reload after a promotion stays a plain publish (a missing production fails it)
    assert "action" not in states["Reload serving model"]["Parameters"]["Payload"]


def test_a_backlog_is_cut_in_parallel_and_the_cursor_moves_once_after_all_chunks():
    """Plan backfill -> (planned) a Distributed Map over the plan's JSON array in S3,
    bounded by the plan's max_concurrency, each child cutting one range -> Finish
    backfill (the one cursor move) -> plan again (the next source); not planned ->
    the one-chunk cut as before. A failed child fails the Map before Finish: the
    cursor is not moved and the lease is released."""
    states = ASL["States"]
    assert states["Sync serving model"]["Next"] == "Plan backfill"
    assert states["Plan backfill"]["Parameters"]["Payload"]["action"] == "plan_backfill"
    assert states["Plan backfill"]["Next"] == "Backfill planned?"
    choice = states["Backfill planned?"]
    assert choice["Choices"] == [{"Variable": "$.backfill.value.status",
                                  "StringEquals": "planned", "Next": "Cut backlog in parallel"}]
    assert choice["Default"] == "Chunk new lines"
    fan = states["Cut backlog in parallel"]
    assert fan["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket": "${BucketName}", "Key.$": "$.backfill.value.plan_key"}}
    assert fan["MaxConcurrencyPath"] == "$.backfill.value.max_concurrency"
    assert fan["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert "ToleratedFailurePercentage" not in fan and "ToleratedFailureCount" not in fan
    child = fan["ItemProcessor"]["States"]["Cut one range"]
    assert child["Parameters"]["Payload"] == {"action": "cut_range", "item.$": "$"}
    # a small result per child ({index, reused}): ~40 bytes of state per chunk
    assert fan["ResultPath"] == "$.backfill_cuts"
    assert set(child["ResultSelector"]) == {"index.$", "reused.$"}
    # CloudFormation in the local cloud refuses a template holding a JSON null
    # (CreateStack -> 500 "Unsupported type NoneType"): "ResultPath": null is no option
    assert "null" not in ASL_TEXT
    assert fan["Next"] == "Finish backfill"
    finish = states["Finish backfill"]
    assert finish["Parameters"]["Payload"] == {"action": "finish_backfill",
                                               "plan.$": "$.backfill.value"}
    assert finish["Next"] == "Plan backfill"
    assert states["Chunk new lines"]["Next"] == "Plan aggregation"
    tpl = load_template(ROOT / "template.yaml")
    assert tpl["Parameters"]["BackfillConcurrency"]["Default"] == 4
    env = tpl["Resources"]["ChunkFunction"]["Properties"]["Environment"]["Variables"]
    assert env["BACKFILL_CONCURRENCY"] == {"Ref": "BackfillConcurrency"}
