"""`ctr data synth | put | status | release | bench`: synthetic data, ingestion into raw/,
where the data stands, releasing a quarantined chunk, data-plane benchmark.

The bucket is --bucket, else $CTR_BUCKET, else the running local cloud's bucket (with
its endpoint and test credentials); the endpoint is --endpoint-url, else whatever boto3
finds ($AWS_ENDPOINT_URL or AWS).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from ctr.errors import ConfigError
from ctr.storage import Store, make_s3_client


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("data", help="synthetic data, ingestion, data-plane benchmark")
    data_sub = group.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    p = data_sub.add_parser("synth", help="write synthetic Criteo lines with known truth")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output file; gzip when it ends in .gz")
    p.add_argument("--start-row", type=int, default=0,
                   help="first row of the stream (consecutive slices of one stream)")
    p.add_argument("--drift", type=float, default=0.0,
                   help="strength of the slow drift over rows (0 = stationary)")
    p.add_argument("--no-sidecar", action="store_true",
                   help="do not write the true probabilities to FILE.proba.npy")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = data_sub.add_parser("put", help="ingest a file, s3:// object or https:// URL into raw/")
    p.add_argument("source", help="local path, s3://bucket/key or https://...")
    p.add_argument("--source-name", help="folder under raw/ (default: 'local', the source "
                                         "bucket or the URL's host)")
    p.add_argument("--decompress", action="store_true",
                   help="store a .gz source decompressed (skips the chunker's transcode)")
    _add_store_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_put)

    p = data_sub.add_parser("status", help="sources in raw/ (consumed, quarantined with "
                                           "reason), chunks pending, parts, rejects")
    _add_store_arguments(p)
    p.add_argument("--json", action="store_true", help="print the document as JSON")
    p.set_defaults(func=cmd_status)

    p = data_sub.add_parser(
        "release", help="convert a quarantined chunk (too many malformed lines) after all: "
                        "its good lines become a Parquet part, the bad ones stay in rejects/")
    p.add_argument("index", type=int, nargs="+", help="chunk index(es), see `ctr data status`")
    p.add_argument("--max-reject-share", type=float, required=True,
                   help="the share of malformed lines to accept for these chunks (0..1)")
    _add_store_arguments(p)
    p.set_defaults(func=cmd_release)

    p = data_sub.add_parser("bench", help="chunk/aggregate throughput vs plain parsing")
    p.add_argument("--chunk-lines", type=int, default=200_000)
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where to write the synthetic file (default: a temp dir)")
    p.add_argument("--s3", action="store_true",
                   help="run against a real, EMPTY bucket (--bucket, $CTR_BUCKET or the "
                        "local cloud's) instead of in-memory S3; refuses a non-empty one")
    _add_store_arguments(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.set_defaults(func=cmd_bench)


def _add_store_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="bucket (default: $CTR_BUCKET, else the local cloud's)")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: $AWS_ENDPOINT_URL or AWS)")


def resolve_store(args: argparse.Namespace) -> Store:
    bucket = args.bucket or os.environ.get("CTR_BUCKET")
    if bucket:
        return Store(make_s3_client(args.endpoint_url), bucket)
    from ctr_infra import localcloud

    cfg = localcloud.CloudConfig()
    outputs = localcloud.read_outputs(cfg)
    if not outputs.get("BucketName"):
        raise ConfigError("no bucket: pass --bucket, set CTR_BUCKET, or start the local "
                          "cloud (make up)")
    client = (make_s3_client(args.endpoint_url) if args.endpoint_url
              else localcloud.boto3_client(cfg, "s3"))
    return Store(client, outputs["BucketName"])


def cmd_synth(args: argparse.Namespace) -> int:
    from ctr import synth

    started = time.perf_counter()
    info = synth.write_tsv(args.out, args.rows, args.seed, start_row=args.start_row,
                           drift=args.drift, progress=not args.quiet,
                           sidecar=not args.no_sidecar)
    seconds = time.perf_counter() - started
    print(f"wrote {info['rows']:,} rows ({info['bytes'] / 1e6:,.1f} MB of text) to {info['path']}"
          f" in {seconds:.1f}s ({info['rows'] / seconds:,.0f} rows/s)")
    if info["sidecar"]:
        print(f"true click probabilities: {info['sidecar']}")
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    from ctr import ingest

    store = resolve_store(args)
    started = time.perf_counter()
    result = ingest.put(store, args.source, source_name=args.source_name,
                        decompress=args.decompress, progress=not args.quiet)
    seconds = time.perf_counter() - started
    size = f"{result['bytes'] / 1e6:,.1f} MB" if result.get("bytes") is not None else "?"
    print(f"{result['status']}: s3://{store.bucket}/{result['key']} ({size}, {seconds:.1f}s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ctr import data_status

    doc = data_status.status(resolve_store(args))
    print(json.dumps(doc, indent=2) if args.json else "\n".join(data_status.format_status(doc)))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """In-process, on the bucket (as `put`): the same `ctr.aggregate` code the function
    runs, with `include_quarantined` and the threshold a person chose."""
    from ctr import aggregate

    if not 0.0 <= args.max_reject_share <= 1.0:
        raise ConfigError(f"--max-reject-share must be within 0..1, got {args.max_reject_share}")
    store = resolve_store(args)
    held = aggregate.quarantined(store)
    if unknown := sorted(set(args.index) - held):
        raise ConfigError(f"chunk(s) {unknown} are not quarantined (see `ctr data status`)")
    result = aggregate.aggregate(store, args.index, args.max_reject_share,
                                 include_quarantined=True)
    for chunk in result.chunks:
        if chunk.status == "converted":
            print(f"chunk {chunk.index}: released, {chunk.rows_out:,} rows to {chunk.key}, "
                  f"{chunk.rows_rejected:,} lines stay in rejects/")
        elif chunk.status == "quarantined":
            print(f"chunk {chunk.index}: still quarantined: {chunk.reason}")
        else:
            print(f"chunk {chunk.index}: already has its part ({chunk.key})")
    return 1 if result.quarantined else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ctr_infra.bench import data as bench_data

    store = resolve_store(args) if args.s3 else None
    results: dict[str, Any] = bench_data.run(chunk_lines=args.chunk_lines, chunks=args.chunks,
                                             seed=args.seed, workdir=args.workdir, store=store)
    print(bench_data.format_table(results))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0
