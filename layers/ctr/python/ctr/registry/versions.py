"""Reading the registry: aliases, versions, their summaries, and the one download of a
version's model + feature transform.

MLflow-free at import time: the client is passed in (an `MlflowClient`, or a fake in
tests) and MLflow's own errors are recognised by their `error_code`, so the predict
function, which imports `ctr.bundle` and never MLflow, can import this module too. The
artifact download imports mlflow lazily, only where it runs (reload, train).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import xgboost as xgb

from ctr.clock import iso_from_ms
from ctr.errors import DataError, NotFoundError
from ctr.predictor import Predictor
from ctr.registry import names

# (artifact URI, destination directory) -> local path of what was downloaded.
Downloader = Callable[[str, Path], Path]


def is_mlflow_error(err: BaseException, code: str) -> bool:
    """True when `err` is an MlflowException with this error code (e.g.
    RESOURCE_DOES_NOT_EXIST), without importing mlflow."""
    return getattr(err, "error_code", None) == code


def aliases(client: Any, model_name: str) -> dict[str, int]:
    """alias -> version; {} when the model is not registered yet."""
    try:
        registered = client.get_registered_model(model_name)
    except Exception as err:
        if is_mlflow_error(err, "RESOURCE_DOES_NOT_EXIST"):
            return {}
        raise
    return {alias: int(v) for alias, v in (registered.aliases or {}).items()}


def all_versions(client: Any, model_name: str) -> list[Any]:
    """Every version of `model_name`, newest first, following pagination (note that
    `search_model_versions` does not fill aliases: use `aliases`)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name='{model_name}'", page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return sorted(out, key=lambda v: int(v.version), reverse=True)


def get_version(client: Any, model_name: str, version: int | str) -> Any:
    """One ModelVersion; NotFoundError when it does not exist."""
    try:
        return client.get_model_version(model_name, str(version))
    except Exception as err:
        if is_mlflow_error(err, "RESOURCE_DOES_NOT_EXIST"):
            raise NotFoundError(f"{model_name} version {version} does not exist",
                                model_name=model_name, version=str(version)) from err
        raise


def last_part_of(mv: Any) -> int | None:
    """The newest Parquet part a version was trained or tested on (its `data_last_part`
    tag), None when it has none."""
    value = (getattr(mv, "tags", None) or {}).get(names.TAG_DATA_LAST_PART, "")
    return int(value) if value.isdigit() else None


def run_id_of(mv: Any) -> str:
    if not mv.run_id:
        raise DataError(f"{mv.name} version {mv.version} has no MLflow run",
                        version=str(mv.version))
    return str(mv.run_id)


# --------------------------------------------------------------------------- summaries

class VersionSummary(pydantic.BaseModel):
    """One registered version as `ctr model list`, `/model-info` and the page show it."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    version: int
    aliases: list[str]
    status: str
    status_reason: str | None
    run_id: str | None
    run_name: str | None
    run_status: str | None
    metrics: dict[str, float]
    data_window: str | None
    execution: str | None
    created_at: str | None
    # Each version's metrics are measured on its own holdout (the newest rows when it was
    # trained): `holdout` names those rows, so numbers of different versions are not
    # compared as if they were; `gate` is the comparison the gate made on shared rows.
    holdout: str | None = None
    gate: dict[str, str] = pydantic.Field(default_factory=dict)


class RegistrySnapshot(pydantic.BaseModel):
    """Every version of one model, newest first (stored as `serving/registry.json`)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    model_name: str
    production_version: int | None
    versions: list[VersionSummary]
    generated_at: str | None = None


def status_of(version_aliases: list[str], tags: dict[str, str]) -> str:
    """Aliases are the truth for production/previous; the `status` tag explains the rest."""
    if names.PRODUCTION in version_aliases:
        return names.Status.PRODUCTION
    if names.PREVIOUS in version_aliases:
        return names.Status.PREVIOUS
    status = tags.get(names.TAG_STATUS, "none")
    # A version that lost its alias may still carry an old production/previous tag.
    if status in {names.Status.PRODUCTION, names.Status.PREVIOUS}:
        return names.Status.ARCHIVED
    return status


def run_metrics(run: Any) -> dict[str, float]:
    """The run's summary metrics; per-iteration learning curves (`*_curve`) stay in MLflow."""
    return {k: float(v) for k, v in sorted(run.data.metrics.items())
            if not k.endswith("_curve")}


def _tag_metrics(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for name in (names.TAG_HOLDOUT_LOGLOSS, names.TAG_HOLDOUT_AUC):
        try:
            out[name] = float(tags[name])
        except (KeyError, ValueError):
            continue
    return out


def snapshot(client: Any, model_name: str,
             previous: RegistrySnapshot | None = None) -> RegistrySnapshot:
    """Every registered version with aliases, status, metrics and run facts.

    Run names and metrics never change once a run has finished, so they are reused from
    `previous` (the last snapshot) instead of one `get_run` per version per call.
    """
    by_alias = aliases(client, model_name)
    known = {v.version: v for v in (previous.versions if previous else [])}
    by_version: dict[int, list[str]] = {}
    for alias, v in by_alias.items():
        by_version.setdefault(v, []).append(alias)
    versions = []
    for mv in all_versions(client, model_name):
        number = int(mv.version)
        tags = dict(mv.tags or {})
        cached = known.get(number)
        if cached is not None and cached.run_status == "FINISHED":
            run_name, run_status, metrics = cached.run_name, cached.run_status, cached.metrics
        elif mv.run_id:
            run = client.get_run(mv.run_id)
            run_name, run_status = run.info.run_name, run.info.status
            metrics = {**_tag_metrics(tags), **run_metrics(run)}
        else:
            run_name, run_status, metrics = None, None, _tag_metrics(tags)
        version_aliases = sorted(by_version.get(number, []))
        versions.append(VersionSummary(
            version=number, aliases=version_aliases, status=status_of(version_aliases, tags),
            status_reason=tags.get(names.TAG_STATUS_REASON), run_id=mv.run_id,
            run_name=run_name, run_status=run_status, metrics=dict(sorted(metrics.items())),
            data_window=tags.get(names.TAG_DATA_WINDOW),
            execution=tags.get(names.TAG_EXECUTION),
            created_at=iso_from_ms(mv.creation_timestamp),
            holdout=tags.get(names.TAG_HOLDOUT_ROWS),
            gate={k: tags[k] for k in names.GATE_TAGS if k in tags}))
    return RegistrySnapshot(model_name=model_name,
                            production_version=by_alias.get(names.PRODUCTION),
                            versions=versions)


# --------------------------------------------------------------------------- download

@dataclass(frozen=True)
class FetchedModel:
    """A registered version's booster (re-saved as UBJSON) and transform, as bytes."""

    model_version: Any          # mlflow ModelVersion
    artifact_uri: str           # where the registry says the logged model is
    model_bytes: bytes
    transform_bytes: bytes
    baseline_bytes: bytes | None = None     # the monitoring baseline, when the run has one

    def predictor(self) -> Predictor:
        return Predictor.from_bytes(self.model_bytes, self.transform_bytes)


def mlflow_downloader(tracking_uri: str | None) -> Downloader:
    """Download with MLflow's artifact API (imported here, not at module import)."""
    def download(artifact_uri: str, dst: Path) -> Path:
        from mlflow.artifacts import download_artifacts

        dst.mkdir(parents=True, exist_ok=True)
        return Path(download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst),
                                       tracking_uri=tracking_uri))
    return download


def fetch_model(client: Any, model_name: str, version: int | str,
                downloader: Downloader | None = None) -> FetchedModel:
    """The one download of a version's model and feature transform."""
    download = downloader or mlflow_downloader(getattr(client, "tracking_uri", None))
    mv = get_version(client, model_name, version)
    run_id = run_id_of(mv)
    artifact_uri = str(client.get_model_version_download_uri(model_name, str(mv.version)))
    with tempfile.TemporaryDirectory(prefix="ctr-model-") as tmp:
        model_bytes = _booster_ubj(download(artifact_uri, Path(tmp) / "model"))
        transform_path = client.download_artifacts(run_id, names.TRANSFORM_ARTIFACT, tmp)
        transform_bytes = Path(transform_path).read_bytes()
        baseline_bytes = _optional_artifact(client, run_id, names.BASELINE_ARTIFACT, tmp)
    return FetchedModel(mv, artifact_uri, model_bytes, transform_bytes, baseline_bytes)


def _optional_artifact(client: Any, run_id: str, path: str, tmp: str) -> bytes | None:
    """A run artifact that older runs do not have (listed first: a missing artifact is an
    answer, not an error)."""
    parent = path.rsplit("/", 1)[0]
    if path not in {f.path for f in client.list_artifacts(run_id, parent)}:
        return None
    return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def load_predictor(client: Any, model_name: str, version: int | str,
                   downloader: Downloader | None = None) -> Predictor:
    """Booster + transform of a registered version, ready to score."""
    return fetch_model(client, model_name, version, downloader).predictor()


def _booster_ubj(model_dir: Path) -> bytes:
    """Re-save the logged booster as UBJSON, whatever format MLflow logged it in."""
    booster = xgb.Booster()
    booster.load_model(str(_xgboost_data_file(model_dir)))
    return bytes(booster.save_raw(raw_format="ubj"))


def _xgboost_data_file(model_dir: Path) -> Path:
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        import yaml  # an mlflow dependency; only reload and train (which have mlflow) get here

        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        data = flavors.get("xgboost", {}).get("data")
        if data and (model_dir / data).is_file():
            return model_dir / data
    candidates = sorted(p for p in model_dir.glob("model.*") if p.suffix in {".ubj", ".json"})
    if not candidates:
        raise DataError(f"no XGBoost model file in the logged model at {model_dir}")
    return candidates[0]
