"""The HTTP load generator: N POSTs at fixed concurrency from a second process, so it
never shares a GIL with a server in the bench process, and several targets taking turns
under it so a change in what else the machine runs hits every target alike.

The child is `python -m ctr_infra.bench.loadgen` with its job as JSON on stdin.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctr_infra.bench.report import summarize
from ctr_infra.net import LOCALHOST


def loadgen(url: str, body: bytes, requests: int, concurrency: int, warmup: int,
            timeout: float) -> dict[str, Any]:
    """Run in the child process: `requests` POSTs of `body` from `concurrency` threads,
    each with its own keep-alive connection, after `warmup` unmeasured ones.

    The client is the standard library's `http.client`: it costs about a third of the
    CPU per request that httpx does (measured), so the generator saturates later. Its own
    CPU time is reported (`client_cpu_share`: CPU seconds per wall second, at most ~1
    for one process): near 1, the generator, not the server, set the rate.
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"content-type": "application/json"}
    tickets = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            # Headers and body go out in two writes: without this, Nagle's algorithm
            # can hold the body back until the server's (delayed) ACK of the headers.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def worker(limit: int, record: bool) -> None:
        # Reconnects by itself after a close; a failed request drops the connection.
        conn = Connection(parts.hostname or LOCALHOST, parts.port, timeout=timeout)
        try:
            while next(tickets) < limit:
                t0 = time.perf_counter()
                try:
                    conn.request("POST", path, body, headers)
                    response = conn.getresponse()
                    response.read()
                    ok, why = response.status == 200, f"HTTP {response.status}"
                except (OSError, http.client.HTTPException) as err:
                    ok, why = False, type(err).__name__
                    conn.close()
                elapsed = time.perf_counter() - t0
                if record:
                    with lock:
                        (latencies.append(elapsed) if ok else errors.append(why))
        finally:
            conn.close()

    def run(limit: int, record: bool) -> float:
        nonlocal tickets
        tickets = itertools.count()
        threads = [threading.Thread(target=worker, args=(limit, record))
                   for _ in range(concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    run(warmup, record=False)
    cpu0 = time.process_time()
    wall = run(requests, record=True)
    cpu = time.process_time() - cpu0
    return {"latencies": latencies, "errors": errors, "seconds": wall, "client_cpu": cpu,
            "requests": requests, "concurrency": concurrency}


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several `run_loadgen` results for the same target."""
    latencies = [x for r in runs for x in r["latencies"]]
    errors = [e for r in runs for e in r["errors"]]
    wall, requests = sum(r["seconds"] for r in runs), sum(r["requests"] for r in runs)
    client_cpu = sum(r["client_cpu"] for r in runs)
    stats = summarize(latencies) if latencies else {"n": 0}
    merged = {**stats, "requests": requests, "concurrency": runs[0]["concurrency"],
              "errors": len(errors), "error_samples": sorted(set(errors))[:3],
              "seconds": wall, "rps": len(latencies) / wall if wall else 0.0,
              "client_cpu_share": client_cpu / wall if wall else 0.0,
              "client_cpu_us_per_request": client_cpu / requests * 1e6}
    if all("server_cpu" in r for r in runs):
        sent = sum(r["requests"] + r["warmup"] for r in runs)
        merged["server_cpu_ms_per_request"] = sum(r["server_cpu"] for r in runs) / sent * 1e3
    return merged


def run_loadgen(url: str, body: dict[str, Any], requests: int, concurrency: int,
                warmup: int | None = None, timeout: float = 60.0,
                server_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """The load generator in a second process, so it never shares a GIL with a server.
    `server_cpu` (CPU seconds of the server so far) adds the server's CPU time per
    request (warm-up included) -- what a request costs, whatever else the machine runs."""
    warmup = warmup or max(100, 2 * concurrency)
    job = {"url": url, "body": json.dumps(body), "requests": requests,
           "concurrency": concurrency, "warmup": warmup, "timeout": timeout}
    cpu0 = server_cpu() if server_cpu else 0.0
    done = subprocess.run([sys.executable, "-m", "ctr_infra.bench.loadgen"],
                          input=json.dumps(job), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result = dict(json.loads(done.stdout))
    result["warmup"] = warmup
    if server_cpu:
        result["server_cpu"] = server_cpu() - cpu0
    return result


Target = tuple[str, dict[str, Any], Callable[[], float] | None]   # url, body, server CPU


def take_turns(targets: dict[str, Target], requests: dict[str, int], concurrency: int,
               rounds: int) -> dict[str, dict[str, Any]]:
    """Each target gets its requests in `rounds` slices, the targets taking turns (A B C,
    C B A, A B C, ...), so a change in what else the machine runs during the benchmark
    hits every target alike. Only the first slice of each target has a long warm-up."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for i in range(rounds):
        for name in (list(targets) if i % 2 == 0 else list(reversed(targets))):
            url, body, server_cpu = targets[name]
            runs[name].append(run_loadgen(
                url, body, max(1, requests[name] // rounds), concurrency,
                warmup=None if i == 0 else 2 * concurrency, server_cpu=server_cpu))
    return {name: merge_runs(r) for name, r in runs.items()}


def process_group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) so far of the live processes in group `pgid` (/proc)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                      # the process ended meanwhile
        if int(fields[2]) == pgid:        # fields 5 (pgrp), 14 (utime), 15 (stime)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def main() -> int:
    """The child process of `run_loadgen`: the job on stdin, the result on stdout."""
    job = json.loads(sys.stdin.read())
    print(json.dumps(loadgen(job["url"], job["body"].encode(), job["requests"],
                             job["concurrency"], job["warmup"], job["timeout"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
