"""The short soak (issue 15): the whole system on a private local cloud with the
schedule at rate(1 minute), files fed (including a corrupt and a truncated .gz), faults
injected, predict traffic -- and the harness's end checks must all hold. The harness
is `ctr_infra.soak.harness`; `make soak` runs the long one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctr_infra.soak.harness import format_report, run_soak

pytestmark = pytest.mark.slow


def test_a_short_soak_passes_every_check(tmp_path: Path) -> None:
    lines: list[str] = []
    rep = run_soak(3, seed=11, out_dir=tmp_path, faults=("refuse", "train_crash"),
                   max_lines=20_000, feed_every_s=(25.0, 45.0), echo=lines.append)
    text = "\n".join(lines)
    print(text)
    assert json.loads(Path(rep["path"]).read_text())["ok"] == rep["ok"]
    checks = rep["checks"]
    assert rep["fed"]["files"] >= 4 and checks["lines"]["fed_lines"] > 0
    assert len(checks["lines"]["quarantined"]) == 2                  # the corrupt and truncated .gz
    assert checks["lines"]["quarantined_chunks"]                    # the 10%-malformed file
    assert checks["executions"]["executions"] >= 3 and rep["faults"]
    assert checks["predict"]["requests"] > 50
    assert {"localstack", "mlflow"} <= set(checks["memory"]["series"])
    assert rep["ok"], "\n".join(format_report(rep))
