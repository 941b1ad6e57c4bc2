"""How big and how often `ctr bench` measures: the full plan and the quick one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

# A section's progress output (print by default; tests pass a sink).
Echo = Callable[[str], None]
# The baseline of every peak-memory figure.
LAMBDA_MAX_MEMORY_MB = 10_240.0


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one bench run."""

    mode: str
    data_chunk_lines: int = 200_000
    data_chunks: int = 10
    data_repeats: int = 3
    train_rows: int = 2_000_000
    # XGBoost threads, the same for both trainers (0 = all cores). One: on a shared
    # 2-core machine all-core OpenMP was measured 8x slower (10,000 rows), which would
    # make the figure measure the neighbours; the ratio to the seed is per core.
    train_nthread: int = 1
    # Streamed against in-memory trainer (ctr_infra.bench.train_scale): window sizes,
    # and runs of each trainer per size (a child process each, for its peak RSS).
    train_scale_rows: tuple[int, ...] = (1_000_000,)
    train_scale_repeats: int = 3
    monitor_rows: int = 1_000_000
    monitor_train_rows: int = 200_000
    pipeline_lines: int = 1_000_000
    pipeline_timeout_s: float = 1800.0
    serve_requests: int = 2000
    serve_api_requests: int = 300
    serve_concurrency: int = 4
    # None: ctr_infra.bench.serve's own defaults (rows per HTTP request; load rounds)
    serve_http_rows: tuple[int, ...] | None = None
    serve_rounds: int | None = None
    cold_starts: int = 5
    batch_rows: int = 2_000_000      # batch scoring input (bench section `batch`)
    # Bench section `scale`: lines of one gzip file through one execution each (the
    # whole Criteo file: `ctr bench --only scale --scale-lines 45840617`); chunk size
    # None = the deployed ChunkLines.
    scale_lines: tuple[int, ...] = (5_000_000,)
    scale_chunk_lines: int | None = None
    scale_timeout_s: float = 4 * 3600.0
    warm_invokes: int = 30
    # The isolated-import check of `python -m ctr_infra.sizes` (sufficiency, not size):
    # 16 s on an idle machine, 4 minutes on a loaded one; off by default.
    sizes_probe: bool = False
    # Start a private cloud in the background while the offline sections run (saves its
    # ~1 minute; their figures are then taken beside its start, so quick only).
    start_cloud_early: bool = False


FULL = Plan(mode="full")
QUICK = replace(FULL, mode="quick", data_chunk_lines=2_000, data_repeats=2,
                train_rows=10_000, train_scale_rows=(20_000,), train_scale_repeats=1,
                monitor_rows=20_000,
                monitor_train_rows=20_000, pipeline_lines=20_000,
                pipeline_timeout_s=600.0, serve_requests=200, serve_api_requests=40,
                serve_http_rows=(1, 100), serve_rounds=1, cold_starts=2, warm_invokes=10,
                batch_rows=60_000, scale_lines=(60_000,), scale_chunk_lines=15_000,
                scale_timeout_s=900.0,
                start_cloud_early=True)
