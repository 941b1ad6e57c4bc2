"""The sizes section: each function's unzipped code + layers against Lambda's 250 MB, as
figures. The measuring itself is `ctr_infra.sizes`, the packaging check that the unit
tests also run; this module only turns its report into figures."""

from __future__ import annotations

from ctr_infra import sizes
from ctr_infra.bench.plan import Echo, Plan
from ctr_infra.bench.report import SectionResult, figure


def section(plan: Plan, echo: Echo) -> SectionResult:
    report = sizes.measure(probe=plan.sizes_probe)
    figures = []
    for name, f in report["functions"].items():
        probe = f["isolated_import"]
        checked = ("isolated import: `python -m ctr_infra.sizes`" if probe is None else
                   "isolated import ok" if probe["ok"] else f"isolated import FAILED {probe}")
        figures.append(figure(
            f"sizes.{name}.total_mb", f"{name}: code + layers, unzipped", f["total_mb"], "MB",
            better="lower", baseline=("Lambda zip limit", report["limit_mb"]),
            note=f"{f['layer']}; {'fits' if f['fits'] else 'does NOT fit'}; {checked}"))
    echo(sizes.to_markdown(report))
    return figures, report
