"""Fault injection is inert by default and fires exactly as configured."""

from __future__ import annotations

import pytest

from ctr import aggregate, chunking, faults, layout
from ctr.errors import TransientError
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3
from tests.invariants import account, source_with_rejects


def test_inert_without_configuration(monkeypatch):
    monkeypatch.delenv("CTR_FAULTS", raising=False)
    faults.inject("chunk.after_write")  # nothing happens


def test_raises_the_named_error_the_configured_number_of_times(monkeypatch, tmp_path):
    monkeypatch.setenv("CTR_FAULTS", "train.start=TransientError*2, other=crash")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    for _ in range(2):
        with pytest.raises(TransientError, match=r"injected fault at train\.start"):
            faults.inject("train.start")
    faults.inject("train.start")  # third time: exhausted
    faults.inject("unrelated.point")


def test_unknown_action_is_a_runtime_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CTR_FAULTS", "x=Kaboom")
    with pytest.raises(RuntimeError, match="Kaboom"):
        faults.inject("x")


def test_sleep_stalls_for_the_given_seconds_then_returns(monkeypatch, tmp_path):
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("CTR_FAULTS", "aggregate.before_part=sleep:2.5*1")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    faults.inject("aggregate.before_part")
    faults.inject("aggregate.before_part")  # the count is spent
    assert slept == [2.5]


def test_counts_are_shared_through_the_faults_dir(monkeypatch, tmp_path):
    """Two processes of one function share the count: a spent count stays spent."""
    monkeypatch.setenv("CTR_FAULTS", "p=TransientError*1")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    with pytest.raises(TransientError):
        faults.inject("p")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p.0"]
    faults.inject("p")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path / "fresh"))
    with pytest.raises(TransientError):
        faults.inject("p")


def test_aggregate_before_part_fires_between_the_rejects_and_the_part(monkeypatch, tmp_path):
    store = Store(MemoryS3(), "bucket")
    store.put("raw/it/a.txt", source_with_rejects(300, seed=2, bad_every=50))
    chunking.cut_chunk(store, 1000)
    monkeypatch.setenv("CTR_FAULTS", f"{aggregate.FAULT_BEFORE_PART}=TransientError*1")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    with pytest.raises(TransientError):
        aggregate.aggregate(store)
    assert store.exists(layout.rejects_key(0)) and not store.exists(layout.parquet_key(0))
    assert account(store, allow_pending=True).pending_chunks == (0,)
    assert aggregate.aggregate(store).converted == [0]   # the re-run finishes it
    done = account(store, complete=True)
    assert done.ok and (done.parquet_rows, done.rejected_lines) == (300, 6)
