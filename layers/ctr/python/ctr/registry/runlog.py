"""Writing to MLflow: one run per training (params, metrics, learning curves, dataset
inputs, plots, the transform and the model) and its registered version.

Logging uses MLflow's fluent API pointed at the given client's tracking URI for the
duration of the call (`tracking`), so no process-wide state leaks between clients.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from ctr import plots
from ctr.errors import TransientError
from ctr.features import FEATURE_NAMES
from ctr.monitoring.baseline import Baseline
from ctr.registry import names
from ctr.registry.decision import Decision
from ctr.registry.versions import is_mlflow_error
from ctr.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
from ctr.training import FitResult, WindowViews, params_dict

_TRANSIENT_MLFLOW_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE",
                           "REQUEST_LIMIT_EXCEEDED"}
_LOG_BATCH_LIMIT = 1000          # metrics per MLflow log_batch call


@contextlib.contextmanager
def tracking(client: MlflowClient) -> Iterator[None]:
    """Point MLflow's fluent API at `client`'s server for the duration of the block."""
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


@contextlib.contextmanager
def mlflow_outage_is_transient() -> Iterator[None]:
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


def ensure_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException as err:       # created concurrently by another run
        if not is_mlflow_error(err, "RESOURCE_ALREADY_EXISTS"):
            raise
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def ensure_registered_model(client: MlflowClient, model_name: str) -> None:
    try:
        client.create_registered_model(
            model_name, description="Criteo click-through-rate model (XGBoost + "
                                    "feature transform); alias 'production' is served.")
    except MlflowException as err:
        if not is_mlflow_error(err, "RESOURCE_ALREADY_EXISTS"):
            raise


def _dataset_schema() -> Schema:
    specs: list[Any] = [ColSpec("long", LABEL), *(ColSpec("long", c) for c in INT_COLUMNS),
                        *(ColSpec("string", c) for c in CAT_COLUMNS)]
    return Schema(specs)


def log_run(client: MlflowClient, experiment_id: str, result: FitResult, window: WindowViews, *,
            bucket: str, max_train_rows: int, execution: str,
            baseline: Baseline | None = None) -> tuple[str, ModelInfo]:
    """One MLflow run with params, metrics, learning curve, dataset inputs, plots, the
    transform, the monitoring baseline and the model. Returns (run_id, ModelInfo)."""
    predictor = result.predictor
    with tracking(client), mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"train-{execution}-{datetime.now(tz=UTC):%Y%m%dT%H%M%S}") as run:
        run_id = run.info.run_id
        mlflow.log_params(params_dict(result.params, max_train_rows))
        mlflow.log_metrics(result.metrics)
        curve = [Metric(f"{data}_{name}_curve", float(v), 0, step)
                 for data, by_metric in result.evals_result.items()
                 for name, values in by_metric.items()
                 for step, v in enumerate(values)]
        for start in range(0, len(curve), _LOG_BATCH_LIMIT):
            client.log_batch(run_id, metrics=curve[start:start + _LOG_BATCH_LIMIT])
        for piece in window.slices:
            dataset = MetaDataset(  # type: ignore[abstract]  # concrete at runtime
                resolve_dataset_source(f"s3://{bucket}/{piece.key}"),
                name=f"{piece.key}[{piece.offset}:{piece.offset + piece.rows}]",
                digest=piece.digest, schema=_dataset_schema())
            mlflow.log_input(dataset, context=piece.role)
        mlflow.set_tags({names.TAG_EXECUTION: execution,
                         names.TAG_DATA_WINDOW: window.describe(), **_range_tags(window)})
        mlflow.log_dict({"slices": [asdict(piece) for piece in window.slices]},
                        names.DATA_RANGES_ARTIFACT)
        mlflow.log_dict(predictor.transform.to_dict(), names.TRANSFORM_ARTIFACT)
        if baseline is not None:
            mlflow.log_dict(baseline.model_dump(mode="json"), names.BASELINE_ARTIFACT)
        with tempfile.TemporaryDirectory(prefix="ctr-plots-") as tmp:
            for name, png in plots.all_plots(result.holdout_labels, result.holdout_predictions,
                                             predictor.booster, result.evals_result).items():
                (Path(tmp) / name).write_bytes(png)
            mlflow.log_artifacts(tmp, names.PLOTS_ARTIFACT_DIR)
        example = predictor.transform.encode(window.holdout.slice(0, 5))
        signature = ModelSignature(
            inputs=Schema(list[Any]([ColSpec("float", c) for c in FEATURE_NAMES])),
            outputs=Schema(list[Any]([ColSpec("double", "click_probability")])))
        model_info = mlflow.xgboost.log_model(
            predictor.booster, name=names.MODEL_ARTIFACT, signature=signature,
            input_example=_example_frame(example),
            pip_requirements=[f"xgboost-cpu=={xgb.__version__}"],
            metadata={"feature_transform_artifact": names.TRANSFORM_ARTIFACT,
                      "note": "input is FeatureTransform.encode(raw table); see "
                              f"{names.TRANSFORM_ARTIFACT}"})
    return run_id, model_info


def _example_frame(encoded: np.ndarray) -> Any:
    import pandas as pd  # only for MLflow's input example; training itself avoids pandas

    return pd.DataFrame(encoded, columns=FEATURE_NAMES)


def register(client: MlflowClient, model_name: str, run_id: str, model_info: ModelInfo,
             result: FitResult, window: WindowViews, execution: str) -> int:
    """A new version, tagged `candidate` until the gate decides."""
    ensure_registered_model(client, model_name)
    tags = {
        names.TAG_STATUS: str(names.Status.CANDIDATE),
        names.TAG_STATUS_REASON: "registered, awaiting the promotion gate",
        names.TAG_EXECUTION: execution,
        names.TAG_HOLDOUT_LOGLOSS: f"{result.metrics['holdout_logloss']:.6f}",
        names.TAG_HOLDOUT_AUC: f"{result.metrics['holdout_auc']:.6f}",
        names.TAG_DATA_WINDOW: window.describe(),
        names.TAG_DATA_LAST_PART: str(window.last_part),
        **_range_tags(window),
    }
    # The SQL registry store resolves a `models:/` source through the *global*
    # tracking URI (an MLflow TODO), so point it at this client for the call.
    with tracking(client):
        mv = client.create_model_version(model_name, source=model_info.model_uri,
                                         run_id=run_id, tags=tags,
                                         model_id=model_info.model_id)
    return int(mv.version)


_TAG_LIMIT = 5000          # MLflow's maximum tag value length


def _range_tags(window: WindowViews) -> dict[str, str]:
    """The exact rows of each role (part[offset:end]@digest), as run and version tags."""
    return {f"data_{role}_rows": window.ranges(role)[:_TAG_LIMIT]
            for role in ("training", "validation", "holdout")}


def log_decision(client: MlflowClient, run_id: str, decision: Decision) -> None:
    """The gate's numbers in the run's summary: finite numbers as metrics, all as tags."""
    numbers = decision.numbers()
    metrics = []
    for key, value in numbers.items():
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            metrics.append(Metric(f"gate_{key}" if not key.startswith("gate_") else key,
                                  number, 0, 0))
    if decision.production_logloss is not None:
        metrics.append(Metric("production_holdout_logloss", decision.production_logloss, 0, 0))
    client.log_batch(run_id, metrics=metrics,
                     tags=[RunTag(f"gate.{k}", v) for k, v in numbers.items()]
                     + [RunTag("gate.promoted", str(decision.promoted)),
                        RunTag("gate.reason", decision.reason[:_TAG_LIMIT])])


def log_fresh_metrics(client: MlflowClient, run_id: str, values: dict[str, float],
                      step: int) -> None:
    """The monitor's figures of one fresh part on a version's run, as a time series
    (step = part index), so the MLflow UI plots quality over parts."""
    now = int(datetime.now(tz=UTC).timestamp() * 1000)
    batch = [Metric(key, float(v), now, step) for key, v in values.items()
             if math.isfinite(v)]
    if batch:
        client.log_batch(run_id, metrics=batch)
