"""What each Lambda step takes and returns: the contracts between the states of
`statemachine/pipeline.asl.json`.

Every handler parses its event with the step's `*Event` model (`parse_event`) and
returns the step's `*Result` model dumped as JSON (`StepModel.to_payload`). The domain
functions of `ctr` take and return these same objects, so what one state hands the
next is written here once, and `tests/unit/test_step_contracts.py` checks every
JSONPath the state machine reads against the JSON schema of the model that produces it.

Events ignore keys they do not know (Step Functions hands a state more than it needs,
e.g. the execution input), but a known key of the wrong type is a `ValidationError`
naming the field, never a KeyError deep in a step. Results forbid unknown keys, so a
field cannot be added to a result without being declared here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic

from ctr import layout
from ctr.errors import ValidationError


class StepModel(pydantic.BaseModel):
    """Base of every step result: unknown fields are a bug, not data."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    def to_payload(self) -> dict[str, Any]:
        """The JSON object a Lambda handler returns."""
        return self.model_dump(mode="json")


class StepEvent(pydantic.BaseModel):
    """Base of every step event: extra keys are ignored, known keys are validated."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)


def parse_event[E: StepEvent](model: type[E], event: Any) -> E:
    """`event` as `model`; None (a manual invoke without payload) is the empty event.

    A malformed event raises `ctr.errors.ValidationError` with field-level errors, which
    the state machine treats as a failure of the step (never retried).
    """
    try:
        return model.model_validate({} if event is None else event)
    except pydantic.ValidationError as err:
        raise ValidationError(
            f"invalid {model.__name__}: {err.error_count()} error(s)",
            errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()],
        ) from err


def _absent() -> Any:
    """A field the step leaves out of its payload when it has no value (it never sends
    null there), e.g. `transcoded` of a chunk run that did not transcode."""
    return pydantic.Field(default=None, exclude_if=lambda value: value is None)


# A step with several result shapes has one model per shape and a union alias
# (`GuardResult`, `ChunkResult`, ...); its JSON schema is
# `pydantic.TypeAdapter(alias).json_schema()`.

# --------------------------------------------------------------------------- guard

class GuardEvent(StepEvent):
    """{"action": "acquire"|"release", "holder": <execution name>}; `ttl_seconds`
    (acquire only, 0 or absent: the function's LEASE_SECONDS) overrides the lease length."""

    action: Literal["acquire", "release"]
    holder: str = pydantic.Field(min_length=1)
    ttl_seconds: float | None = None


class LeaseAcquired(StepModel):
    """This execution holds the lease until `expires_at`; `reason` says how it got it
    (free, taken over from an expired holder, or re-acquired by a retry)."""

    acquired: Literal[True] = True
    holder: str
    expires_at: str
    reason: str
    generation: int


class LeaseBusy(StepModel):
    """Another live execution holds the lease: this one ends as a clean no-op."""

    acquired: Literal[False] = False
    holder: str
    expires_at: str
    reason: str


class LeaseReleased(StepModel):
    """`released` is False (and nothing changed) when `holder` did not hold the lease."""

    released: bool
    reason: str


type AcquireResult = LeaseAcquired | LeaseBusy
type GuardResult = LeaseAcquired | LeaseBusy | LeaseReleased


# --------------------------------------------------------------------------- chunk

class ChunkEvent(StepEvent):
    """Anything (the state machine passes {"execution": ...}); `chunk_lines` (0 or
    absent: the function's CHUNK_LINES) sets the chunk size for this run.

    `action` (ctr.backfill): "cut" (the default) cuts one chunk (`ChunkResult`);
    "plan_backfill" plans the current source's backlog (`BackfillPlan`;
    `backfill_concurrency` overrides the function's BACKFILL_CONCURRENCY, 0 = never
    plan); "cut_range" cuts the planned chunk `item` (`RangeCut`); "finish_backfill"
    moves the cursor past the chunks of `plan` (`BackfillFinished`).
    """

    action: Literal["cut", "plan_backfill", "cut_range", "finish_backfill"] = "cut"
    chunk_lines: int | None = None
    backfill_concurrency: Annotated[int, pydantic.Field(ge=0)] | None = None
    item: BackfillRange | None = None
    plan: BackfillPlan | None = None


class Downloaded(StepModel):
    """raw/ was empty and the configured source URL was streamed into it first."""

    status: str                    # "uploaded" | "exists" (ctr.ingest.put)
    key: str
    bytes: int | None
    seconds: float


class Transcoded(StepModel):
    """A gzip raw object was decompressed once into a plain object (ctr.chunking)."""

    model_config = pydantic.ConfigDict(serialize_by_alias=True, validate_by_name=True)

    from_key: str = pydantic.Field(validation_alias="from", serialization_alias="from")
    to: str
    seconds: float


class ChunkPosition(StepModel):
    """Where the cursor stands after the run: the next unread byte of `read_key`."""

    raw_key: str
    read_key: str
    offset: int
    size: int


class QuarantineNote(StepModel):
    """A raw object this run set aside (corrupt or truncated .gz, or changed under the
    cursor), with the reason; the cursor keeps the full record (ctr.chunking)."""

    raw_key: str
    reason: str


class ChunkCut(StepModel):
    """One chunk was cut (or adopted from a crashed attempt: `reused_existing_chunk`)."""

    status: Literal["chunked"] = "chunked"
    chunk_index: int
    key: str
    lines: int
    bytes: int
    seconds: float
    bytes_per_second: int | None
    reused_existing_chunk: bool
    source_finished: bool
    next_chunk: int
    lines_total: int
    cursor: ChunkPosition
    downloaded: Downloaded | None = _absent()
    transcoded: Transcoded | None = _absent()
    quarantined: list[QuarantineNote] | None = _absent()


class ChunkExhausted(StepModel):
    """Every raw object is consumed: nothing was cut."""

    status: Literal["exhausted"] = "exhausted"
    next_chunk: int
    lines_total: int
    bytes_total: int
    sources_done: int
    cursor: None = None
    downloaded: Downloaded | None = _absent()
    quarantined: list[QuarantineNote] | None = _absent()


type ChunkResult = Annotated[ChunkCut | ChunkExhausted, pydantic.Field(discriminator="status")]


# --------------------------------------------------------------------------- backfill

class BackfillRange(StepModel):
    """One chunk of a backfill plan, one Distributed Map item (the plan object in S3 is
    a JSON array of these): chunk `index` is bytes [start, end) of `read_key` (pinned by
    `etag`), `lines` lines -- what the one-chunk cut would cut at that position."""

    index: int
    key: str
    read_key: str
    etag: str
    start: int
    end: int
    lines: int


class BackfillPlan(StepModel):
    """{"action": "plan_backfill"}: "planned" when the current source has more than one
    chunk of lines left -- the ranges are in the JSON array at `plan_key`, chunks
    [first_chunk, end_chunk) from byte `start` (the cursor) to `size` -- else "none"
    (`reason` says why) and the one-chunk cut runs as before."""

    status: Literal["planned", "none"]
    reason: str
    chunk_lines: int
    max_concurrency: int
    seconds: float
    plan_key: str | None = None
    raw_key: str | None = None
    read_key: str | None = None
    etag: str | None = None
    size: int | None = None
    start: int | None = None
    first_chunk: int | None = None
    end_chunk: int | None = None
    chunks: int = 0
    lines: int = 0
    bytes: int = 0
    downloaded: Downloaded | None = _absent()
    transcoded: Transcoded | None = _absent()
    quarantined: list[QuarantineNote] | None = _absent()


class RangeCut(StepModel):
    """{"action": "cut_range"}: one planned chunk written create-only, or adopted
    (`reused_existing_chunk`) after checking it is those bytes."""

    index: int
    key: str
    lines: int
    bytes: int
    reused_existing_chunk: bool
    seconds: float


class BackfillFinished(StepModel):
    """{"action": "finish_backfill"}: every planned chunk exists and the cursor was moved
    past them at once ("finished"), or a concurrent run had already moved it
    ("already_finished": nothing changed)."""

    status: Literal["finished", "already_finished"]
    first_chunk: int
    end_chunk: int
    chunks: int
    lines: int
    bytes: int
    next_chunk: int
    lines_total: int
    source_finished: bool


# --------------------------------------------------------------------------- plan + aggregate

class AggregateEvent(StepEvent):
    """What the aggregate function is asked to do.

    {"action": "plan"} lists the pending chunks (`PlanResult`); anything else converts
    chunks (`AggregateResult`): every pending one, or those the event names in one of
    the shapes the state machine and manual invokes use -- {"indices": [3, 4]},
    {"index": 3}, a Distributed Map batch {"Items": [{"Key": "chunks/chunk_000003.txt",
    ...}, ...]} (S3 ItemReader + ItemBatcher), one Map item {"Key": "chunks/..."}, or
    {"key": "chunks/..."} (the state machine's Map task). The validator reads them all
    into `indices` (None: every pending chunk). `max_reject_share` overrides the
    function's MAX_REJECT_SHARE for this run. A quarantined chunk (too many rejects
    before) is left alone unless `include_quarantined` (`ctr data release`: convert it
    again, usually with a higher `max_reject_share`).
    """

    action: Literal["plan", "aggregate"] = "aggregate"
    indices: list[int] | None = None
    max_reject_share: Annotated[float, pydantic.Field(ge=0.0, le=1.0)] | None = None
    include_quarantined: bool = False

    @pydantic.model_validator(mode="before")
    @classmethod
    def _indices_from_any_shape(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "indices" in data:
            return data
        if "index" in data:
            return {**data, "indices": [data["index"]]}
        shape = next((name for name in ("Items", "Key", "key") if name in data), None)
        if shape is None:
            return data
        try:
            keys = ([item["Key"] for item in data["Items"]] if shape == "Items"
                    else [data[shape]])
            indices = [layout.index_of(key) for key in keys]
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"{shape}: cannot read chunk indices from chunk keys "
                             f"({type(err).__name__}: {err})") from err
        return {**data, "indices": indices}


class PlanResult(StepModel):
    """The chunks without a Parquet part and not quarantined, ascending; the state
    machine branches on the count (none, a few inline, many fanned out)."""

    pending: list[int]
    pending_count: int


class ChunkQuarantine(StepModel):
    """The marker `layout.quarantined_chunk_key(index)` (create-only): the chunk had more
    malformed lines than `max_reject_share` allows, so it has no Parquet part; its lines
    are kept in `chunk_key`, the malformed ones with reasons in `rejects_key`."""

    index: int
    chunk_key: str
    rejects_key: str
    rows_in: int
    rows_rejected: int
    reject_share: float
    max_reject_share: float
    reason: str
    at: str                              # UTC ISO time of the quarantine


class ChunkSkipped(StepModel):
    """Nothing was read: the chunk's part already existed, or the chunk is quarantined
    (`quarantined` true; `ctr data release` converts it again)."""

    index: int
    status: Literal["skipped"] = "skipped"
    key: str
    quarantined: bool | None = _absent()


class ChunkParsed(StepModel):
    """The chunk was read and parsed. `status`: "converted" (its part was written),
    "skipped" (a concurrent run wrote the part first) or "quarantined" (too many
    rejects: `reason`, no part, a `ChunkQuarantine` marker at `quarantine_key`).
    `rejects_key` is set when lines were rejected."""

    index: int
    key: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    reject_share: float
    bytes: int
    careful_parse: bool
    rejects_key: str | None = _absent()
    status: Literal["converted", "skipped", "quarantined"]
    reason: str | None = _absent()
    quarantine_key: str | None = _absent()
    seconds: float
    bytes_per_second: int | None


type ChunkConversion = ChunkParsed | ChunkSkipped


class AggregateResult(StepModel):
    """Indices by outcome, totals over the converted chunks, and each chunk's result.
    `quarantined`: the chunks this run quarantined (too many rejects)."""

    converted: list[int]
    skipped: list[int]
    quarantined: list[int]
    rows_in: int
    rows_out: int
    rows_rejected: int
    bytes: int
    seconds: float
    bytes_per_second: int | None
    chunks: list[ChunkParsed | ChunkSkipped]


# --------------------------------------------------------------------------- train

class TrainEvent(StepEvent):
    """The train function's event; every field is optional."""

    execution: str = "manual"            # the Step Functions execution name, for tags
    num_boost_round: pydantic.PositiveInt | None = None    # e.g. 1 for a weak test model
    max_train_rows: pydantic.PositiveInt | None = None
    force: bool = False                  # train even if no part is newer than the last


class TrainResult(StepModel):
    """`status` "trained": a version was registered and gated (`promoted` says how);
    "skipped": nothing new to train on (`reason` says why; version and run_id are null)."""

    status: Literal["trained", "skipped"]
    version: int | None
    promoted: bool
    reason: str
    metrics: dict[str, float]
    run_id: str | None


# --------------------------------------------------------------------------- reload

class ReloadEvent(StepEvent):
    """{"action": "publish"} (the default; after a promotion, `ctr reload`) makes serving
    follow the registry's `production` alias and fails with NoModelError when no version
    has it. {"action": "sync"} (the first step of every execution) does the same, so a
    serving pointer left behind by a failed reload heals on the next run, but answers
    `NoModelYet` instead of failing when there is no production version yet."""

    action: Literal["publish", "sync"] = "publish"


class ReloadResult(StepModel):
    """`published`: the serving pointer moved to `prefix`; `unchanged`: it already
    pointed there."""

    status: Literal["published", "unchanged"]
    version: int
    prefix: str


class NoModelYet(StepModel):
    """A sync found no version with the `production` alias: nothing to serve, nothing
    written but the registry snapshot; `reason` says so."""

    status: Literal["no_model"] = "no_model"
    reason: str


type SyncResult = ReloadResult | NoModelYet


# --------------------------------------------------------------------------- monitor

class MonitorEvent(StepEvent):
    """The monitor function's event; every field is optional. `execution` names the
    actor of an automatic rollback in the audit trail."""

    execution: str = "manual"
    max_parts: pydantic.PositiveInt | None = None      # parts evaluated in this run


class RollbackDone(StepModel):
    """An automatic rollback: `production` went from `rolled_back` to `restored`."""

    restored: int
    rolled_back: int
    part: int
    reason: str
    audit_event_id: str | None


class MonitorResult(StepModel):
    """`status` "evaluated": parts were scored (`evaluated`); "nothing_new": every part
    is evaluated or was in the production version's data (`not_fresh`); "no_model": no
    production version yet. `rolled_back` is what the state machine branches on: serving
    must follow the registry (reload) in the same execution."""

    status: Literal["evaluated", "nothing_new", "no_model"]
    reason: str
    production_version: int | None
    previous_version: int | None
    evaluated: list[int]
    not_fresh: list[int]
    pending: list[int]                 # fresh parts left for the next run (max_parts)
    drift_flagged: dict[str, list[str]]   # part index (as text) -> flagged features
    rolled_back: bool
    rollback: RollbackDone | None = _absent()
    skew_records: int
    metrics_published: int
    seconds: float
# --------------------------------------------------------------------------- batch scoring
# statemachine/score.asl.json: plan (pin the production version, cut the input into
# line-aligned byte ranges) -> a Distributed Map of `range` (score one range, write its
# output part create-only) -> `manifest` (totals and provenance).

class ScoreRange(StepModel):
    """Bytes [start, end) of the input: whole lines (a gzip input is one range)."""

    index: int
    start: int
    end: int


class ScorePlan(StepModel):
    """What a scoring run does, fixed at its start: the production version pinned
    (`model_version`, bundle `model_prefix`), the input object, where output goes
    (`run_prefix` = output_prefix + run_id + "/") and the ranges the Map scores."""

    run_id: str
    input_key: str
    input_bytes: int
    input_etag: str
    compressed: bool
    model_name: str
    model_version: int
    model_prefix: str
    model_run_id: str
    run_prefix: str
    planned_at: str
    max_concurrency: int
    ranges: list[ScoreRange]
    range_count: int


class ScoredRange(StepModel):
    """One range scored: its output part (input line + tab + probability per valid
    line, in input order) and, when lines were bad, its rejects part (the data plane's
    format: `<line number in the range>\\t<reason>\\t<line>`). `adopted`: the parts
    already existed with the same bytes (a retried child wrote nothing twice)."""

    index: int
    lines: int
    rows: int
    rejects: int
    part_key: str
    rejects_key: str | None
    input_sha256: str
    adopted: bool
    seconds: float


class ScoreManifest(StepModel):
    """The run's manifest (also written to `<run_prefix>manifest.json`)."""

    run_id: str
    manifest_key: str
    model_name: str
    model_version: int
    model_run_id: str
    input_key: str
    input_etag: str
    input_digest: str
    lines: int
    rows: int
    rejects: int
    parts: list[str]
    rejects_parts: list[str]
    planned_at: str
    adopted_ranges: int


class ScoreEvent(StepEvent):
    """The score function's event. {"action": "plan", "input_key", "output_prefix",
    ...} is the execution input plus the action; {"action": "range", ...} is one Map
    item (a `ScoreRange`) with the plan's pinned model and keys; {"action":
    "manifest", "plan": ..., "ranges": [...]} ends the run."""

    action: Literal["plan", "range", "manifest"]
    # plan
    input_key: str | None = None
    output_prefix: str | None = None
    run_id: str | None = None
    range_bytes: pydantic.PositiveInt | None = None
    max_concurrency: pydantic.PositiveInt | None = None
    # range
    index: int | None = None
    start: int | None = None
    end: int | None = None
    compressed: bool = False
    model_prefix: str | None = None
    model_version: int | None = None
    run_prefix: str | None = None
    # manifest
    plan: ScorePlan | None = None
    ranges: list[ScoredRange] | None = None
