"""`ctr bench [--quick]`: the whole system measured side by side, in one process session
(so ratios compare figures taken under the same load), written as one results file.

Sections, in the order they run (each its own module in this package):

* **sizes**: unzipped code + layers of each function against Lambda's 250 MB.
* **training**: this trainer against the seed's recipe on known-truth synthetic rows,
  with the Bayes-optimal and constant-prior bounds. It runs before the data section
  because its peak RSS is the process's peak so far.
* **data**: chunk and aggregate throughput on a 10-chunk synthetic file against
  `gzip -dc` and `pyarrow.csv.read_csv` on the same bytes, and the cost of a late
  chunk against the seed's re-read-from-line-0 method.
* **monitoring**: the monitor step's cost per 1M fresh rows (Parquet decode, two models
  scored, quality figures, the paired comparison, drift of 39 features).
* **pipeline**: one Step Functions execution on N new lines on the local cloud, wall
  time per state from the execution history.
* **serving**: in-process, uvicorn, API Gateway -> Lambda and `mlflow models serve`
  under one load generator, and the predict function's cold start.
* **batch**: batch scoring of a synthetic file by the scoring state machine, against
  one core scoring the same lines in-process.

A failing section is recorded with its error and the others still run; the cloud
(`ctr_infra.bench.cloud`) is started only if a cloud section is chosen.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ctr.clock import iso_now
from ctr_infra import localcloud
from ctr_infra.bench import pipeline
from ctr_infra.bench.cloud import BenchCloud, existing_cloud, private_cloud, started_early
from ctr_infra.bench.plan import FULL, Echo, Plan
from ctr_infra.bench.report import SectionResult, json_safe
from ctr_infra.localcloud import CloudConfig, CloudError

SCHEMA = "ctr-bench/1"
SECTIONS = ("sizes", "training", "data", "monitoring", "pipeline", "serving", "batch", "scale")
CLOUD_SECTIONS = frozenset({"pipeline", "serving", "batch", "scale"})
DEFAULT_OUTPUT_DIR = localcloud.REPO_ROOT / ".local" / "bench"


# --------------------------------------------------------------------------- machine

def _first_line_with(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line
    return None


def machine() -> dict[str, Any]:
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal")
    os_name = _first_line_with("/etc/os-release", "PRETTY_NAME=")
    return {
        "cpu_model": _first_line_with("/proc/cpuinfo", "model name") or platform.processor()
        or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None,
        "os": ((os_name.split("=", 1)[1].strip('"') if os_name else platform.system())
               + f" (kernel {platform.release()})"),
        "python": platform.python_version(),
        "date": iso_now(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _offline(module: str) -> Callable[[Plan, Echo], SectionResult]:
    """The `section` of ctr_infra.bench.<module>, imported when it runs (the sections
    import XGBoost, pyarrow, ...; the `ctr` command line must start without them)."""
    def section(plan: Plan, echo: Echo) -> SectionResult:
        result: SectionResult = importlib.import_module(
            f"ctr_infra.bench.{module}").section(plan, echo)
        return result
    return section


OFFLINE_SECTIONS: dict[str, Callable[[Plan, Echo], SectionResult]] = {
    "sizes": _offline("sizes"), "training": _offline("train"), "data": _offline("data"),
    "monitoring": _offline("monitor")}


def run(plan: Plan = FULL, only: tuple[str, ...] = SECTIONS,
        existing: CloudConfig | None = None, echo: Echo = print) -> dict[str, Any]:
    """Run the selected sections in order; a failing section is recorded with its error
    and the others still run. Returns the results document (see `figure`)."""
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    started = time.monotonic()
    results: dict[str, Any] = {"schema": SCHEMA, "mode": plan.mode, "machine": machine(),
                               "plan": asdict(plan), "cloud": None, "sections": {}}
    figures_so_far: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ctr-bench-")))
        cloud: BenchCloud | None = None
        cloud_error: str | None = None
        cloud_cm = (None if not set(only) & CLOUD_SECTIONS else
                    existing_cloud(existing) if existing else private_cloud(echo))
        early = (stack.enter_context(started_early(cloud_cm))
                 if cloud_cm is not None and existing is None and plan.start_cloud_early
                 else None)
        for name in SECTIONS:
            if name not in only:
                results["sections"][name] = {"status": "skipped", "seconds": 0.0,
                                             "figures": [], "raw": None, "error": None}
                continue
            echo(f"\n=== {name} ({plan.mode}) at {time.monotonic() - started:.0f}s")
            t0 = time.monotonic()
            try:
                if name in CLOUD_SECTIONS:
                    if cloud is None and cloud_error is None and cloud_cm is not None:
                        try:
                            cloud = early() if early else stack.enter_context(cloud_cm)
                            results["cloud"] = cloud.describe()
                        except Exception as err:
                            cloud_error = f"{type(err).__name__}: {err}"
                    if cloud is None:
                        raise CloudError(f"no local cloud: {cloud_error}")
                    if name == "pipeline":
                        figures, raw = pipeline.section(plan, cloud, workdir, echo,
                                                        figures_so_far)
                    elif name == "scale":
                        from ctr_infra.bench import scale

                        figures, raw = scale.section(plan, cloud, workdir, echo,
                                                     figures_so_far)
                    elif name == "batch":
                        from ctr_infra.bench import batch

                        figures, raw = batch.section(plan, cloud, workdir, echo,
                                                     prepare_model="pipeline" not in only)
                    else:
                        from ctr_infra.bench import serve

                        figures, raw = serve.section(plan, cloud, workdir, echo,
                                                     prepare_model="pipeline" not in only)
                else:
                    figures, raw = OFFLINE_SECTIONS[name](plan, echo)
                entry: dict[str, Any] = {"status": "ok", "figures": figures, "raw": raw,
                                         "error": None}
                figures_so_far += figures
            except Exception as err:   # recorded; the other sections still run
                message = getattr(err, "message", None) or str(err)
                echo(f"!!! {name} failed: {type(err).__name__}: {message}")
                if cloud is not None and name in CLOUD_SECTIONS:
                    cloud.keep_state = True
                entry = {"status": "error", "figures": [], "raw": None,
                         "error": f"{type(err).__name__}: {message}"}
            entry["seconds"] = time.monotonic() - t0
            results["sections"][name] = entry
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = time.monotonic() - started
    return dict(json_safe(results))
