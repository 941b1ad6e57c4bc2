"""The registry's audit trail and events (ctr.registry.audit): one create-only object
per event under audit/, the same event on EventBridge, retries that neither duplicate
nor lose an event, and promote / rollback / apply_decision recording what they change
(against a local SQLite MLflow, a fake S3 and a fake EventBridge client)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from ctr import layout, registry
from ctr.errors import TransientError
from ctr.registry import audit, runlog
from ctr.registry.promotion import apply_decision
from ctr.serving.app import ServingSettings, create_app
from ctr.storage import Store
from ctr_infra.commands import model as model_cmd
from ctr_infra.memory_s3 import MemoryS3


class FakeEvents:
    """EventBridge's put_events: records entries; `fail` makes the next calls fail."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail: list[Exception | str] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.fail:
            failure = self.fail.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return {"FailedEntryCount": 1,
                    "Entries": [{"ErrorCode": failure, "ErrorMessage": "refused"}]}
        self.entries += Entries
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in Entries]}

    def details(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e["DetailType"], json.loads(e["Detail"])) for e in self.entries]


@pytest.fixture
def store() -> Store:
    return Store(MemoryS3(), "bucket")


@pytest.fixture
def events() -> FakeEvents:
    return FakeEvents()


@pytest.fixture(scope="module")
def client(sqlite_mlflow):
    return sqlite_mlflow


@pytest.fixture
def model(client, request) -> str:
    name = f"audit_{request.node.name}"[:60]
    runlog.ensure_registered_model(client, name)
    for _ in range(3):
        client.create_model_version(name, source="file:///nowhere",
                                    tags={"status": "candidate"})
    return name


def audit_keys(store: Store) -> list[str]:
    return sorted(store.list_keys(layout.AUDIT_PREFIX))


def aliases(client, name) -> dict[str, int]:
    return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}


# --- the recorder --------------------------------------------------------------------

def test_an_event_is_one_object_then_one_eventbridge_event(store, events):
    recorder = audit.AuditRecorder(store, events, actor="exec-7")
    event = audit.record_registered(recorder, model_name="m", version=3, production=2,
                                    numbers={"holdout_logloss": 0.45, "rows": 1000})
    assert event is not None
    (key,) = audit_keys(store)
    assert key.startswith("audit/m/") and key.endswith(f"-registered-v3-{event.event_id}.json")
    stamp = key.removeprefix("audit/m/").split("-", 1)[0]
    assert len(stamp) == len("20261202T041715.123456") and stamp[8] == "T"
    stored = audit.AuditEvent.model_validate_json(store.get(key).body)
    assert stored == event
    assert (stored.actor, stored.production_before, stored.production_after) == ("exec-7", 2, 2)
    assert stored.numbers == {"holdout_logloss": 0.45, "rows": 1000.0}
    ((entry),) = events.entries
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        "ctr.pipeline", "ModelRegistered", "default")
    assert json.loads(entry["Detail"]) == event.model_dump(mode="json")


def test_kinds_map_to_the_four_detail_types():
    assert audit.DETAIL_TYPES == {"registered": "ModelRegistered",
                                  "promoted": "ModelPromoted",
                                  "manual_promote": "ModelPromoted",
                                  "rejected": "ModelRejected",
                                  "rollback": "ModelRolledBack"}


def test_a_failed_publish_is_transient_and_the_retry_neither_duplicates_nor_loses_it(
        store, events):
    recorder = audit.AuditRecorder(store, events, actor="exec-1")
    events.fail = [ClientError({"Error": {"Code": "ThrottlingException"}}, "PutEvents"),
                   "InternalFailure"]
    for _ in range(2):                    # an exception, then a refused entry
        with pytest.raises(TransientError):
            recorder.record("promoted", model_name="m", version=2, reason="better",
                            production_before=1, production_after=2)
        assert len(audit_keys(store)) == 1 and events.entries == []   # written first
    again = recorder.record("promoted", model_name="m", version=2, reason="better",
                            production_before=1, production_after=2)
    assert len(audit_keys(store)) == 1
    assert [d["event_id"] for _, d in events.details()] == [again.event_id]


def test_event_ids_identify_the_logical_event(store, events):
    a = audit.AuditRecorder(store, events, actor="exec-1")
    b = audit.AuditRecorder(store, events, actor="exec-2")
    first = a.record("rejected", model_name="m", version=4, reason="worse")
    assert b.record("rejected", model_name="m", version=4, reason="worse").event_id \
        != first.event_id                                           # another execution
    # `registered` happens once per version, whichever execution reports it.
    assert (audit.record_registered(a, model_name="m", version=5).event_id
            == audit.record_registered(b, model_name="m", version=5).event_id)
    assert len(audit_keys(store)) == 3


def test_an_operator_repeating_a_command_later_is_a_new_event(store, events):
    cli = audit.AuditRecorder(store, events, actor="cli:ana", manual=True)
    kwargs = {"model_name": "m", "version": 2, "reason": "known good",
              "production_before": 3, "production_after": 2}
    first = cli.record("manual_promote", **kwargs)
    assert cli.record("manual_promote", **kwargs) == first       # a re-run: same record
    cli.record("manual_promote", model_name="m", version=3, reason="back",
               production_before=2, production_after=3)
    later = cli.record("manual_promote", **kwargs)                 # after another event
    assert later.event_id == first.event_id and len(audit_keys(store)) == 3
    assert [e.version for e in audit.list_events(store, "m")] == [2, 3, 2]


def test_list_events_is_in_time_order_and_can_start_from_the_newest(store):
    recorder = audit.AuditRecorder(store, None, actor="exec-1")    # no events client
    for version in range(1, 6):
        audit.record_registered(recorder, model_name="m", version=version)
    audit.record_registered(recorder, model_name="other", version=1)
    assert [e.version for e in audit.list_events(store, "m")] == [1, 2, 3, 4, 5]
    assert [e.version for e in audit.list_events(store, "m", newest_first=True, limit=2)] \
        == [5, 4]
    assert audit.list_events(store, "nothing") == []


def test_records_are_create_only(store, events):
    recorder = audit.AuditRecorder(store, events, actor="exec-1")
    audit.record_registered(recorder, model_name="m", version=1)
    puts = []
    original = store.s3.put_object

    def spy(**kwargs: Any) -> Any:
        puts.append(kwargs)
        return original(**kwargs)

    store.s3.put_object = spy
    audit.record_registered(recorder, model_name="m", version=2)
    assert [p["IfNoneMatch"] for p in puts] == ["*"]


def test_no_recorder_records_nothing():
    assert audit.record_registered(None, model_name="m", version=1) is None
    assert audit.NullRecorder().record("promoted", model_name="m", version=1,
                                       reason="x") is None


def test_the_cli_actor_is_named(monkeypatch):
    monkeypatch.setenv("CTR_ACTOR", "ana")
    assert audit.cli_user() == "cli:ana"
    monkeypatch.delenv("CTR_ACTOR")
    assert audit.cli_user().startswith("cli:") and len(audit.cli_user()) > 4


# --- promotion wiring ----------------------------------------------------------------

class Verdict:
    """What apply_decision reads of a gate `Decision`: the verdict, the reason and the
    comparison tags (the gate's numbers, whatever the rule measures)."""

    def __init__(self, promoted: bool, reason: str, tags: dict[str, str]) -> None:
        self.promoted, self.reason, self.tags = promoted, reason, tags

    def numbers(self) -> dict[str, str]:
        return self.tags


def test_promote_and_rollback_record_aliases_before_and_after(client, model, store, events):
    cli = audit.AuditRecorder(store, events, actor="cli:ana", manual=True)
    registry.promote(client, model, 1, reason="first", recorder=cli)
    registry.promote(client, model, 2, reason="try v2", recorder=cli)
    assert registry.promote(client, model, 2, recorder=cli).status == "unchanged"
    out = registry.rollback(client, model, reason="v2 misbehaves", recorder=cli)
    assert out.production == 1 and aliases(client, model) == {"production": 1}
    assert registry.rollback(client, model, recorder=cli).status == "unchanged"
    trail = audit.list_events(store, model)
    assert [(e.kind, e.version) for e in trail] == [
        ("manual_promote", 1), ("manual_promote", 2), ("rollback", 1)]
    assert [(e.production_before, e.production_after, e.previous_before, e.previous_after)
            for e in trail] == [(None, 1, None, None), (1, 2, None, 1), (2, 1, 1, None)]
    rollback = trail[-1]
    assert rollback.reason == "restores v1 in place of v2: v2 misbehaves"
    assert rollback.numbers == {"restored_version": 1.0, "rolled_back_version": 2.0}
    assert {e.actor for e in trail} == {"cli:ana"}
    assert [t for t, _ in events.details()] == ["ModelPromoted", "ModelPromoted",
                                                "ModelRolledBack"]


def test_a_failed_publish_leaves_the_registry_unchanged_and_a_rerun_completes(
        client, model, store, events):
    cli = audit.AuditRecorder(store, events, actor="cli:ana", manual=True)
    registry.promote(client, model, 1, recorder=cli)
    events.fail = ["InternalFailure"]
    with pytest.raises(TransientError):
        registry.promote(client, model, 3, reason="known good", recorder=cli)
    assert aliases(client, model) == {"production": 1}            # record came first
    registry.promote(client, model, 3, reason="known good", recorder=cli)
    assert aliases(client, model) == {"production": 3, "previous": 1}
    assert [(e.kind, e.version) for e in audit.list_events(store, model)] == [
        ("manual_promote", 1), ("manual_promote", 3)]
    assert [d["version"] for _, d in events.details()] == [1, 3]


def test_apply_decision_records_promoted_and_rejected_with_the_numbers(
        client, model, store, events):
    pipeline = audit.AuditRecorder(store, events, actor="exec-9")
    registry.promote(client, model, 1)                             # no recorder: nothing
    assert audit_keys(store) == []
    better = Verdict(True, "better", {"production_holdout_logloss": "0.460000",
                                      "candidate_holdout_logloss": "0.450000"})
    apply_decision(client, model, 2, better, recorder=pipeline)  # type: ignore[arg-type]
    worse = Verdict(False, "worse", {"production_holdout_logloss": "0.450000",
                                     "candidate_holdout_logloss": "0.470000",
                                     "guard": "calibration"})
    apply_decision(client, model, 3, worse, recorder=pipeline)  # type: ignore[arg-type]
    assert aliases(client, model) == {"production": 2, "previous": 1}
    promoted, rejected = audit.list_events(store, model)
    assert (promoted.kind, promoted.version, promoted.production_before,
            promoted.production_after, promoted.previous_after) == ("promoted", 2, 1, 2, 1)
    assert promoted.numbers["candidate_holdout_logloss"] == pytest.approx(0.45)
    assert (rejected.kind, rejected.version, rejected.production_before,
            rejected.production_after, rejected.reason) == ("rejected", 3, 2, 2, "worse")
    assert rejected.numbers["production_holdout_logloss"] == pytest.approx(0.45)
    assert rejected.numbers["guard"] == "calibration"                # text stays text
    assert [t for t, _ in events.details()] == ["ModelPromoted", "ModelRejected"]


# --- readers: the API and the CLI ----------------------------------------------------

def test_model_history_api_reads_the_trail_newest_first(store, events):
    recorder = audit.AuditRecorder(store, events, actor="exec-1")
    for version in (1, 2, 3):
        audit.record_registered(recorder, model_name="criteo_ctr_model", version=version)
    api = TestClient(create_app(ServingSettings(bucket_name="bucket", web_dir=None),
                                store_factory=lambda: store))
    body = api.get("/model-history", params={"limit": 2}).json()
    assert body["model_name"] == "criteo_ctr_model"
    assert [e["version"] for e in body["events"]] == [3, 2]
    assert api.get("/model-history").json()["events"][-1]["version"] == 1
    bad = api.get("/model-history", params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["error"] == "ValidationError"
    spec = api.get("/openapi.json").json()
    assert "ModelHistoryResponse" in json.dumps(spec["paths"]["/model-history"])
    assert "AuditEvent" in spec["components"]["schemas"]


def test_an_empty_trail_is_an_empty_history(store):
    api = TestClient(create_app(ServingSettings(bucket_name="bucket", web_dir=None),
                                store_factory=lambda: store))
    assert api.get("/model-history").json() == {"model_name": "criteo_ctr_model",
                                                 "events": []}


def test_ctr_model_history_prints_the_trail(store, events, monkeypatch, capsys):
    cli = audit.AuditRecorder(store, events, actor="cli:ana", manual=True)
    cli.record("manual_promote", model_name="m", version=2, reason="known good",
               production_before=1, production_after=2, previous_after=1)
    cli.record("rollback", model_name="m", version=1, reason="restores v1 in place of v2",
               production_before=2, production_after=1, previous_before=1)
    monkeypatch.setattr(model_cmd, "audit_target", lambda args: (store, events))
    parser_args = ["model", "history", "--model-name", "m"]
    from ctr_infra import cli as ctr_cli

    assert ctr_cli.main(parser_args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["time", "kind", "version"]
    assert "manual_promote" in out[1] and "v1->v2" in out[1] and "cli:ana" in out[1]
    assert "rollback" in out[2] and "restores v1" in out[2]
    assert ctr_cli.main([*parser_args, "--json", "--limit", "1"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["kind"] == "rollback"


def test_the_cli_records_only_where_the_registry_lives(monkeypatch):
    import argparse

    monkeypatch.delenv("CTR_BUCKET", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = argparse.Namespace(bucket=None, endpoint_url=None, tracking_uri="http://elsewhere")
    assert model_cmd.audit_target(args) is None          # not the local cloud's registry
    assert model_cmd.recorder_for(args) is None
    args = argparse.Namespace(bucket="b", endpoint_url="http://127.0.0.1:1",
                              tracking_uri="http://elsewhere")
    for var, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
                       "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(var, value)
    recorder = model_cmd.recorder_for(args)
    assert recorder is not None and recorder.store.bucket == "b" and recorder.manual
