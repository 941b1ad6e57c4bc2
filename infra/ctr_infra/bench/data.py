"""Data-plane benchmark (`ctr data bench`): one synthetic file of `chunks` x `chunk_lines`
lines, measured in one process so the figures are comparable:

* synth: rows/s and MB/s of `ctr.synth.write_tsv`;
* chunk: every run of `ctr.chunking.cut_chunk` until exhausted -- throughput and the
  time of the first vs the last chunk (the cursor makes runs O(chunk): target last <=
  1.2 x first);
* the seed's method for contrast: re-read the object from line 0 and skip to the
  chunk's first line (first and last chunk only; it is O(position));
* aggregate: `ctr.aggregate.aggregate` over all chunks (parse, validate, Parquet, rejects)
  next to plain `pyarrow.csv.read_csv` of the same chunks typed with the record's schema
  (`PARQUET_SCHEMA`: integers, hex text) -- target: aggregate >= 0.8x of it, the ratio
  taken per repeat (the two alternate) and quoted as median, min-max and the load
  average -- and read_csv with default options;
* part format: Parquet bytes per row of the parts (format 2, uint32 categoricals) and of
  the same rows in format 1 (hex text, the options the aggregate step used before);
  reading a part of either format, and `FeatureTransform.encode` of its rows;
* gzip: `gzip -dc` of the gzipped file next to the chunker's one-time transcode of it.

By default the store is in-memory (`ctr_infra.memory_s3.MemoryS3`), which isolates the
code's cost from network and emulator overhead; pass a `Store` of an empty bucket to
measure against real S3.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ctr import aggregate, chunking, criteo, ingest, layout, synth
from ctr.features import FeatureTransform
from ctr.schema import ALL_COLUMNS, INT_COLUMNS, LABEL, PARQUET_SCHEMA, read_part, to_record
from ctr.steps import AggregateResult
from ctr.storage import Store
from ctr_infra.bench.plan import Echo, Plan
from ctr_infra.bench.report import (
    SectionResult,
    figure,
    min_max,
    rate,
    rate_figure,
    rates,
    timed,
)
from ctr_infra.memory_s3 import MemoryS3

MB = 1e6


def seed_style_chunk(store: Store, key: str, index: int, chunk_lines: int) -> int:
    """The seed's produce_chunk: stream the object from the start, skip index x chunk_lines
    lines, keep the next chunk_lines. Returns the bytes kept."""
    body = store.s3.get_object(Bucket=store.bucket, Key=key)["Body"]
    # botocore's StreamingBody iterates fixed-size chunks; in-memory bodies iterate lines
    lines = (body.iter_lines(chunk_size=1 << 20, keepends=True)
             if hasattr(body, "iter_lines") else iter(body))
    start = index * chunk_lines
    kept = 0
    for number, line in enumerate(lines):
        if number >= start + chunk_lines:
            break
        if number >= start:
            kept += len(line)
    return kept


def _empty_check(store: Store) -> None:
    for prefix in ("raw/", "chunks/", "parquet/", chunking.CURSOR_KEY):
        if next(iter(store.list_keys(prefix)), None) is not None:
            raise SystemExit(f"bench needs an empty bucket; s3://{store.bucket}/{prefix} exists")


def _read_csv_typed(data: bytes) -> pa.Table:
    return pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=list(ALL_COLUMNS)),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pa_csv.ConvertOptions(column_types=PARQUET_SCHEMA, null_values=[""],
                                              strings_can_be_null=True))


def _read_csv_default(data: bytes) -> pa.Table:
    return pa_csv.read_csv(pa.py_buffer(data),
                           read_options=pa_csv.ReadOptions(column_names=list(ALL_COLUMNS)),
                           parse_options=pa_csv.ParseOptions(delimiter="\t"))


V1_OPTIONS: dict[str, Any] = {"compression": "none", "write_statistics": [LABEL, *INT_COLUMNS]}


def convert_like_format_1(bodies: list[bytes]) -> int:
    """What the aggregate step did per chunk before format 2, without the store:
    `parse_tsv` (hex text) and a Parquet part with the format-1 options. Bytes out."""
    total = 0
    for body in bodies:
        sink = pa.BufferOutputStream()
        pq.write_table(criteo.parse_tsv(body).table, sink, **V1_OPTIONS)
        total += len(sink.getvalue().to_pybytes())
    return total


def convert_like_format_2(bodies: list[bytes]) -> int:
    """The same for format 2 (`parse_part`, `aggregate.parquet_bytes`), sequential."""
    return sum(len(aggregate.parquet_bytes(criteo.parse_part(body).table)) for body in bodies)


def part_format(store: Store, chunks: int, repeats: int) -> dict[str, Any]:
    """Bytes per row of the parts (format 2) and of the same rows written in format 1
    (hex text, as the aggregate step wrote parts before); read and encode times of the
    first part in both formats (medians of `repeats`)."""
    rows = 0
    size = {1: 0, 2: 0}
    data: dict[int, bytes] = {}
    for i in range(chunks):
        v2 = store.get(layout.parquet_key(i)).body
        sink = pa.BufferOutputStream()
        record = to_record(read_part(v2))
        pq.write_table(record, sink, **V1_OPTIONS)
        v1 = sink.getvalue().to_pybytes()
        rows += record.num_rows
        size[1] += len(v1)
        size[2] += len(v2)
        if i == 0:
            data = {1: v1, 2: v2}
    first = read_part(data[2])
    transform = FeatureTransform.fit(first)
    tables = {1: pq.read_table(pa.BufferReader(data[1])), 2: first}
    for v in (1, 2):                       # warm-up: neither format pays first-call costs
        transform.encode(tables[v])
        read_part(data[v])
    read = {v: statistics.median(timed(read_part, data[v])[1] for _ in range(repeats))
            for v in (1, 2)}
    encode = {v: statistics.median(timed(transform.encode, tables[v])[1]
                                   for _ in range(repeats)) for v in (1, 2)}
    return {"rows": rows, "bytes_per_row": {f"v{v}": size[v] / rows for v in (1, 2)},
            "first_part_rows": first.num_rows,
            "read_part_s": {f"v{v}": read[v] for v in (1, 2)},
            "encode_s": {f"v{v}": encode[v] for v in (1, 2)}}


def run(chunk_lines: int = 200_000, chunks: int = 10, seed: int = 0,
        workdir: str | None = None, store: Store | None = None,
        repeats: int = 2) -> dict[str, Any]:
    rows = chunk_lines * chunks
    own_dir = workdir is None
    directory = Path(workdir or tempfile.mkdtemp(prefix="ctr-bench-"))
    results: dict[str, Any] = {"chunk_lines": chunk_lines, "chunks": chunks, "rows": rows,
                               "repeats": repeats,
                               "store": "in-memory" if store is None else f"s3://{store.bucket}"}
    try:
        path = directory / "bench.txt"
        info, seconds = timed(synth.write_tsv, path, rows, seed, progress=True, sidecar=False)
        size = int(info["bytes"])
        results["file_mb"] = size / MB
        results["synth"] = {"seconds": seconds, "rows_per_s": rate(rows, seconds),
                            "mb_per_s": rate(size / MB, seconds)}

        store = store or Store(MemoryS3(), "bench")
        _empty_check(store)
        raw_key = ingest.put(store, str(path))["key"]

        times: list[float] = []
        chunk_bytes: list[int] = []
        while True:
            result, seconds = timed(chunking.cut_chunk, store, chunk_lines)
            if result.status == "exhausted":
                break
            times.append(seconds)
            chunk_bytes.append(result.bytes)
        results["chunk"] = {"runs": len(times), "seconds": sum(times),
                            "mb_per_s": rate(sum(chunk_bytes) / MB, sum(times)),
                            "lines_per_s": rate(rows, sum(times)),
                            "first_s": times[0], "last_s": times[-1],
                            "last_over_first": times[-1] / times[0],
                            # robust to one noisy run: medians of the first/second half
                            "median_first_half_s": statistics.median(times[:len(times) // 2]),
                            "median_second_half_s": statistics.median(
                                times[len(times) // 2:]),
                            "per_chunk_s": [round(t, 4) for t in times],
                            "per_chunk_bytes": chunk_bytes}

        # first_s/last_s: medians of `repeats` runs (all runs kept for the spread)
        seed_runs: dict[str, list[float]] = {"first": [], "last": []}
        for _ in range(repeats):
            for which, index in (("first", 0), ("last", chunks - 1)):
                seed_runs[which].append(
                    timed(seed_style_chunk, store, raw_key, index, chunk_lines)[1])
        seed_first, seed_last = (statistics.median(seed_runs[k]) for k in ("first", "last"))
        results["seed_method"] = {"first_s": seed_first, "last_s": seed_last,
                                  "last_over_first": seed_last / seed_first,
                                  "first_runs_s": seed_runs["first"],
                                  "last_runs_s": seed_runs["last"]}

        # Parse and aggregate timings alternate, best of `repeats`, so that a burst of
        # load on a shared machine does not favour one side of the comparison. CPU time
        # (all threads of this process) is recorded too: it is what contention inflates
        # least.
        timings: dict[str, list[float]] = {k: [] for k in ("typed", "default", "ours", "agg",
                                                           "v1_seq", "v2_seq")}
        cpu: dict[str, list[float]] = {"typed": [], "agg": []}
        loads: list[float] = []
        summary: AggregateResult | None = None
        for _ in range(repeats):
            loads.append(os.getloadavg()[0])
            for prefix in (layout.PARQUET_PREFIX, layout.REJECTS_PREFIX):
                for key in list(store.list_keys(prefix)):
                    store.delete(key)
            cpu_start = time.process_time()
            summary, agg_s = timed(aggregate.aggregate, store)
            cpu["agg"].append(time.process_time() - cpu_start)
            timings["agg"].append(agg_s)
            bodies = [store.get(layout.chunk_key(i)).body for i in range(chunks)]
            cpu_start = time.process_time()
            timings["typed"].append(sum(timed(_read_csv_typed, b)[1] for b in bodies))
            cpu["typed"].append(time.process_time() - cpu_start)
            timings["default"].append(sum(timed(_read_csv_default, b)[1] for b in bodies))
            timings["ours"].append(sum(timed(criteo.parse_tsv, b)[1] for b in bodies))
            # before/after in the same repeat: both formats' conversion, sequential
            timings["v1_seq"].append(timed(convert_like_format_1, bodies)[1])
            timings["v2_seq"].append(timed(convert_like_format_2, bodies)[1])
            del bodies
        parse_s, default_s, ours_s, agg_s = (min(timings[k])
                                             for k in ("typed", "default", "ours", "agg"))
        results["parse_read_csv_typed"] = {"seconds": parse_s,
                                           "mb_per_s": rate(size / MB, parse_s),
                                           "lines_per_s": rate(rows, parse_s)}
        results["parse_read_csv_default"] = {"seconds": default_s,
                                             "mb_per_s": rate(size / MB, default_s),
                                             "lines_per_s": rate(rows, default_s)}
        results["parse_ctr_criteo"] = {"seconds": ours_s, "mb_per_s": rate(size / MB, ours_s),
                                       "lines_per_s": rate(rows, ours_s)}
        assert summary is not None                       # repeats >= 1
        results["aggregate"] = {"seconds": agg_s, "mb_per_s": rate(size / MB, agg_s),
                                "lines_per_s": rate(rows, agg_s),
                                "rows_out": summary.rows_out,
                                "rows_rejected": summary.rows_rejected,
                                "share_of_read_csv": parse_s / agg_s,
                                "share_of_read_csv_cpu": min(cpu["typed"]) / min(cpu["agg"]),
                                # per repeat: read_csv seconds / aggregate seconds
                                "ratios": [t / a for t, a in zip(timings["typed"],
                                                                 timings["agg"], strict=True)],
                                "cpu_ratios": [t / a for t, a in zip(cpu["typed"], cpu["agg"],
                                                                     strict=True)],
                                "load_1min": loads,
                                "v1_seq_ratios": [t / a for t, a in zip(
                                    timings["typed"], timings["v1_seq"], strict=True)],
                                "v2_seq_ratios": [t / a for t, a in zip(
                                    timings["typed"], timings["v2_seq"], strict=True)],
                                "timings_s": {k: [round(t, 3) for t in v]
                                              for k, v in timings.items()}}

        results["part_format"] = part_format(store, chunks, repeats)

        gz_path = directory / "bench.txt.gz"
        with gz_path.open("wb") as out:
            _, gzip_s = timed(subprocess.run, ["gzip", "-1", "-c", str(path)], stdout=out,
                               check=True)
        gunzip_runs = [timed(subprocess.run, ["gzip", "-dc", str(gz_path)],
                              stdout=subprocess.DEVNULL, check=True)[1]
                       for _ in range(repeats)]
        gunzip_s = statistics.median(gunzip_runs)
        gz_store = Store(MemoryS3(), "bench-gz")
        ingest.put(gz_store, str(gz_path))
        first, first_s = timed(chunking.cut_chunk, gz_store, chunk_lines)
        _, second_s = timed(chunking.cut_chunk, gz_store, chunk_lines)
        results["gzip"] = {"gz_mb": gz_path.stat().st_size / MB, "gzip_1_s": gzip_s,
                           "gzip_dc_s": gunzip_s, "gzip_dc_mb_per_s": rate(size / MB, gunzip_s),
                           "gzip_dc_runs_s": gunzip_runs,
                           "transcode_s": first.transcoded.seconds,
                           "transcode_mb_per_s": rate(size / MB,
                                                       first.transcoded.seconds),
                           "first_chunk_incl_transcode_s": first_s,
                           "second_chunk_s": second_s}
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
    return results


def format_table(r: dict[str, Any]) -> str:
    c, a, s = r["chunk"], r["aggregate"], r["seed_method"]
    p, d, o, g = (r["parse_read_csv_typed"], r["parse_read_csv_default"],
                  r["parse_ctr_criteo"], r["gzip"])
    rows = [
        ("synth (write_tsv)", r["synth"]["mb_per_s"], r["synth"]["rows_per_s"],
         f"{r['synth']['seconds']:.1f} s"),
        ("chunk (cut_chunk, all runs)", c["mb_per_s"], c["lines_per_s"],
         f"first {c['first_s']:.3f} s, last {c['last_s']:.3f} s, "
         f"last/first {c['last_over_first']:.2f}; median 1st/2nd half "
         f"{c['median_first_half_s']:.3f}/{c['median_second_half_s']:.3f} s"),
        ("seed method (re-read from 0)", float("nan"), float("nan"),
         f"first {s['first_s']:.3f} s, last {s['last_s']:.3f} s, "
         f"last/first {s['last_over_first']:.2f}"),
        ("pyarrow read_csv, typed", p["mb_per_s"], p["lines_per_s"], f"{p['seconds']:.2f} s"),
        ("pyarrow read_csv, default", d["mb_per_s"], d["lines_per_s"], f"{d['seconds']:.2f} s"),
        ("ctr.criteo.parse_tsv", o["mb_per_s"], o["lines_per_s"], f"{o['seconds']:.2f} s"),
        ("aggregate (parse+Parquet)", a["mb_per_s"], a["lines_per_s"],
         f"{a['seconds']:.2f} s; {aggregate_ratio_text(a)}"),
        ("gzip -dc", g["gzip_dc_mb_per_s"], float("nan"), f"{g['gzip_dc_s']:.2f} s"),
        ("chunker gz transcode (once)", g["transcode_mb_per_s"], float("nan"),
         f"{g['transcode_s']:.2f} s; next chunk {g['second_chunk_s']:.3f} s"),
    ]
    f = r["part_format"]
    lines_after = [
        f"Parquet bytes/row: format 2 (uint32) {f['bytes_per_row']['v2']:.1f}, "
        f"format 1 (hex text) {f['bytes_per_row']['v1']:.1f}; first part "
        f"({f['first_part_rows']:,} rows): read {f['read_part_s']['v2'] * 1e3:.0f} ms "
        f"vs {f['read_part_s']['v1'] * 1e3:.0f} ms, encode "
        f"{f['encode_s']['v2'] * 1e3:.0f} ms vs {f['encode_s']['v1'] * 1e3:.0f} ms"]
    head = (f"data-plane benchmark: {r['chunks']} chunks x {r['chunk_lines']:,} lines "
            f"= {r['rows']:,} lines, {r['file_mb']:,.1f} MB, store {r['store']}")
    lines = [head, f"{'step':32s} {'MB/s':>8s} {'lines/s':>12s}  notes"]
    for name, mbs, lps, note in rows:
        mb_text = f"{mbs:8.1f}" if mbs == mbs else f"{'-':>8s}"
        lp_text = f"{lps:12,.0f}" if lps == lps else f"{'-':>12s}"
        lines.append(f"{name:32s} {mb_text} {lp_text}  {note}")
    return "\n".join(lines + lines_after)


def aggregate_ratio_text(a: dict[str, Any]) -> str:
    """aggregate / typed read_csv, per repeat: median (min-max), by CPU, and the load."""
    ratios, cpu = a["ratios"], a["cpu_ratios"]
    return (f"{statistics.median(ratios):.2f}x of typed read_csv (median of {len(ratios)}, "
            f"{min(ratios):.2f}-{max(ratios):.2f}; by CPU time "
            f"{statistics.median(cpu):.2f}x), load avg {min(a['load_1min']):.1f}-"
            f"{max(a['load_1min']):.1f}; sequential conversion: format 2 "
            f"{statistics.median(a['v2_seq_ratios']):.2f}x, format 1 (before) "
            f"{statistics.median(a['v1_seq_ratios']):.2f}x")


def section(plan: Plan, echo: Echo) -> SectionResult:
    """The data figures of `ctr bench`."""
    r = run(chunk_lines=plan.data_chunk_lines, chunks=plan.data_chunks,
                       repeats=plan.data_repeats)
    echo(format_table(r))
    c, s, g, timings = r["chunk"], r["seed_method"], r["gzip"], r["aggregate"]["timings_s"]
    size_mb, lines = r["file_mb"], r["rows"]
    per_chunk_mb = [b / 1e6 / t for b, t in zip(c["per_chunk_bytes"], c["per_chunk_s"],
                                                 strict=True) if t > 0]
    per_chunk_lines = rates(r["chunk_lines"], c["per_chunk_s"])
    gunzip = ("gzip -dc, same bytes", g["gzip_dc_runs_s"])
    read_csv = ("pyarrow read_csv (typed), same chunks", timings["typed"])
    halves = c["median_second_half_s"] / c["median_first_half_s"]
    shape = f"{r['chunks']} chunks x {r['chunk_lines']:,} lines, {size_mb:,.1f} MB in-memory S3"
    figures = [
        figure("data.chunk.mb_per_s", "chunk: throughput", statistics.median(per_chunk_mb),
               "MB/s", better="higher", n=len(per_chunk_mb), spread=min_max(per_chunk_mb),
               baseline=(gunzip[0], statistics.median(rates(size_mb, gunzip[1]))),
               note=f"per chunk; {shape}"),
        figure("data.chunk.lines_per_s", "chunk: lines", statistics.median(per_chunk_lines),
               "lines/s", better="higher", n=len(per_chunk_lines),
               spread=min_max(per_chunk_lines),
               baseline=(gunzip[0], statistics.median(rates(lines, gunzip[1])))),
        figure("data.chunk.seconds", "chunk: one chunk at any position",
               statistics.median(c["per_chunk_s"]), "s", better="lower",
               n=len(c["per_chunk_s"]), spread=min_max(c["per_chunk_s"]),
               baseline=("seed method, last chunk (re-read from line 0)", s["last_s"]),
               note=f"seed method: {len(s['last_runs_s'])} runs"),
        figure("data.chunk.last_over_first", "chunk: last / first chunk time",
               c["last_over_first"], "x", better="lower",
               baseline=("seed method, last / first", s["last_over_first"]),
               note=f"medians of 2nd / 1st half of the chunks: {halves:.2f}"),
        rate_figure("data.aggregate.mb_per_s", "aggregate: parse + validate + Parquet", size_mb,
                    "MB/s", timings["agg"], baseline=read_csv,
                    note=aggregate_ratio_text(r["aggregate"])),
        figure("data.aggregate.over_read_csv", "aggregate / typed read_csv, per repeat",
               statistics.median(r["aggregate"]["ratios"]), "x", better="higher",
               n=len(r["aggregate"]["ratios"]), spread=min_max(r["aggregate"]["ratios"]),
               note=f"load avg (1 min) per repeat: {r['aggregate']['load_1min']}"),
        figure("data.aggregate.format1_over_read_csv",
               "before: format-1 conversion (parse_tsv + hex-text Parquet) / read_csv",
               statistics.median(r["aggregate"]["v1_seq_ratios"]), "x", better="higher",
               n=len(r["aggregate"]["v1_seq_ratios"]),
               spread=min_max(r["aggregate"]["v1_seq_ratios"]),
               note="sequential, no store; format 2 the same way: "
                    f"{statistics.median(r['aggregate']['v2_seq_ratios']):.2f}x"),
        figure("data.part.bytes_per_row", "Parquet bytes per row (format 2, uint32)",
               r["part_format"]["bytes_per_row"]["v2"], "B", better="lower",
               baseline=("format 1 (hex text), same rows",
                         r["part_format"]["bytes_per_row"]["v1"])),
        figure("data.part.read_s", "read one part (format 2)",
               r["part_format"]["read_part_s"]["v2"], "s", better="lower",
               baseline=("format 1, same rows", r["part_format"]["read_part_s"]["v1"]),
               note=f"{r['part_format']['first_part_rows']:,} rows"),
        figure("data.part.encode_s", "FeatureTransform.encode of one part (format 2)",
               r["part_format"]["encode_s"]["v2"], "s", better="lower",
               baseline=("format 1 (hex text), same rows", r["part_format"]["encode_s"]["v1"]),
               note=f"{r['part_format']['first_part_rows']:,} rows"),
        rate_figure("data.aggregate.lines_per_s", "aggregate: lines", lines, "lines/s",
                    timings["agg"], baseline=read_csv),
        figure("data.gzip_transcode.mb_per_s", "chunker's one-time gzip transcode",
               g["transcode_mb_per_s"], "MB/s", better="higher",
               baseline=("gzip -dc, same file", g["gzip_dc_mb_per_s"]),
               note="includes the upload of the plain copy"),
    ]
    return figures, r
