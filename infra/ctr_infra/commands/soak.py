"""`ctr soak --minutes N`: the soak harness on a private local cloud (ctr_infra.soak)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctr_infra.localcloud import REPO_ROOT
from ctr_infra.soak.harness import FAULT_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="leave the system alone for N minutes on a private "
                                    "local cloud with data, faults and traffic; check it")
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO_ROOT / ".local" / "soak",
                   help="directory of the JSON report (default .local/soak/)")
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help=f"fault kinds to inject, comma-separated, '' for none "
                        f"(default: all of {', '.join(FAULT_KINDS)})")
    p.add_argument("--max-lines", type=int, default=1_000_000,
                   help="largest file the feeder drops (lines)")
    p.add_argument("--feed-every", default="45,120", metavar="MIN,MAX",
                   help="seconds between two files, drawn uniformly (default 45,120)")
    p.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    from ctr_infra.soak.harness import run_soak

    kinds = tuple(k for k in args.faults.split(",") if k)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise SystemExit(f"unknown fault kinds: {sorted(unknown)}")
    try:
        low, high = (float(x) for x in args.feed_every.split(","))
    except ValueError:
        raise SystemExit(f"--feed-every wants MIN,MAX seconds, got {args.feed_every!r}") from None
    rep = run_soak(args.minutes, args.seed, args.out, faults=kinds, max_lines=args.max_lines,
                   feed_every_s=(low, high))
    return 0 if rep["ok"] else 1
