"""MLflow side of training: log the run, register the version, gate the promotion,
and the operator actions `promote`, `rollback`, `list_versions`.

Promotion uses registry *aliases* (stages are deprecated since MLflow 2.9):

* `production`: what serving exports. A new version gets it only if its holdout
  logloss is no worse (within `tolerance`) than the current production model's
  logloss *on the same holdout rows*: the production model's booster and transform
  are loaded from MLflow and scored on this run's holdout, so the comparison is never
  between numbers measured on different data.
* `previous`: the production version before the last promotion; `rollback` moves
  `production` back to it.

Every version carries the tags `status` (candidate, production, previous, rejected,
archived), `status_reason`, `data_window`, `data_last_part`, `execution`,
`holdout_logloss`, `holdout_auc`; a gated version also carries the comparison
(`compared_with_version`, `production_holdout_logloss`, `promotion_tolerance`).
Aliases are the truth for production/previous; tags explain the history.

Idempotency: tags are written before the alias that they describe moves, and the
production alias moves last, so a call interrupted at any point and repeated ends in
the same state. A run is registered as `candidate` first; if the gate never ran (a
crash), the next invocation finishes the gate for that version instead of skipping.

All functions take an `MlflowClient`; logging the run and the model uses MLflow's
fluent API pointed at that client's tracking URI for the duration of the call.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from ctr import metrics as m
from ctr import plots
from ctr.errors import DataError, NoModelError, NotFoundError, TransientError, ValidationError
from ctr.features import FEATURE_NAMES, FeatureTransform
from ctr.predictor import MODEL_FILE, Predictor
from ctr.model_versions import all_versions
from ctr.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
from ctr.storage import Store
from ctr.training import (
    DEFAULT_MAX_TRAIN_ROWS,
    TrainParams,
    TrainResult,
    load_window,
    newest_part_index,
    params_dict,
    train,
)

log = logging.getLogger(__name__)

PRODUCTION = "production"
PREVIOUS = "previous"
TRANSFORM_ARTIFACT_DIR = "feature_transform"
TRANSFORM_ARTIFACT = f"{TRANSFORM_ARTIFACT_DIR}/feature_transform.json"
PLOTS_ARTIFACT_DIR = "plots"

STATUS_CANDIDATE = "candidate"
STATUS_PRODUCTION = "production"
STATUS_PREVIOUS = "previous"
STATUS_REJECTED = "rejected"
STATUS_ARCHIVED = "archived"

_TRANSIENT_MLFLOW_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE",
                           "REQUEST_LIMIT_EXCEEDED"}


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    production_version: int | None = None
    production_logloss: float | None = None


# --------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _tracking(client: MlflowClient) -> Iterator[None]:
    """Point MLflow's fluent API at `client`'s server for the duration of the block."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _is(err: MlflowException, code: str) -> bool:
    return getattr(err, "error_code", None) == code


def _aliases(client: MlflowClient, model_name: str) -> dict[str, str]:
    """alias -> version (strings); {} when the model is not registered yet."""
    try:
        aliases = client.get_registered_model(model_name).aliases or {}
    except MlflowException as err:
        if _is(err, "RESOURCE_DOES_NOT_EXIST"):
            return {}
        raise
    return {alias: str(version) for alias, version in aliases.items()}


def _versions(client: MlflowClient, model_name: str) -> list[ModelVersion]:
    """All versions, newest first."""
    return sorted(all_versions(client, model_name), key=lambda v: int(v.version), reverse=True)


def _get_version(client: MlflowClient, model_name: str, version: int | str) -> ModelVersion:
    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as err:
        if _is(err, "RESOURCE_DOES_NOT_EXIST"):
            raise NotFoundError(f"{model_name} version {version} does not exist",
                                model_name=model_name, version=str(version)) from err
        raise


def _run_id(mv: ModelVersion) -> str:
    if not mv.run_id:
        raise DataError(f"{mv.name} version {mv.version} has no MLflow run",
                        version=str(mv.version))
    return str(mv.run_id)


def _set_tags(client: MlflowClient, model_name: str, version: int | str,
              tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value))


def _now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")


def ensure_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as err:       # created concurrently by another run
        if not _is(err, "RESOURCE_ALREADY_EXISTS"):
            raise
        found = client.get_experiment_by_name(name)
        assert found is not None
        return str(found.experiment_id)


def ensure_registered_model(client: MlflowClient, model_name: str) -> None:
    try:
        client.create_registered_model(
            model_name, description="Criteo click-through-rate model (XGBoost + "
                                    "feature transform); alias 'production' is served.")
    except MlflowException as err:
        if not _is(err, "RESOURCE_ALREADY_EXISTS"):
            raise


def last_trained_part(client: MlflowClient, model_name: str) -> int | None:
    """Highest Parquet part index any registered version was trained or tested on."""
    parts = [int(v.tags["data_last_part"]) for v in _versions(client, model_name)
             if (v.tags or {}).get("data_last_part", "").isdigit()]
    return max(parts) if parts else None


def load_predictor(client: MlflowClient, model_name: str, version: int | str) -> Predictor:
    """Booster + transform of a registered version, from its MLflow artifacts."""
    mv = _get_version(client, model_name, version)
    run_id = _run_id(mv)
    uri = client.get_model_version_download_uri(model_name, str(mv.version))
    with tempfile.TemporaryDirectory(prefix="ctr-model-") as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(Path(tmp) / "model"),
            tracking_uri=client.tracking_uri))
        transform_path = client.download_artifacts(run_id, TRANSFORM_ARTIFACT, tmp)
        booster = xgb.Booster()
        booster.load_model(str(model_dir / MODEL_FILE))
        return Predictor(booster, FeatureTransform.from_json(Path(transform_path).read_bytes()))


# --------------------------------------------------------------------------- logging

def _dataset_schema() -> Schema:
    specs: list[Any] = [ColSpec("long", LABEL), *(ColSpec("long", c) for c in INT_COLUMNS),
                        *(ColSpec("string", c) for c in CAT_COLUMNS)]
    return Schema(specs)


def log_run(client: MlflowClient, experiment_id: str, result: TrainResult, *,
            bucket: str, max_train_rows: int, execution: str) -> tuple[str, Any]:
    """One MLflow run with params, metrics, learning curve, dataset inputs, plots, the
    transform and the model. Returns (run_id, ModelInfo)."""
    window = result.window
    if window is None:
        raise ValueError("log_run needs a TrainResult from ctr.training.train (with its window)")
    predictor = result.predictor
    with _tracking(client), mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"train-{execution}-{datetime.now(tz=UTC):%Y%m%dT%H%M%S}") as run:
        run_id = run.info.run_id
        mlflow.log_params(params_dict(result.params, max_train_rows))
        mlflow.log_metrics(result.metrics)
        curve = [Metric(f"{data}_{name}_curve", float(v), 0, step)
                 for data, by_metric in result.evals_result.items()
                 for name, values in by_metric.items()
                 for step, v in enumerate(values)]
        for start in range(0, len(curve), 1000):   # MLflow's log_batch limit
            client.log_batch(run_id, metrics=curve[start:start + 1000])
        for part in window.parts:
            dataset = MetaDataset(  # type: ignore[abstract]  # concrete at runtime
                resolve_dataset_source(f"s3://{bucket}/{part.key}"),
                name=part.key, digest=part.digest, schema=_dataset_schema())
            mlflow.log_input(dataset, context=part.role)
        mlflow.set_tags({"execution": execution, "data_window": window.describe()})
        mlflow.log_dict(predictor.transform.to_dict(), TRANSFORM_ARTIFACT)
        with tempfile.TemporaryDirectory(prefix="ctr-plots-") as tmp:
            for name, png in plots.all_plots(result.holdout_labels, result.holdout_predictions,
                                             predictor.booster, result.evals_result).items():
                (Path(tmp) / name).write_bytes(png)
            mlflow.log_artifacts(tmp, PLOTS_ARTIFACT_DIR)
        example = predictor.transform.encode(window.holdout.slice(0, 5))
        signature = ModelSignature(
            inputs=Schema(list[Any]([ColSpec("float", c) for c in FEATURE_NAMES])),
            outputs=Schema(list[Any]([ColSpec("double", "click_probability")])))
        model_info = mlflow.xgboost.log_model(
            predictor.booster, name="model", signature=signature,
            input_example=_example_frame(example),
            pip_requirements=[f"xgboost-cpu=={xgb.__version__}"],
            metadata={"feature_transform_artifact": TRANSFORM_ARTIFACT,
                      "note": "input is FeatureTransform.encode(raw table); see "
                              "feature_transform/feature_transform.json"})
    return run_id, model_info


def _example_frame(encoded: np.ndarray) -> Any:
    import pandas as pd  # only for MLflow's input example; training itself avoids pandas

    return pd.DataFrame(encoded, columns=FEATURE_NAMES)


# --------------------------------------------------------------------------- gating

def gate(client: MlflowClient, model_name: str, version: int | str,
         candidate: Predictor, holdout: pa.Table, tolerance: float) -> Decision:
    """Promote `version` if it is no worse than production on `holdout`, else reject
    it with the reason and the numbers. Production is untouched on rejection."""
    aliases = _aliases(client, model_name)
    current = aliases.get(PRODUCTION)
    y = holdout.column(LABEL).to_numpy().astype(np.float64)
    cand_ll = m.logloss(y, candidate.predict_table(holdout))
    if current == str(version):
        return Decision(True, "already production", int(current))
    production = _load_production(client, model_name, current)
    if current is None:
        decision = Decision(True, "first model: no production version to compare with")
    elif production is None:
        decision = Decision(True, f"production v{current} was written in a transform "
                                  "format this code cannot load; the new version replaces it",
                            int(current))
    else:
        prod_ll = m.logloss(y, production.predict_table(holdout))
        better = cand_ll <= prod_ll + tolerance
        verdict = "no worse than" if better else "worse than"
        decision = Decision(
            better,
            f"holdout logloss {cand_ll:.6f} is {verdict} production v{current}'s "
            f"{prod_ll:.6f} on the same {len(y)} holdout rows (tolerance {tolerance:g})",
            int(current), prod_ll)
        _set_tags(client, model_name, version, {
            "compared_with_version": current,
            "production_holdout_logloss": f"{prod_ll:.6f}",
            "candidate_holdout_logloss": f"{cand_ll:.6f}",
            "promotion_tolerance": f"{tolerance:g}",
        })
    if decision.promoted:
        promote(client, model_name, version, reason=decision.reason)
    else:
        _set_tags(client, model_name, version,
                  {"status": STATUS_REJECTED, "status_reason": decision.reason})
    return decision


def _load_production(client: MlflowClient, model_name: str,
                     current: str | None) -> Predictor | None:
    """The production model, or None when there is none or it was written in a transform
    format this code cannot read (after a code upgrade): serving runs the same code and
    could not load it either, and keeping it would reject every future version. Any other
    failure (MLflow down, ...) propagates, so the step is retried rather than promoting
    blindly."""
    if current is None:
        return None
    try:
        return load_predictor(client, model_name, current)
    except ValidationError:
        return None


def promote(client: MlflowClient, model_name: str, version: int | str,
            reason: str = "manual promotion") -> dict[str, Any]:
    """Give `version` the alias `production`; the former production becomes
    `previous`; the former previous is archived. Idempotent."""
    version = str(_get_version(client, model_name, version).version)
    aliases = _aliases(client, model_name)
    current, prev = aliases.get(PRODUCTION), aliases.get(PREVIOUS)
    if current == version:
        _set_tags(client, model_name, version, {"status": STATUS_PRODUCTION})
        return {"status": "unchanged", "production": int(version),
                "previous": None if prev is None else int(prev)}
    if prev is not None and prev not in (current, version):
        _set_tags(client, model_name, prev, {
            "status": STATUS_ARCHIVED,
            "status_reason": f"replaced as previous by v{current} at {_now()}"})
    if current is not None:
        _set_tags(client, model_name, current, {
            "status": STATUS_PREVIOUS,
            "status_reason": f"replaced in production by v{version} at {_now()}"})
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    elif prev == version:
        client.delete_registered_model_alias(model_name, PREVIOUS)
    _set_tags(client, model_name, version,
              {"status": STATUS_PRODUCTION, "status_reason": reason})
    client.set_registered_model_alias(model_name, PRODUCTION, version)
    log.info("%s v%s promoted to production (%s)", model_name, version, reason)
    return {"status": "promoted", "production": int(version),
            "previous": None if current is None else int(current)}


def rollback(client: MlflowClient, model_name: str,
             reason: str = "operator rollback") -> dict[str, Any]:
    """production <- previous. The rolled-back version is archived with the reason and
    `previous` is cleared (there is no older `previous` to fall back to). Repeating it
    is a no-op that says so."""
    aliases = _aliases(client, model_name)
    current, prev = aliases.get(PRODUCTION), aliases.get(PREVIOUS)
    if current is None:
        raise NoModelError(f"{model_name} has no production version", model_name=model_name)
    if prev is None:
        return {"status": "unchanged", "production": int(current), "previous": None,
                "reason": f"no version holds alias {PREVIOUS!r}: nothing to roll back to"}
    if prev != current:       # (equal only when an earlier call stopped half-way)
        _set_tags(client, model_name, current, {
            "status": STATUS_ARCHIVED,
            "status_reason": f"rolled back to v{prev} at {_now()}: {reason}"})
        _set_tags(client, model_name, prev, {
            "status": STATUS_PRODUCTION,
            "status_reason": f"restored by rollback from v{current} at {_now()}: {reason}"})
        client.set_registered_model_alias(model_name, PRODUCTION, prev)
    client.delete_registered_model_alias(model_name, PREVIOUS)
    log.info("%s rolled back: production v%s -> v%s", model_name, current, prev)
    return {"status": "rolled_back", "production": int(prev), "rolled_back": int(current),
            "previous": None}


def list_versions(client: MlflowClient, model_name: str) -> list[dict[str, Any]]:
    """Every version, newest first, with aliases, status, tags and run metrics."""
    aliases = _aliases(client, model_name)
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    out = []
    for mv in _versions(client, model_name):
        tags = dict(mv.tags or {})
        run = client.get_run(mv.run_id) if mv.run_id else None
        out.append({
            "version": int(mv.version),
            "aliases": sorted(by_version.get(str(mv.version), [])),
            "status": tags.get("status"),
            "status_reason": tags.get("status_reason"),
            "run_id": mv.run_id,
            "run_name": run.info.run_name if run else None,
            "metrics": dict(run.data.metrics) if run else {},
            "data_window": tags.get("data_window"),
            "execution": tags.get("execution"),
            "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC)
                          .isoformat(timespec="seconds"),
            "tags": tags,
        })
    return out


# --------------------------------------------------------------------------- the train step

def register(client: MlflowClient, model_name: str, run_id: str, model_info: Any,
             result: TrainResult, execution: str) -> int:
    """A new version, tagged `candidate` until the gate decides."""
    ensure_registered_model(client, model_name)
    window = result.window
    tags = {
        "status": STATUS_CANDIDATE,
        "status_reason": "registered, awaiting the promotion gate",
        "execution": execution,
        "holdout_logloss": f"{result.metrics['holdout_logloss']:.6f}",
        "holdout_auc": f"{result.metrics['holdout_auc']:.6f}",
    }
    if window is not None:
        tags |= {"data_window": window.describe(), "data_last_part": str(window.last_part)}
    # The SQL registry store resolves a `models:/` source through the *global*
    # tracking URI (an MLflow TODO), so point it at this client for the call.
    with _tracking(client):
        mv = client.create_model_version(model_name, source=model_info.model_uri,
                                         run_id=run_id, tags=tags,
                                         model_id=model_info.model_id)
    return int(mv.version)


@contextlib.contextmanager
def _mlflow_outage_is_transient() -> Iterator[None]:
    """An unreachable or failing tracking server (after the MLflow client's own HTTP
    retries) becomes TransientError, which the state machine retries; request errors
    such as a bad parameter stay what they are."""
    try:
        yield
    except MlflowException as err:
        if err.error_code in _TRANSIENT_MLFLOW_CODES:
            raise TransientError(f"MLflow tracking server failed: {err.message}",
                                 error_code=err.error_code) from err
        raise


def train_and_register(store: Store, client: MlflowClient, *, model_name: str,
                       experiment_name: str, params: TrainParams | None = None,
                       max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS,
                       tolerance: float = 0.0, execution: str = "manual",
                       force: bool = False) -> dict[str, Any]:
    """The whole train step: skip if nothing is new, else train, log, register, gate.

    Returns {"status": "trained"|"skipped", "version", "promoted", "reason",
    "metrics", "run_id"}.
    """
    with _mlflow_outage_is_transient():
        return _train_and_register(store, client, model_name=model_name,
                                   experiment_name=experiment_name, params=params,
                                   max_train_rows=max_train_rows, tolerance=tolerance,
                                   execution=execution, force=force)


def _train_and_register(store: Store, client: MlflowClient, *, model_name: str,
                        experiment_name: str, params: TrainParams | None,
                        max_train_rows: int, tolerance: float, execution: str,
                        force: bool) -> dict[str, Any]:
    newest = newest_part_index(store)
    if newest is None:
        return _skipped("no parquet parts yet")
    pending = next((v for v in _versions(client, model_name)
                    if (v.tags or {}).get("status") == STATUS_CANDIDATE), None)
    if pending is not None:
        return _finish_pending_gate(store, client, model_name, pending, tolerance)
    trained_up_to = last_trained_part(client, model_name)
    if not force and trained_up_to is not None and newest <= trained_up_to:
        return _skipped(f"no new data: newest parquet part is {newest} and a version "
                        f"was already trained on parts up to {trained_up_to}")

    result = train(store, params, max_train_rows)
    assert result.window is not None
    run_id, model_info = log_run(client, ensure_experiment(client, experiment_name), result,
                                 bucket=store.bucket, max_train_rows=max_train_rows,
                                 execution=execution)
    version = register(client, model_name, run_id, model_info, result, execution)
    decision = gate(client, model_name, version, result.predictor, result.window.holdout,
                    tolerance)
    if decision.production_logloss is not None:
        client.log_metric(run_id, "production_holdout_logloss", decision.production_logloss)
    return {"status": "trained", "version": version, "promoted": decision.promoted,
            "reason": decision.reason, "metrics": result.metrics, "run_id": run_id}


def _finish_pending_gate(store: Store, client: MlflowClient, model_name: str,
                         pending: ModelVersion, tolerance: float) -> dict[str, Any]:
    """A version registered by a run that stopped before its gate: gate it now on the
    newest holdout (both models are scored on the same rows, so it stays fair)."""
    log.warning("%s v%s was never gated; gating it now", model_name, pending.version)
    holdout = load_window(store, max_train_rows=1).holdout
    decision = gate(client, model_name, pending.version,
                    load_predictor(client, model_name, pending.version), holdout, tolerance)
    run = client.get_run(_run_id(pending))
    return {"status": "trained", "version": int(pending.version),
            "promoted": decision.promoted, "reason": f"resumed gate: {decision.reason}",
            "metrics": dict(run.data.metrics), "run_id": pending.run_id}


def _skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "version": None, "promoted": False, "reason": reason,
            "metrics": {}, "run_id": None}
