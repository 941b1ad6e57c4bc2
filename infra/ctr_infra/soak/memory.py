"""The warm train environment's idle memory, measured: fits in one process as a warm
environment runs them, the RSS after each with and without
`ctr.function.release_memory` (docs/design.md, "Idle Lambda environments").

    python -m ctr_infra.soak.memory --rows 1000000 --runs 2
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import replace


def rss_mb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


def main(argv: list[str] | None = None) -> int:
    from ctr import synth
    from ctr.function import release_memory
    from ctr.training import TrainParams, fit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=50)
    args = p.parse_args(argv)
    print(f"start {rss_mb()} MB, load {os.getloadavg()}", flush=True)
    for run in range(args.runs):
        table, _ = synth.generate_table(args.rows, seed=run)
        n = table.num_rows
        parts = (table.slice(0, int(n * .8)), table.slice(int(n * .8), int(n * .1)),
                 table.slice(int(n * .9)))
        started = time.time()
        result = fit(*parts, replace(TrainParams(), num_boost_round=args.rounds))
        del result, table, parts
        gc.collect()
        idle = rss_mb()
        after = release_memory()
        print(f"fit {run}: {time.time() - started:.0f}s, idle RSS {idle} MB without "
              f"release_memory, {after} MB with it", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
