"""Serving follows the registry (issue 13, part 6) on the local cloud: a reload made to
fail after a promotion fails the execution and leaves serving behind, which `/health`
shows with both versions; the next execution's first task ('Sync serving model')
publishes the registry's production version, and registry == serving again.

Tests run in file order and share one dataset (two chunks of synthetic lines)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from ctr import ingest, layout, synth
from ctr.registry import audit

CHUNK = 3000
MODEL_NAME = "criteo_ctr_model"
# Whatever the gate's defaults, a second version on this small dataset is promoted (the
# test is about what happens after a promotion, not about the gate). Names the train
# function does not know are ignored by its settings.
PERMISSIVE_GATE = {"PROMOTION_TOLERANCE": "10", "MIN_NEW_ROWS": "1",
                   "HOLDOUT_MIN_ROWS": "300", "CALIBRATION_BAND": "10",
                   "AUC_TOLERANCE": "1"}
RELOAD_FAULT = "reload.publish=ReloadBroken"   # the publish after a promotion, not sync


@pytest.fixture(scope="module")
def stack(cloud, tmp_path_factory):
    cloud.reset_data()
    path = tmp_path_factory.mktemp("follows") / "train.txt"
    synth.write_tsv(path, CHUNK * 2, seed=13, progress=False)
    ingest.put(cloud.store, str(path), progress=False)
    train_env = cloud.function_env("TrainFunction")
    # one chunk per execution: each of the three executions has new data to train on
    cloud.set_env("ChunkFunction", CHUNK_LINES=str(CHUNK), BACKFILL_CONCURRENCY="0")
    cloud.set_env("TrainFunction", **PERMISSIVE_GATE)
    yield cloud
    cloud.set_env("ReloadFunction", CTR_FAULTS=None)
    cloud.set_env("TrainFunction", **{k: train_env.get(k) for k in PERMISSIVE_GATE})
    cloud.set_env("ChunkFunction", CHUNK_LINES=None, BACKFILL_CONCURRENCY=None)


def run(cloud, name: str) -> tuple[str, dict[str, Any]]:
    arn = cloud.start_execution(name)
    return arn, cloud.wait_execution(arn)


def health(cloud) -> dict[str, Any]:
    response = httpx.get(f"{cloud.api_url.rstrip('/')}/health", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def production_alias(cloud) -> int:
    client = MlflowClient(tracking_uri=cloud.mlflow_uri)
    return int(client.get_model_version_by_alias(MODEL_NAME, "production").version)


def served_pointer(cloud) -> int:
    pointer, _ = cloud.store.get_json(layout.PRODUCTION_POINTER_KEY)
    return int(pointer["version"])


def state_output(cloud, arn: str, state: str) -> dict[str, Any]:
    """The output of `state` in the execution's history (its last exit)."""
    events = cloud.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    exits = [e["stateExitedEventDetails"] for e in events if "stateExitedEventDetails" in e
             and e["stateExitedEventDetails"]["name"] == state]
    assert exits, f"{state} never exited"
    return dict(json.loads(exits[-1]["output"]))


def state_seconds(cloud, arn: str, state: str) -> float:
    """Seconds from entering `state` to leaving it (its first visit)."""
    events = cloud.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    entered = next(e["timestamp"] for e in events if e.get("stateEnteredEventDetails", {})
                   .get("name") == state)
    exited = next(e["timestamp"] for e in events if e.get("stateExitedEventDetails", {})
                  .get("name") == state)
    return float((exited - entered).total_seconds())


def test_the_first_execution_syncs_to_no_model_then_serves_its_promotion(stack):
    arn, desc = run(stack, "it-follows-first")

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    states = stack.states_entered(arn)
    assert states.index("Sync serving model") < states.index("Chunk new lines")
    out = json.loads(desc["output"])
    assert out["sync"]["value"]["status"] == "no_model"
    assert out["train"]["value"]["promoted"] is True
    assert served_pointer(stack) == production_alias(stack) == out["train"]["value"]["version"]
    took = state_seconds(stack, arn, "Sync serving model")
    print(f"\nsync, no model yet (cold start): {took:.1f}s")


def test_a_failed_reload_after_a_promotion_fails_and_shows_serving_behind(stack):
    served = served_pointer(stack)
    stack.set_env("ReloadFunction", CTR_FAULTS=RELOAD_FAULT)
    try:
        arn, desc = run(stack, "it-follows-broken-reload")
    finally:
        stack.set_env("ReloadFunction", CTR_FAULTS=None)

    assert desc["status"] == "FAILED"
    assert "injected fault at reload.publish" in (desc.get("cause") or "")
    states = stack.states_entered(arn)
    assert {"Sync serving model", "Train model", "Reload serving model",
            "Pipeline failed"} <= set(states)
    sync = state_output(stack, arn, "Sync serving model")["sync"]["value"]
    assert (sync["status"], sync["version"]) == ("unchanged", served)
    print(f"\nsync, unchanged: {state_seconds(stack, arn, 'Sync serving model'):.1f}s")
    promoted = state_output(stack, arn, "Train model")["train"]["value"]
    assert promoted["promoted"] is True and promoted["version"] > served
    # the registry moved, serving did not: the gap the next execution must heal
    assert production_alias(stack) == promoted["version"]
    assert served_pointer(stack) == served
    seen = health(stack)
    assert (seen["version"], seen["registry_production_version"], seen["serving_behind"]) == (
        served, promoted["version"], True)
    # The audit trail holds what the failed execution did to the registry.
    trail = [(e.kind, e.version, e.actor) for e in audit.list_events(stack.store, MODEL_NAME)
             if e.actor == "it-follows-broken-reload"]
    assert trail == [("registered", promoted["version"], "it-follows-broken-reload"),
                     ("promoted", promoted["version"], "it-follows-broken-reload")]


def test_the_next_execution_syncs_first_and_ends_with_registry_equal_to_serving(stack):
    behind = served_pointer(stack)
    production = production_alias(stack)
    assert production != behind

    arn, desc = run(stack, "it-follows-heal")

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    states = stack.states_entered(arn)
    assert states[:3] == ["Acquire lease", "Lease acquired?", "Sync serving model"]
    sync = json.loads(desc["output"])["sync"]["value"]
    assert (sync["status"], sync["version"]) == ("published", production)
    assert served_pointer(stack) == production_alias(stack) == production
    print(f"\nsync, published v{production}: "
          f"{state_seconds(stack, arn, 'Sync serving model'):.1f}s")
    seen = stack.wait_for("/health to serve the registry's production version", lambda: (
        h := health(stack))["version"] == production and h, timeout_s=60, every_s=0.5)
    assert (seen["registry_production_version"], seen["serving_behind"]) == (production,
                                                                            False)
