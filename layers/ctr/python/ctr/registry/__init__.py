"""The one seam between the pipeline and the MLflow model registry.

    names       aliases (production, previous), version statuses, tags, artifact names
    versions    reading: aliases, versions, summaries, the one model + transform download
    decision    the promotion gate's rule as a pure function
    gate        scores candidate and production on the same holdout, decides, applies
    promotion   alias and tag moves: promote, rollback, apply a decision
    audit       the audit trail under audit/ and its EventBridge events
    runlog      writing: the MLflow run and its registered version   (imports mlflow)
    train_step  the train Lambda's orchestration                      (imports mlflow)

Promotion uses registry *aliases* (stages are deprecated since MLflow 2.9):
`production` is what serving exports; `previous` is the production version before the
last promotion, and `rollback` moves `production` back to it. Every version carries a
`status` tag (candidate, production, previous, rejected, archived) with a reason;
aliases are the truth for production/previous, tags explain the history.

This package's `__init__` imports only the MLflow-free modules, so `ctr.bundle` (which
the predict function imports) can use the names and readers without pulling in MLflow.
"""

from ctr.registry.decision import Decision, Evidence, decide
from ctr.registry.names import PREVIOUS, PRODUCTION, Status
from ctr.registry.promotion import AliasChange, promote, rollback
from ctr.registry.versions import (
    RegistrySnapshot,
    VersionSummary,
    fetch_model,
    load_predictor,
    snapshot,
)

__all__ = ["PREVIOUS", "PRODUCTION", "AliasChange", "Decision", "Evidence", "RegistrySnapshot",
           "Status", "VersionSummary", "decide", "fetch_model", "load_predictor", "promote",
           "rollback", "snapshot"]
