"""infra/bootstrap.sh finds Python 3.13 without hard-coded paths and fails clearly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_finder(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = (f'source <(sed -n "/^find_python313()/,/^}}/p" {ROOT}/infra/bootstrap.sh); '
              "find_python313")
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)


def test_clear_error_when_no_python313(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # nothing on PATH, no pyenv
    proc = run_finder({**env, "PATH": f"{tmp_path}:/usr/bin:/bin"}
                      if not Path("/usr/bin/python3.13").exists() else env)
    assert proc.returncode != 0
    assert "Python 3.13 not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctr_python_must_really_be_313(tmp_path):
    fake = tmp_path / "python3.13"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = run_finder({"PATH": os.environ["PATH"], "CTR_PYTHON": str(fake)})
    assert proc.returncode != 0 and "not a working Python 3.13" in proc.stderr


def test_finds_a_working_313():
    proc = run_finder(dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([proc.stdout.strip(), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "(3, 13)"
