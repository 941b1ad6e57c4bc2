"""Serving bundles: the bridge between the MLflow registry and the predict function.

Reload (`publish_production`) resolves the registry alias `production`, exports that
version as an immutable bundle under `serving/v{N}/` and then moves the pointer
`serving/production.json` to it with a compare-and-swap. The predict function only
ever reads S3 (`load_pointer`, `load_bundle`), so it never imports MLflow and keeps
answering while the registry is down.

Bundle files (each written with `put_if_absent`, so a bundle never changes once
written; `provenance.json` goes last and marks the bundle complete):

    serving/v{N}/model.ubj               the booster in XGBoost's own UBJSON format
    serving/v{N}/feature_transform.json  the transform state saved with the run
    serving/v{N}/provenance.json         who/what/when: registry, run and data facts

`serving/registry.json` is a snapshot of every registered version (aliases, status,
metrics) so `/model-info` never calls MLflow either.

This module must not import mlflow at import time (the predict function imports it);
the MLflow client is passed in and the artifact download imports mlflow lazily.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xgboost as xgb

from ctr import layout
from ctr.errors import ConflictError, DataError, NoModelError, NotFoundError
from ctr.predictor import Predictor
from ctr.model_versions import all_versions
from ctr.storage import Store

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"
PREVIOUS_ALIAS = "previous"
MODEL_FILE = "model.ubj"
TRANSFORM_FILE = "feature_transform.json"
PROVENANCE_FILE = "provenance.json"
TRANSFORM_ARTIFACT = "feature_transform/feature_transform.json"
BUNDLE_FORMAT = 1
_PUBLISH_ATTEMPTS = 3

# (artifact URI, destination directory) -> local path of what was downloaded.
Downloader = Callable[[str, Path], Path]


@dataclass(frozen=True)
class Pointer:
    """`serving/production.json`: which bundle is live. `etag` identifies this write."""

    version: int
    prefix: str
    published_at: str
    etag: str


@dataclass(frozen=True)
class PublishResult:
    status: str              # "published" | "unchanged"
    version: int
    prefix: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "version": self.version, "prefix": self.prefix}


# --------------------------------------------------------------------------- reading

def load_pointer(store: Store) -> Pointer | None:
    """The live pointer, or None before the first publish."""
    found = store.get_json(layout.PRODUCTION_POINTER_KEY)
    if found is None:
        return None
    doc, etag = found
    try:
        return Pointer(version=int(doc["version"]), prefix=str(doc["prefix"]),
                       published_at=str(doc.get("published_at", "")), etag=etag)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{layout.PRODUCTION_POINTER_KEY} is malformed: {err}") from err


def load_bundle(store: Store, pointer: Pointer) -> tuple[Predictor, dict[str, Any]]:
    """Build a ready Predictor from the bundle the pointer names, plus its provenance."""
    try:
        model = store.get(pointer.prefix + MODEL_FILE).body
        transform = store.get(pointer.prefix + TRANSFORM_FILE).body
        provenance = json.loads(store.get(pointer.prefix + PROVENANCE_FILE).body)
    except NotFoundError as err:
        raise DataError(f"serving bundle {pointer.prefix} is incomplete: {err.message}") from err
    return Predictor.from_bytes(model, transform), provenance


def load_registry_snapshot(store: Store) -> dict[str, Any] | None:
    found = store.get_json(layout.REGISTRY_SNAPSHOT_KEY)
    return None if found is None else found[0]


# --------------------------------------------------------------------------- publishing

def publish_production(client: Any, store: Store, model_name: str, *,
                       downloader: Downloader | None = None) -> PublishResult:
    """Make `serving/production.json` point at the registry's `production` version.

    Idempotent: a second call for the same version writes nothing and reports
    "unchanged". Losing a race on a conditional write re-resolves everything, so the
    pointer always ends at what the alias named when the winning writer looked.
    Raises NoModelError when no version carries the alias (after refreshing the
    registry snapshot, so /model-info still shows candidates and rejections).
    """
    download = downloader or _mlflow_downloader(getattr(client, "tracking_uri", None))
    for attempt in range(1, _PUBLISH_ATTEMPTS):
        try:
            return _publish_once(client, store, model_name, download)
        except ConflictError:
            log.info("lost a race on a serving write; re-resolving (attempt %d)", attempt)
    return _publish_once(client, store, model_name, download)   # the last try raises


def _publish_once(client: Any, store: Store, model_name: str,
                  download: Downloader) -> PublishResult:
    aliases = _registered_aliases(client, model_name)
    write_registry_snapshot(store, build_registry_snapshot(
        client, model_name, aliases, previous=load_registry_snapshot(store)))
    if PRODUCTION_ALIAS not in aliases:
        raise NoModelError(f"no version of {model_name!r} has the alias {PRODUCTION_ALIAS!r}",
                           model_name=model_name)
    version = int(aliases[PRODUCTION_ALIAS])
    prefix = layout.serving_prefix(version)
    export_bundle(client, store, model_name, version, download,
                  aliases=sorted(a for a, v in aliases.items() if v == version))

    current = store.get_json(layout.PRODUCTION_POINTER_KEY)
    if current is not None and current[0].get("prefix") == prefix:
        return PublishResult("unchanged", version, prefix)
    doc = {"version": version, "prefix": prefix, "published_at": _iso_now()}
    store.put_json_if_match(layout.PRODUCTION_POINTER_KEY, doc,
                            None if current is None else current[1])
    log.info("production pointer moved to %s", prefix)
    return PublishResult("published", version, prefix)


def export_bundle(client: Any, store: Store, model_name: str, version: int,
                  download: Downloader, aliases: list[str]) -> None:
    """Write `serving/v{version}/` unless it is already complete.

    The bundle is checked by building a Predictor from the exact bytes about to be
    written, so a pointer can never be moved to a bundle that does not load.
    """
    prefix = layout.serving_prefix(version)
    if store.exists(prefix + PROVENANCE_FILE):
        return
    mv = client.get_model_version(model_name, str(version))
    run = client.get_run(mv.run_id)
    artifact_uri = str(client.get_model_version_download_uri(model_name, str(version)))
    with tempfile.TemporaryDirectory(prefix="ctr-bundle-") as tmp:
        model_dir = download(artifact_uri, Path(tmp) / "model")
        model_bytes = _booster_ubj(model_dir)
        transform_path = client.download_artifacts(mv.run_id, TRANSFORM_ARTIFACT, tmp)
        transform_bytes = Path(transform_path).read_bytes()
    Predictor.from_bytes(model_bytes, transform_bytes)
    provenance = {
        "bundle_format": BUNDLE_FORMAT,
        "model_name": model_name,
        "version": version,
        "aliases": aliases,
        "model_uri": f"models:/{model_name}/{version}",
        "artifact_uri": artifact_uri,
        "run_id": mv.run_id,
        "run_name": run.info.run_name,
        "run_artifact_uri": run.info.artifact_uri,
        "trained_at": _iso_ms(run.info.end_time or run.info.start_time),
        "registered_at": _iso_ms(mv.creation_timestamp),
        "data_window": (mv.tags or {}).get("data_window"),
        "execution": (mv.tags or {}).get("execution"),
        "metrics": _run_metrics(run),
        "exported_at": _iso_now(),
    }
    store.put_if_absent(prefix + MODEL_FILE, model_bytes)
    store.put_if_absent(prefix + TRANSFORM_FILE, transform_bytes, "application/json")
    store.put_if_absent(prefix + PROVENANCE_FILE,
                        json.dumps(provenance, indent=2, sort_keys=True).encode(),
                        "application/json")
    log.info("exported %s version %d to %s", model_name, version, prefix)


def _booster_ubj(model_dir: Path) -> bytes:
    """Re-save the logged booster as UBJSON, whatever format MLflow logged it in."""
    data_file = _xgboost_data_file(model_dir)
    booster = xgb.Booster()
    booster.load_model(str(data_file))
    return bytes(booster.save_raw(raw_format="ubj"))


def _xgboost_data_file(model_dir: Path) -> Path:
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        import yaml  # an mlflow dependency; only reload (which has mlflow) gets here

        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        data = flavors.get("xgboost", {}).get("data")
        if data and (model_dir / data).is_file():
            return model_dir / data
    candidates = sorted(p for p in model_dir.glob("model.*") if p.suffix in {".ubj", ".json"})
    if not candidates:
        raise DataError(f"no XGBoost model file in the logged model at {model_dir}")
    return candidates[0]


# --------------------------------------------------------------------------- registry snapshot

def build_registry_snapshot(client: Any, model_name: str, aliases: dict[str, int],
                            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every registered version with aliases, status, metrics and run facts.

    Run names and run metrics never change once a run has finished, so they are
    reused from the previous snapshot instead of one `get_run` per version per reload.
    """
    known = {v["version"]: v for v in (previous or {}).get("versions", [])}
    by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(int(v), []).append(alias)
    versions = []
    for mv in all_versions(client, model_name):
        number = int(mv.version)
        tags = dict(mv.tags or {})
        cached = known.get(number)
        if cached is not None and cached.get("run_status") == "FINISHED":
            run_name, run_status, metrics = (cached["run_name"], cached["run_status"],
                                             cached["metrics"])
        else:
            run = client.get_run(mv.run_id)
            run_name, run_status = run.info.run_name, run.info.status
            metrics = {**_tag_metrics(tags), **_run_metrics(run)}
        version_aliases = sorted(by_version.get(number, []))
        versions.append({
            "version": number,
            "aliases": version_aliases,
            "status": _status(version_aliases, tags),
            "status_reason": tags.get("status_reason"),
            "run_id": mv.run_id,
            "run_name": run_name,
            "run_status": run_status,
            "metrics": dict(sorted(metrics.items())),
            "data_window": tags.get("data_window"),
            "execution": tags.get("execution"),
            "created_at": _iso_ms(mv.creation_timestamp),
        })
    versions.sort(key=lambda v: v["version"], reverse=True)
    production = aliases.get(PRODUCTION_ALIAS)
    return {"model_name": model_name,
            "production_version": None if production is None else int(production),
            "versions": versions}


def write_registry_snapshot(store: Store, snapshot: dict[str, Any]) -> bool:
    """Replace `serving/registry.json` (compare-and-swap) unless nothing changed."""
    current = store.get_json(layout.REGISTRY_SNAPSHOT_KEY)
    if current is not None and _without_time(current[0]) == _without_time(snapshot):
        return False
    doc = {**snapshot, "generated_at": _iso_now()}
    store.put_json_if_match(layout.REGISTRY_SNAPSHOT_KEY, doc,
                            None if current is None else current[1])
    return True


def _without_time(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "generated_at"}


def _status(aliases: list[str], tags: dict[str, str]) -> str:
    """Aliases are the truth for production/previous; the `status` tag explains the rest."""
    if PRODUCTION_ALIAS in aliases:
        return "production"
    if PREVIOUS_ALIAS in aliases:
        return "previous"
    status = tags.get("status", "none")
    # A version that lost its alias may still carry an old production/previous tag.
    return "archived" if status in {"production", "previous"} else status


def _run_metrics(run: Any) -> dict[str, float]:
    """The run's summary metrics; per-iteration learning curves (`*_curve`) stay in MLflow."""
    return {k: float(v) for k, v in sorted(run.data.metrics.items()) if not k.endswith("_curve")}


def _tag_metrics(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for name in ("holdout_logloss", "holdout_auc"):
        try:
            out[name] = float(tags[name])
        except (KeyError, ValueError):
            continue
    return out


def _registered_aliases(client: Any, model_name: str) -> dict[str, int]:
    """alias -> version; {} when the model is not registered yet.

    MlflowException is matched by its error code rather than imported, so that this
    module stays importable without mlflow.
    """
    try:
        registered = client.get_registered_model(model_name)
    except Exception as err:
        if getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: int(v) for alias, v in (registered.aliases or {}).items()}




def _mlflow_downloader(tracking_uri: str | None) -> Downloader:
    def download(artifact_uri: str, dst: Path) -> Path:
        from mlflow.artifacts import download_artifacts

        dst.mkdir(parents=True, exist_ok=True)
        return Path(download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst),
                                       tracking_uri=tracking_uri))
    return download


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _iso_now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="seconds")
