"""Fault injection is inert by default and fires exactly as configured."""

from __future__ import annotations

import pytest

from ctr import faults
from ctr.errors import TransientError


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
