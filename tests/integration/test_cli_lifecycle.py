"""`ctr up` / `ctr down` as a user runs them (subprocesses, own state dir and ports):
up is idempotent, down leaves no process of ours, a taken port is a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctr_infra.net import free_port

CTR = str(Path(sys.executable).with_name("ctr"))


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e.update({"CTR_STATE_DIR": str(tmp_path / "state"),
              "CTR_LOCALSTACK_PORT": str(free_port()),
              "CTR_MLFLOW_PORT": str(free_port()),
              "CTR_STACK_NAME": "ctr-cli-test"})
    return e


def ctr(env, *args, timeout=600):
    return subprocess.run([CTR, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def group_members(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
def test_up_twice_is_idempotent_and_down_stops_everything(env):
    state = Path(env["CTR_STATE_DIR"])
    t0 = time.monotonic()
    first = ctr(env, "up", "--no-bootstrap-data", "--schedule", "off")
    cold = time.monotonic() - t0
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Web page" in first.stdout and "MLflow UI" in first.stdout
    outputs1 = json.loads((state / "outputs.json").read_text())
    pids1 = {n: int((state / "pids" / f"{n}.pid").read_text()) for n in ("localstack", "mlflow")}

    t0 = time.monotonic()
    second = ctr(env, "up", "--no-bootstrap-data", "--schedule", "off")
    warm = time.monotonic() - t0
    assert second.returncode == 0, second.stdout + second.stderr
    outputs2 = json.loads((state / "outputs.json").read_text())
    pids2 = {n: int((state / "pids" / f"{n}.pid").read_text()) for n in ("localstack", "mlflow")}
    assert pids2 == pids1, "a second `up` must reuse the running processes"
    assert outputs2["ApiId"] == outputs1["ApiId"]
    assert outputs2["BucketName"] == outputs1["BucketName"]
    print(f"\ncold `ctr up`: {cold:.1f}s, warm `ctr up`: {warm:.1f}s")

    status = ctr(env, "status")
    assert status.returncode == 0 and "running pid" in status.stdout

    groups = {n: os.getpgid(p) for n, p in pids1.items()}
    down = ctr(env, "down")
    assert down.returncode == 0, down.stderr
    for name, pgid in groups.items():
        assert group_members(pgid) == [], f"{name} left processes behind"
    assert not list((state / "pids").glob("*.pid"))
    again = ctr(env, "down")
    assert "nothing was running" in again.stdout


def test_taken_port_is_a_clear_error_not_a_traceback(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", int(env["CTR_LOCALSTACK_PORT"])))
        s.listen()
        proc = ctr(env, "up", "--no-bootstrap-data", timeout=120)
    assert proc.returncode == 2
    assert f"port {env['CTR_LOCALSTACK_PORT']}" in proc.stderr
    assert "CTR_LOCALSTACK_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
