"""The train step: skip when nothing is new, else train on the newest window, log the
run, register a version and gate its promotion.

A run is registered as `candidate` first; if the gate never ran (a crash between
register and gate), the next invocation finishes the gate for that version instead of
training again. MLflow outages become `TransientError`, which the state machine retries.
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient

from ctr.registry import gate as gating
from ctr.registry import names, runlog, versions
from ctr.steps import TrainResult
from ctr.storage import Store
from ctr.training import DEFAULT_MAX_TRAIN_ROWS, TrainParams, fit, load_window, newest_part_index

log = logging.getLogger(__name__)


def last_trained_part(client: MlflowClient, model_name: str) -> int | None:
    """Highest Parquet part index any registered version was trained or tested on."""
    parts = [int(v.tags[names.TAG_DATA_LAST_PART])
             for v in versions.all_versions(client, model_name)
             if (v.tags or {}).get(names.TAG_DATA_LAST_PART, "").isdigit()]
    return max(parts) if parts else None


def train_and_register(store: Store, client: MlflowClient, *, model_name: str,
                       experiment_name: str, params: TrainParams | None = None,
                       max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS,
                       tolerance: float = 0.0, execution: str = "manual",
                       force: bool = False) -> TrainResult:
    """The whole train step (see the module docstring)."""
    with runlog.mlflow_outage_is_transient():
        newest = newest_part_index(store)
        if newest is None:
            return _skipped("no parquet parts yet")
        pending = next((v for v in versions.all_versions(client, model_name)
                        if (v.tags or {}).get(names.TAG_STATUS) == names.Status.CANDIDATE),
                       None)
        if pending is not None:
            return _finish_pending_gate(store, client, model_name, int(pending.version),
                                        tolerance)
        trained_up_to = last_trained_part(client, model_name)
        if not force and trained_up_to is not None and newest <= trained_up_to:
            return _skipped(f"no new data: newest parquet part is {newest} and a version "
                            f"was already trained on parts up to {trained_up_to}")

        window = load_window(store, max_train_rows)
        result = fit(window.train, window.holdout, params)
        run_id, model_info = runlog.log_run(
            client, runlog.ensure_experiment(client, experiment_name), result, window,
            bucket=store.bucket, max_train_rows=max_train_rows, execution=execution)
        version = runlog.register(client, model_name, run_id, model_info, result, window,
                                  execution)
        decision = gating.gate(client, model_name, version, result.predictor,
                               window.holdout, tolerance)
        if decision.production_logloss is not None:
            client.log_metric(run_id, "production_holdout_logloss",
                              decision.production_logloss)
        return TrainResult(status="trained", version=version, promoted=decision.promoted,
                           reason=decision.reason, metrics=result.metrics, run_id=run_id)


def _finish_pending_gate(store: Store, client: MlflowClient, model_name: str,
                         version: int, tolerance: float) -> TrainResult:
    """A version registered by a run that stopped before its gate: gate it now on the
    newest holdout (both models are scored on the same rows, so it stays fair)."""
    log.warning("%s v%s was never gated; gating it now", model_name, version)
    holdout = load_window(store, max_train_rows=1).holdout
    decision = gating.gate(client, model_name, version,
                           versions.load_predictor(client, model_name, version), holdout,
                           tolerance)
    run_id = versions.run_id_of(versions.get_version(client, model_name, version))
    return TrainResult(status="trained", version=version, promoted=decision.promoted,
                       reason=f"resumed gate: {decision.reason}",
                       metrics=versions.run_metrics(client.get_run(run_id)), run_id=run_id)


def _skipped(reason: str) -> TrainResult:
    return TrainResult(status="skipped", version=None, promoted=False, reason=reason,
                       metrics={}, run_id=None)
