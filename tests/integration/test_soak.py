"""The short soak (issue 15): the whole system on a private local cloud with the
schedule at rate(1 minute), files fed (including a corrupt and a truncated .gz and a
file with 10% malformed lines), faults injected, predict traffic -- and the harness's
end checks must all hold. The harness is `ctr_infra.soak.harness`; `make soak` runs the
long one.

The soak is mostly waiting for the schedule, so it does not hold up the suite: when
this module is collected, tests/integration/conftest.py starts it at the beginning of
the session as `ctr soak` in a child process (its own private cloud on free ports), and
the test below waits for its report. It therefore runs while the other modules load
the 2 cores, as a soak should."""

from __future__ import annotations

import json

import pytest

from ctr_infra.soak.harness import format_report
from tests.integration.conftest import background_soak

pytestmark = pytest.mark.slow


def test_a_short_soak_passes_every_check(request: pytest.FixtureRequest) -> None:
    soak = background_soak(request.config)
    code, log = soak.wait(timeout_s=1200)
    print(log)
    reports = sorted(soak.out_dir.glob("soak-*.json"))
    assert reports, f"the soak wrote no report (exit {code})"
    rep = json.loads(reports[-1].read_text())
    checks = rep["checks"]
    assert rep["fed"]["files"] >= 4 and checks["lines"]["fed_lines"] > 0
    assert len(checks["lines"]["quarantined"]) == 2                  # the corrupt and truncated .gz
    assert checks["lines"]["quarantined_chunks"]                    # the 10%-malformed file
    assert checks["executions"]["executions"] >= 3 and rep["faults"]
    assert checks["predict"]["requests"] > 50
    assert {"localstack", "mlflow"} <= set(checks["memory"]["series"])
    assert rep["ok"], "\n".join(format_report(rep))
    assert code == 0                                                  # ctr soak's exit status
