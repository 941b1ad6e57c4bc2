"""Batch scoring: a Criteo TSV file in S3 -> probabilities joined to its lines, in parts.

`statemachine/score.asl.json` runs the three steps below with the score function
(`functions/score`); `ctr score s3://<bucket>/batch/... --out s3://<bucket>/batch/.../`
starts it.

1. `plan`: pins the production version (`serving/production.json` at the start: a
   reload during the run changes nothing for it) and cuts the input into line-aligned
   byte ranges of about `range_bytes` (each boundary moved to just after a newline, found
   with a small ranged read). A gzip input cannot be split without decompressing it
   (deflate has no byte-addressable restart points), so it is one range, decompressed
   by its one child; split large inputs before compressing, or upload them plain.
2. `range` (one Distributed Map child per range, bounded concurrency): reads its bytes,
   parses them with the data plane's rules (`ctr.criteo`; lines with or without the
   label), scores the valid lines with the pinned bundle and writes
   `<run_prefix>part-NNNNN.tsv` (`<input line>\\t<probability>` per valid line, in input
   order) and, when lines were bad, `<run_prefix>rejects-NNNNN.txt` (the data plane's
   rejects format: `<line number in the range>\\t<reason>\\t<line>`).
3. `manifest`: checks that every range was scored and writes
   `<run_prefix>manifest.json`: the model (name, version, MLflow run id), the input
   (key, ETag, digest), lines = rows + rejects, and every part.

Exactly once under retries: every key is a function of the run id and the range index,
and every object is written create-only (`Store.put_if_absent`). A retried child (a
crash after its write, a timeout, a lost response) computes the same bytes from the same
input and model, finds its part already written, checks the bytes are identical and
adopts it, so no output is duplicated and none is lost. Two runs never share keys (the
run id is the execution name).

The input digest is the SHA-256 of the ranges' SHA-256s in order (each child hashes the
bytes it read), so the whole input is hashed once, in parallel, and the digest says
which bytes were scored.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr import criteo, faults, layout, xgb_import  # noqa: F401  (xgb_import first: see it)
from ctr.bundle import Pointer, Provenance, load_bundle, load_pointer
from ctr.clock import iso_now
from ctr.errors import ConflictError, DataError, NoModelError, NotFoundError, ValidationError
from ctr.predictor import Predictor
from ctr.steps import ScoredRange, ScoreManifest, ScorePlan, ScoreRange
from ctr.storage import Store

DEFAULT_RANGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 8
MAX_RANGES = 500             # plan and results travel in the execution's 256 KB state
_PROBE_BYTES = 64 * 1024

# A warm execution environment keeps the bundles it loaded (immutable per prefix).
_PREDICTORS: dict[str, Predictor] = {}


def _require_batch_key(name: str, key: str | None) -> str:
    if not key or not key.startswith(layout.BATCH_PREFIX) or ".." in key.split("/"):
        raise ValidationError(f"{name} must be a key under {layout.BATCH_PREFIX} of the "
                              f"data bucket, got {key!r}",
                              errors=[{"loc": [name], "msg": f"must start with "
                                                             f"{layout.BATCH_PREFIX}"}])
    return key


# --------------------------------------------------------------------------- plan

def plan(store: Store, *, input_key: str | None, output_prefix: str | None, run_id: str,
         range_bytes: int = DEFAULT_RANGE_BYTES,
         max_concurrency: int = DEFAULT_MAX_CONCURRENCY) -> ScorePlan:
    """Pin the production version and cut the input into line-aligned ranges."""
    input_key = _require_batch_key("input_key", input_key)
    output_prefix = _require_batch_key("output_prefix", output_prefix)
    if not output_prefix.endswith("/"):
        output_prefix += "/"
    if input_key.startswith(output_prefix):
        raise ValidationError("the output prefix must not contain the input",
                              errors=[{"loc": ["output_prefix"], "msg": "contains the input"}])
    pointer = load_pointer(store)
    if pointer is None:
        raise NoModelError("no model is published (serving/production.json): nothing "
                           "to score with")
    found = store.get_json(pointer.prefix + "provenance.json")
    if found is None:
        raise DataError(f"serving bundle {pointer.prefix} has no provenance.json")
    provenance = Provenance.model_validate(found[0])
    head = store.head(input_key)
    if head is None:
        raise NotFoundError(f"s3://{store.bucket}/{input_key} does not exist", key=input_key)
    size = int(head["ContentLength"])
    compressed = input_key.endswith(".gz")
    bounds = [0, size] if compressed or size == 0 else _line_bounds(store, input_key, size,
                                                                     range_bytes)
    ranges = [ScoreRange(index=i, start=a, end=b)
              for i, (a, b) in enumerate(itertools.pairwise(bounds))]
    if len(ranges) > MAX_RANGES:
        raise ValidationError(f"{len(ranges)} ranges of {range_bytes} bytes: at most "
                              f"{MAX_RANGES}; use larger ranges",
                              errors=[{"loc": ["range_bytes"], "msg": "too small"}])
    return ScorePlan(
        run_id=run_id, input_key=input_key, input_bytes=size,
        input_etag=str(head.get("ETag", "")), compressed=compressed,
        model_name=provenance.model_name, model_version=pointer.version,
        model_prefix=pointer.prefix, model_run_id=provenance.run_id,
        run_prefix=f"{output_prefix}{run_id}/", planned_at=iso_now(),
        max_concurrency=max_concurrency, ranges=ranges, range_count=len(ranges))


def _line_bounds(store: Store, key: str, size: int, range_bytes: int) -> list[int]:
    """0, the first line start at or after each multiple of `range_bytes`, size."""
    bounds = [0]
    nominal = range_bytes
    while nominal < size:
        start = max(nominal, bounds[-1] + 1)
        boundary = _next_line_start(store, key, start, size)
        if boundary >= size:
            break
        bounds.append(boundary)
        nominal = boundary + range_bytes
    bounds.append(size)
    return bounds


def _next_line_start(store: Store, key: str, at: int, size: int) -> int:
    """The first offset >= `at` that starts a line (just after a '\\n'), or `size`."""
    pos, probe = at - 1, _PROBE_BYTES
    while pos < size:
        chunk = store.get_range(key, pos, min(size, pos + probe) - 1)
        newline = chunk.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos, probe = pos + len(chunk), probe * 2
    return size


# --------------------------------------------------------------------------- one range

def _predictor(store: Store, prefix: str, version: int) -> Predictor:
    if prefix not in _PREDICTORS:
        pointer = Pointer(version=version, prefix=prefix, published_at="", etag="")
        _PREDICTORS[prefix] = load_bundle(store, pointer)[0]
    return _PREDICTORS[prefix]


def score_bytes(predictor: Predictor, data: bytes) -> tuple[bytes, bytes, int, int, int]:
    """(output part, rejects part, lines, rows, rejects) of a block of input lines."""
    lines, parsed = criteo.parse_lines_with_or_without_label(data)
    probabilities = predictor.predict_table(parsed.table)
    kept = criteo.valid_lines(lines, parsed.rejects)
    if len(kept):
        text = pc.cast(pa.array(probabilities, pa.float64()), pa.large_string())
        joined = pc.binary_join_element_wise(
            kept, text.cast(pa.large_binary()), pa.scalar(b"\t", pa.large_binary()))
        part = criteo.join_lines(joined)
    else:
        part = b""
    rejects = b"".join(r.to_bytes() + b"\n" for r in parsed.rejects)
    return part, rejects, len(lines), parsed.table.num_rows, len(parsed.rejects)


def _write_once(store: Store, key: str, body: bytes, content_type: str) -> bool:
    """Create `key` with `body`; True if it already held exactly these bytes (adopted).
    Different bytes there mean two writers disagree: a ConflictError, never an overwrite."""
    if store.put_if_absent(key, body, content_type) is not None:
        return False
    if store.get(key).body != body:
        raise ConflictError(f"s3://{store.bucket}/{key} exists with other content",
                            key=key)
    return True


def score_range(store: Store, *, input_key: str, index: int, start: int, end: int,
                compressed: bool, model_prefix: str, model_version: int,
                run_prefix: str) -> ScoredRange:
    """Score bytes [start, end) of the input into this range's parts (create-only)."""
    started = time.perf_counter()
    _require_batch_key("input_key", input_key)
    _require_batch_key("run_prefix", run_prefix)
    if end <= start:
        raw = b""
    elif compressed:
        raw = store.get(input_key).body
    else:
        raw = store.get_range(input_key, start, end - 1)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        data = gzip.decompress(raw) if compressed else raw
    except (OSError, EOFError) as err:
        raise DataError(f"s3://{store.bucket}/{input_key} is not valid gzip: {err}") from err
    predictor = _predictor(store, model_prefix, model_version)
    part, rejects, n_lines, n_rows, n_rejects = score_bytes(predictor, data)
    part_key = layout.score_part_key(run_prefix, index)
    rejects_key = layout.score_rejects_key(run_prefix, index) if n_rejects else None
    adopted = []
    if rejects_key is not None:
        adopted.append(_write_once(store, rejects_key, rejects, "text/plain"))
    adopted.append(_write_once(store, part_key, part, "text/tab-separated-values"))
    faults.inject("score.after_write")
    return ScoredRange(index=index, lines=n_lines, rows=n_rows, rejects=n_rejects,
                       part_key=part_key, rejects_key=rejects_key, input_sha256=digest,
                       adopted=all(adopted), seconds=round(time.perf_counter() - started, 3))


# --------------------------------------------------------------------------- manifest

def write_manifest(store: Store, plan_: ScorePlan, ranges: list[ScoredRange]
                   ) -> ScoreManifest:
    """Check that every planned range was scored once; write the manifest create-only."""
    by_index = {r.index: r for r in ranges}
    expected = {r.index for r in plan_.ranges}
    if set(by_index) != expected or len(ranges) != len(expected):
        raise DataError(f"scored ranges {sorted(by_index)} do not match the plan's "
                        f"{sorted(expected)}")
    ordered = [by_index[i] for i in sorted(by_index)]
    digest = hashlib.sha256("".join(r.input_sha256 for r in ordered).encode()).hexdigest()
    manifest = ScoreManifest(
        run_id=plan_.run_id, manifest_key=layout.score_manifest_key(plan_.run_prefix),
        model_name=plan_.model_name, model_version=plan_.model_version,
        model_run_id=plan_.model_run_id, input_key=plan_.input_key,
        input_etag=plan_.input_etag, input_digest=f"sha256-of-range-sha256:{digest}",
        lines=sum(r.lines for r in ordered), rows=sum(r.rows for r in ordered),
        rejects=sum(r.rejects for r in ordered), parts=[r.part_key for r in ordered],
        rejects_parts=[r.rejects_key for r in ordered if r.rejects_key],
        planned_at=plan_.planned_at, adopted_ranges=sum(r.adopted for r in ordered))
    if manifest.lines != manifest.rows + manifest.rejects:
        raise DataError(f"lines {manifest.lines} != rows {manifest.rows} + rejects "
                        f"{manifest.rejects}")
    document: dict[str, Any] = {**manifest.to_payload(), "plan": plan_.to_payload()}
    # adopted_ranges differs between a first and a retried manifest step; the file
    # records the scoring, not the retries, so it is left out of the written document.
    document.pop("adopted_ranges")
    body = json.dumps(document, indent=1, sort_keys=True).encode()
    _write_once(store, manifest.manifest_key, body, "application/json")
    return manifest


def probabilities_of(part: bytes) -> np.ndarray:
    """The probability column of an output part (for tests and readers)."""
    if not part:
        return np.empty(0)
    return np.array([float(line.rsplit(b"\t", 1)[1]) for line in part.splitlines()])
