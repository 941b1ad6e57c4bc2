"""The train step: skip unless there is enough new data, else train on the newest
window, log the run, register a version and gate its promotion.

* Minimum evidence: a run trains only when at least `min_new_rows` rows arrived after
  the data the production version was trained on (all rows, before a first model), and
  some part is newer than every registered version's data (a rejected candidate is not
  retrained on the same rows). Otherwise it ends as "skipped" with the reason, cleanly,
  with nothing registered.
* A run is registered as `candidate` first; if the gate never ran (a crash between
  register and gate), the next invocation finishes the gate for that version instead of
  training again. MLflow outages become `TransientError`, which the state machine retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mlflow import MlflowClient

from ctr.monitoring.baseline import MAX_ROWS as BASELINE_ROWS
from ctr.monitoring.baseline import build_baseline
from ctr.registry import audit, names, runlog, versions
from ctr.registry import gate as gating
from ctr.registry.decision import GatePolicy
from ctr.steps import TrainResult
from ctr.storage import Store
from ctr.stream_training import fit_window, plan_window, read_role
from ctr.training import NotEnoughData, TrainParams, WindowSpec, newest_part_index, rows_after

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainPolicy:
    """Everything the stack parameters decide about a training run besides the model."""

    window: WindowSpec = field(default_factory=WindowSpec)
    gate: GatePolicy = field(default_factory=GatePolicy)
    # Half the default holdout: a new version is judged on rows that are mostly new.
    min_new_rows: int = 100_000


def last_trained_part(client: MlflowClient, model_name: str) -> int | None:
    """Highest Parquet part index any registered version was trained or tested on."""
    parts = [p for v in versions.all_versions(client, model_name)
             if (p := versions.last_part_of(v)) is not None]
    return max(parts) if parts else None


def production_last_part(client: MlflowClient, model_name: str) -> int | None:
    """The newest part the production version saw (None: no production version)."""
    current = versions.aliases(client, model_name).get(names.PRODUCTION)
    if current is None:
        return None
    return versions.last_part_of(versions.get_version(client, model_name, current))


def train_and_register(store: Store, client: MlflowClient, *, model_name: str,
                       experiment_name: str, params: TrainParams | None = None,
                       policy: TrainPolicy | None = None, execution: str = "manual",
                       force: bool = False, recorder: audit.Recorder | None = None
                       ) -> TrainResult:
    """The whole train step (see the module docstring). `force` skips the evidence
    checks (tests, a manual retrain), never the gate. `recorder` appends the registry
    events (registered, promoted, rejected) to the audit trail and EventBridge."""
    policy = policy or TrainPolicy()
    with runlog.mlflow_outage_is_transient():
        newest = newest_part_index(store)
        if newest is None:
            return _skipped("no parquet parts yet")
        pending = next((v for v in versions.all_versions(client, model_name)
                        if (v.tags or {}).get(names.TAG_STATUS) == names.Status.CANDIDATE),
                       None)
        if pending is not None:
            return _finish_pending_gate(store, client, model_name, int(pending.version),
                                        policy, recorder)
        if not force:
            reason = _why_not_train(store, client, model_name, newest, policy)
            if reason:
                return _skipped(reason)
        try:
            # Streamed: the training rows are never held at once (ctr.stream_training).
            window, result = fit_window(store, policy.window, params)
        except NotEnoughData as err:
            return _skipped(err.message)
        # What monitoring compares new parts and served traffic with (issue 14).
        baseline = build_baseline(read_role(store, window, "training", BASELINE_ROWS),
                                  result.holdout_predictions, result.predictor.transform)
        run_id, model_info = runlog.log_run(
            client, runlog.ensure_experiment(client, experiment_name), result, window,
            bucket=store.bucket, max_train_rows=policy.window.max_rows, execution=execution,
            baseline=baseline)
        version = runlog.register(client, model_name, run_id, model_info, result, window,
                                  execution)
        current = versions.aliases(client, model_name)
        audit.record_registered(recorder, model_name=model_name, version=version,
                                production=current.get(names.PRODUCTION),
                                previous=current.get(names.PREVIOUS),
                                numbers=dict(result.metrics))
        decision = gating.gate(client, model_name, version, result.predictor,
                               window.holdout, policy.gate,
                               prior=result.metrics["positive_rate"], recorder=recorder)
        runlog.log_decision(client, run_id, decision)
        return TrainResult(status="trained", version=version, promoted=decision.promoted,
                           reason=decision.reason, metrics=result.metrics, run_id=run_id)


def _why_not_train(store: Store, client: MlflowClient, model_name: str, newest: int,
                   policy: TrainPolicy) -> str | None:
    trained_up_to = last_trained_part(client, model_name)
    if trained_up_to is not None and newest <= trained_up_to:
        return (f"no new data: newest parquet part is {newest} and a version was "
                f"already trained on parts up to {trained_up_to}")
    since = production_last_part(client, model_name)
    new_rows = rows_after(store, since, policy.min_new_rows)
    if new_rows < policy.min_new_rows:
        after = "in all parts" if since is None else f"after part {since}"
        return (f"not enough new data: {new_rows} of {policy.min_new_rows} rows "
                f"(MinNewRows) {after}, the data of the production version")
    return None


def _finish_pending_gate(store: Store, client: MlflowClient, model_name: str,
                         version: int, policy: TrainPolicy,
                         recorder: audit.Recorder | None) -> TrainResult:
    """A version registered by a run that stopped before its gate: gate it now on the
    newest holdout (both models are scored on the same rows, so it stays fair)."""
    log.warning("%s v%s was never gated; gating it now", model_name, version)
    run_id = versions.run_id_of(versions.get_version(client, model_name, version))
    run = client.get_run(run_id)
    holdout = read_role(store, plan_window(store, policy.window), "holdout")
    audit.record_registered(recorder, model_name=model_name, version=version)
    decision = gating.gate(client, model_name, version,
                           versions.load_predictor(client, model_name, version), holdout,
                           policy.gate, prior=run.data.metrics.get("positive_rate"),
                           recorder=recorder)
    runlog.log_decision(client, run_id, decision)
    return TrainResult(status="trained", version=version, promoted=decision.promoted,
                       reason=f"resumed gate: {decision.reason}",
                       metrics=versions.run_metrics(client.get_run(run_id)), run_id=run_id)


def _skipped(reason: str) -> TrainResult:
    return TrainResult(status="skipped", version=None, promoted=False, reason=reason,
                       metrics={}, run_id=None)
