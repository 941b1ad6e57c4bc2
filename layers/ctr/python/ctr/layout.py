"""The storage layout of the one bucket (docs/design.md describes it). Every key is built here."""

from __future__ import annotations

RAW_PREFIX = "raw/"
CHUNKS_PREFIX = "chunks/"
PARQUET_PREFIX = "parquet/"
REJECTS_PREFIX = "rejects/"
SERVING_PREFIX = "serving/"
STATE_PREFIX = "state/"
MLFLOW_ARTIFACTS_PREFIX = "mlflow-artifacts/"
AUDIT_PREFIX = "audit/"  # registry events, one create-only object each (ctr.registry.audit)

PRODUCTION_POINTER_KEY = "serving/production.json"


def chunk_key(index: int) -> str:
    return f"{CHUNKS_PREFIX}chunk_{index:06d}.txt"


def parquet_key(index: int) -> str:
    return f"{PARQUET_PREFIX}part_{index:06d}.parquet"


def rejects_key(index: int) -> str:
    return f"{REJECTS_PREFIX}chunk_{index:06d}.txt"


# A chunk with more than MaxRejectShare malformed lines is quarantined as a whole: its
# lines stay in chunks/, its malformed ones in rejects/, and this marker (create-only
# JSON, `ctr.steps.ChunkQuarantine`) takes it out of the pending set.
QUARANTINED_CHUNKS_PREFIX = f"{REJECTS_PREFIX}quarantined/"


def quarantined_chunk_key(index: int) -> str:
    return f"{QUARANTINED_CHUNKS_PREFIX}chunk_{index:06d}.json"


def is_chunk_rejects_key(key: str) -> bool:
    """A `rejects_key` file (not a quarantine marker, not a folder)."""
    return (key.startswith(REJECTS_PREFIX) and not key.startswith(QUARANTINED_CHUNKS_PREFIX)
            and key.endswith(".txt"))


def serving_prefix(version: int | str) -> str:
    return f"{SERVING_PREFIX}v{version}/"


def state_key(name: str) -> str:
    return f"{STATE_PREFIX}{name}"


# A backfill plan (ctr.backfill): the line-aligned byte ranges of the chunks of one
# source's backlog, a JSON array the Distributed Map reads (create-only; the name is a
# function of the cursor position and the chunk size, so a retry finds the same plan).
BACKFILL_PREFIX = f"{STATE_PREFIX}backfill/"


def backfill_plan_key(first_chunk: int, digest: str) -> str:
    return f"{BACKFILL_PREFIX}plan_{first_chunk:06d}_{digest}.json"


def index_of(key: str) -> int:
    """`chunks/chunk_000012.txt` or `parquet/part_000012.parquet` -> 12."""
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(stem.rsplit("_", 1)[-1])

# Snapshot of every registered version, written by reload, read by /model-info.
REGISTRY_SNAPSHOT_KEY = "serving/registry.json"

# Monitoring (ctr.monitoring.reports) and served-prediction logs (ctr.predlog).
MONITORING_PREFIX = "monitoring/"
PREDICTIONS_PREFIX = "predictions/"  # the delivery stream adds YYYY/MM/DD/HH/
MONITORING_SUMMARY_KEY = "monitoring/summary.json"


def quality_key(part: int) -> str:
    return f"{MONITORING_PREFIX}quality/part_{part:06d}.json"


def drift_key(part: int) -> str:
    return f"{MONITORING_PREFIX}drift/part_{part:06d}.json"


def skew_key(stamp: str) -> str:
    """`stamp`: UTC yyyymmddThhmmss."""
    return f"{MONITORING_PREFIX}skew/{stamp}.json"

# Batch scoring (ctr.scoring): inputs and outputs live under batch/ (the score function
# may read and create-only write there, nothing else but serving/).
BATCH_PREFIX = "batch/"


def score_part_key(run_prefix: str, index: int) -> str:
    return f"{run_prefix}part-{index:05d}.tsv"


def score_rejects_key(run_prefix: str, index: int) -> str:
    return f"{run_prefix}rejects-{index:05d}.txt"


def score_manifest_key(run_prefix: str) -> str:
    return f"{run_prefix}manifest.json"

# Managed training (TrainBackend=sagemaker; ctr.managed_train): the job writes its
# TrainResult here, create-only, and the state machine reads it back (GetObject), so the
# states after training see what the train function would have returned. SageMaker
# itself uploads the job's /opt/ml/model archive under TRAIN_JOBS_PREFIX.
TRAIN_RESULTS_PREFIX = "train-results/"
TRAIN_JOBS_PREFIX = "train-jobs/"


def train_result_key(execution: str) -> str:
    """The result of the managed training job of Step Functions execution `execution`."""
    return f"{TRAIN_RESULTS_PREFIX}{execution}.json"
