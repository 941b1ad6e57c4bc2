"""What every bench section shares: timing a call, turning timings into figures of one
stable shape, and writing tables and the results files.

A figure (see `figure`) carries its value and unit, the number of samples and their
spread, the baseline it is compared with (in the same unit) and ratio = value /
baseline, so that every number in the results file says what it should be read against.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

Figure = dict[str, Any]
# What a section returns: its figures and its raw measurements (kept in the results file).
SectionResult = tuple[list[Figure], dict[str, Any]]


# --------------------------------------------------------------------------- timing

def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """(fn's value, wall seconds it took)."""
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def rate(amount: float, seconds: float) -> float:
    """amount / seconds; NaN for a timing of zero."""
    return amount / seconds if seconds > 0 else float("nan")


def rates(amount: float, seconds: list[float]) -> list[float]:
    """amount / s for every timing s > 0."""
    return [amount / s for s in seconds if s > 0]


def summarize(seconds: list[float]) -> dict[str, float]:
    """n, p50, p99 and mean of latencies, in milliseconds."""
    import numpy as np

    ms = np.asarray(seconds) * 1e3
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 20) -> dict[str, float]:
    """Wall-clock p50/p99 of `fn`, plus the thread's CPU time per call (`cpu_*`): on a
    busy machine the wall p99 is mostly time spent waiting for a core, the CPU time is
    the work itself."""
    import numpy as np

    for _ in range(warmup):
        fn()
    samples, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    cpu_ms = np.asarray(cpu) * 1e3
    return {**summarize(samples), "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),
            "cpu_p99_ms": float(np.percentile(cpu_ms, 99))}


# --------------------------------------------------------------------------- figures

def figure(fid: str, name: str, value: float, unit: str, *, better: str, n: int = 1,
           spread: dict[str, Any] | None = None,
           baseline: tuple[str, float] | None = None, note: str = "") -> Figure:
    """One measured figure. `baseline` is (what, value in the same unit); ratio is
    value / baseline. `better` says which direction is good: "lower" or "higher"."""
    base, ratio = None, None
    if baseline is not None:
        base = {"name": baseline[0], "value": float(baseline[1]), "unit": unit}
        ratio = float(value) / float(baseline[1]) if baseline[1] else None
    return {"id": fid, "name": name, "value": float(value), "unit": unit, "n": int(n),
            "spread": spread, "baseline": base, "ratio": ratio, "better": better,
            "note": note}


def min_max(values: list[float]) -> dict[str, Any]:
    return {"kind": "min-max", "low": float(min(values)), "high": float(max(values))}


def rate_figure(fid: str, name: str, amount: float, unit: str, seconds: list[float], *,
                baseline: tuple[str, list[float]] | None = None, note: str = "") -> Figure:
    """amount/s over repeated timings: the median rate, min-max spread; the baseline's
    rate is the median over its own timings of the same amount."""
    ours = rates(amount, seconds)
    base = None if baseline is None else (baseline[0],
                                          statistics.median(rates(amount, baseline[1])))
    return figure(fid, name, statistics.median(ours), unit, better="higher", n=len(ours),
                  spread=min_max(ours) if len(ours) > 1 else None, baseline=base, note=note)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# --------------------------------------------------------------------------- tables

def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table; cells are written as given (str())."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def fmt(value: float | None) -> str:
    """A figure's value with as many digits as its magnitude deserves."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _spread_text(spread: dict[str, Any] | None) -> str:
    if not spread:
        return "-"
    return f"{fmt(spread['low'])}-{fmt(spread['high'])} ({spread['kind']})"


def to_markdown(results: dict[str, Any]) -> str:
    """The results document as results.md: one line on the machine, one table row per
    figure, then the failures and the figures' notes."""
    m = results["machine"]
    cloud = results.get("cloud") or {}
    head = (f"`ctr bench` ({results['mode']}), {m['date']}: {fmt(results['wall_s'] / 60)} min; "
            f"{m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
            f"Python {m['python']}; load average {m['load_average'][0]} at start, "
            f"{m['load_average_end'][0]} at the end"
            + (f"; {'private' if cloud.get('private') else 'existing'} local cloud "
               f"(ready in {fmt(cloud['startup_s'])} s)" if cloud else ""))
    rows = []
    failures = []
    notes: dict[tuple[str, str], list[str]] = {}     # (section, note) -> figure names
    for section, entry in results["sections"].items():
        if entry["status"] != "ok":
            if entry["status"] == "error":
                failures.append(f"- **{section} failed**: {entry['error']}")
            continue
        for f in entry["figures"]:
            base = f["baseline"]
            rows.append((section, f["name"], f"{fmt(f['value'])} {f['unit']}",
                         _spread_text(f["spread"]), f["n"], base["name"] if base else "-",
                         fmt(base["value"]) + " " + f["unit"] if base else "-",
                         fmt(f["ratio"]) + "x" if f["ratio"] is not None else "-"))
            if f["note"]:
                notes.setdefault((section, f["note"]), []).append(f["name"])
    lines = [head, "", *markdown_table(("section", "figure", "value", "spread", "n",
                                        "baseline", "baseline value", "ratio"), rows)]
    if failures or notes:
        lines += ["", "Notes:", *failures]
    for (section, note), names in notes.items():
        which = "; ".join(names) if len(names) <= 2 else f"{len(names)} figures"
        lines.append(f"- {section} ({which}): {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files

def json_safe(value: Any) -> Any:
    """Finite floats only (NaN/inf become None) and str for what JSON cannot hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def write(results: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """results.json (+ a timestamped copy) and results.md in `output_dir`; each file is
    written whole (temp file + rename), so a reader never sees half a file."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(results["machine"]["date"]).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2) + "\n"
    paths = {"json": output_dir / "results.json",
             "copy": output_dir / f"results-{stamp}-{results['mode']}.json",
             "markdown": output_dir / "results.md"}
    for key, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(to_markdown(results) + "\n" if key == "markdown" else text)
        tmp.replace(path)
    return paths
