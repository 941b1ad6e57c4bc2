"""`ctr bench [--quick] [--output DIR] [--only SECTION ...] [--existing-cloud]
[--scale-lines N ...]`: measure
the whole system side by side (`ctr_infra.bench.runner`) and write the results."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ctr_infra.bench import report, runner
from ctr_infra.bench.plan import FULL, QUICK
from ctr_infra.localcloud import CloudConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the whole system side by side; writes "
                                     ".local/bench/results.json and results.md")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and fewer repetitions (under 3 minutes; for checking "
                        "that the bench works, not for figures)")
    p.add_argument("--output", type=Path, default=runner.DEFAULT_OUTPUT_DIR, metavar="DIR",
                   help="directory for results.json, a timestamped copy and results.md "
                        "(default: .local/bench)")
    p.add_argument("--only", nargs="+", choices=runner.SECTIONS, metavar="SECTION",
                   help=f"run only these sections ({', '.join(runner.SECTIONS)})")
    p.add_argument("--existing-cloud", action="store_true",
                   help="measure on the running local cloud (CTR_STATE_DIR, CTR_*_PORT, "
                        "CTR_STACK_NAME) instead of a private one; refused unless its "
                        "bucket and model registry are empty")
    p.add_argument("--scale-lines", type=int, nargs="+", metavar="N",
                   help="lines of each run of the scale section (default 5,000,000; "
                        "45840617 is the whole Criteo file)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.scale_lines:
        if min(args.scale_lines) < 1:
            print("error: --scale-lines must be positive", file=sys.stderr)
            return 2
        plan = replace(plan, scale_lines=tuple(args.scale_lines))
    results = runner.run(plan, tuple(args.only or runner.SECTIONS),
                        existing=CloudConfig() if args.existing_cloud else None)
    paths = report.write(results, args.output)
    print()
    print(report.to_markdown(results))
    print(f"\nwritten: {paths['json']} (copy {paths['copy'].name}), {paths['markdown']}")
    failed = [name for name, entry in results["sections"].items()
              if entry["status"] == "error"]
    if failed:
        print(f"error: section(s) failed: {', '.join(failed)} (see above and "
              f"{paths['json']})", file=sys.stderr)
        return 1
    return 0
