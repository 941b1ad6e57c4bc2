"""The registry's vocabulary: aliases, version statuses, tags and artifact names.

Everything that reads or writes the MLflow registry or a run's artifacts names them
from here, so the training side (`ctr.registry.train_step`), the operator actions
(`ctr.registry.promotion`) and the MLflow-free serving side (`ctr.bundle`) cannot
drift apart. MLflow-free.
"""

from __future__ import annotations

from enum import StrEnum

# Aliases (stages are deprecated since MLflow 2.9). They are the truth for what is
# served; the `status` tag explains the history of every other version.
PRODUCTION = "production"
PREVIOUS = "previous"


class Status(StrEnum):
    """The `status` tag of a model version."""

    CANDIDATE = "candidate"      # registered, the promotion gate has not decided yet
    PRODUCTION = "production"
    PREVIOUS = "previous"
    REJECTED = "rejected"        # the gate said no; kept, with the reason and numbers
    ARCHIVED = "archived"        # was production or previous once


# Version tags.
TAG_STATUS = "status"
TAG_STATUS_REASON = "status_reason"
TAG_EXECUTION = "execution"
TAG_DATA_WINDOW = "data_window"
TAG_DATA_LAST_PART = "data_last_part"
TAG_HOLDOUT_LOGLOSS = "holdout_logloss"
TAG_HOLDOUT_AUC = "holdout_auc"
TAG_HOLDOUT_ROWS = "data_holdout_rows"         # the exact holdout rows, part[offset:end]@digest
# "true" on a version the monitor's auto-rollback demoted: it is never restored automatically.
TAG_AUTO_ROLLBACK_DEMOTED = "demoted_by_auto_rollback"
# The gate's comparison, as ctr.registry.decision.Decision.numbers() writes it.
GATE_TAGS = ("compared_with_version", "gate_rows", "logloss_diff_mean", "logloss_diff_upper95",
             "promotion_tolerance", "calibration_ratio", "auc_diff_mean", "auc_diff_upper95")

# Run artifacts.
MODEL_ARTIFACT = "model"                               # mlflow.xgboost.log_model(name=)
TRANSFORM_ARTIFACT_DIR = "feature_transform"
TRANSFORM_ARTIFACT = f"{TRANSFORM_ARTIFACT_DIR}/feature_transform.json"
PLOTS_ARTIFACT_DIR = "plots"
DATA_RANGES_ARTIFACT = "data/ranges.json"               # every slice of the window
BASELINE_ARTIFACT_DIR = "monitoring"
BASELINE_ARTIFACT = f"{BASELINE_ARTIFACT_DIR}/baseline.json"   # ctr.monitoring.baseline
