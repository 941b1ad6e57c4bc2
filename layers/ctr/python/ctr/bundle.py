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
    serving/v{N}/baseline.json           the monitoring baseline (runs since issue 14)
    serving/v{N}/provenance.json         who/what/when: registry, run and data facts

`serving/registry.json` is a snapshot of every registered version (aliases, status,
metrics) so `/model-info` and `/health` never call MLflow either. Reload refreshes it,
and so does the train step right after its gate (`refresh_registry_snapshot`): when a
reload then fails, the snapshot already names the new production version and `/health`
says serving is behind until the next execution's sync (`sync_production`) publishes it.

This module must not import mlflow at import time (the predict function imports it);
the MLflow client is passed in, and the registry is read through `ctr.registry`'s
MLflow-free modules (names, version summaries, the one model + transform download).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pydantic

from ctr import layout
from ctr.clock import iso_from_ms, iso_now
from ctr.errors import ConflictError, DataError, NoModelError, NotFoundError, ValidationError
from ctr.monitoring.baseline import BASELINE_FILE
from ctr.predictor import MODEL_FILE, TRANSFORM_FILE, Predictor
from ctr.registry import names
from ctr.registry.versions import Downloader, RegistrySnapshot, fetch_model, run_metrics, snapshot
from ctr.steps import NoModelYet, ReloadResult, SyncResult
from ctr.storage import Store

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
BUNDLE_FORMAT = 1
_PUBLISH_ATTEMPTS = 3


@dataclass(frozen=True)
class Pointer:
    """`serving/production.json`: which bundle is live. `etag` identifies this write."""

    version: int
    prefix: str
    published_at: str
    etag: str


class Provenance(pydantic.BaseModel):
    """`serving/v{N}/provenance.json`: who/what/when of a bundle. Unknown keys are kept,
    so a bundle written by newer code still loads."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    bundle_format: int
    model_name: str
    version: int
    aliases: list[str]
    model_uri: str
    artifact_uri: str
    run_id: str
    run_name: str | None
    run_artifact_uri: str | None
    trained_at: str | None
    registered_at: str | None
    data_window: str | None
    execution: str | None
    metrics: dict[str, float]
    exported_at: str


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


def load_bundle(store: Store, pointer: Pointer) -> tuple[Predictor, Provenance]:
    """Build a ready Predictor from the bundle the pointer names, plus its provenance."""
    try:
        model = store.get(pointer.prefix + MODEL_FILE).body
        transform = store.get(pointer.prefix + TRANSFORM_FILE).body
        provenance_bytes = store.get(pointer.prefix + PROVENANCE_FILE).body
    except NotFoundError as err:
        raise DataError(f"serving bundle {pointer.prefix} is incomplete: {err.message}") from err
    try:
        provenance = Provenance.model_validate_json(provenance_bytes)
    except pydantic.ValidationError as err:
        raise ValidationError(
            f"serving bundle {pointer.prefix} has a malformed {PROVENANCE_FILE}",
            errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]) from err
    return Predictor.from_bytes(model, transform), provenance


def load_registry_snapshot(store: Store) -> RegistrySnapshot | None:
    found = store.get_json(layout.REGISTRY_SNAPSHOT_KEY)
    return None if found is None else RegistrySnapshot.model_validate(found[0])


# --------------------------------------------------------------------------- publishing

def publish_production(client: Any, store: Store, model_name: str, *,
                       downloader: Downloader | None = None) -> ReloadResult:
    """Make `serving/production.json` point at the registry's `production` version.

    Idempotent: a second call for the same version writes nothing and reports
    "unchanged". Losing a race on a conditional write re-resolves everything, so the
    pointer always ends at what the alias named when the winning writer looked.
    Raises NoModelError when no version carries the alias (after refreshing the
    registry snapshot, so /model-info still shows candidates and rejections).
    """
    for attempt in range(1, _PUBLISH_ATTEMPTS):
        try:
            return _publish_once(client, store, model_name, downloader)
        except ConflictError:
            log.info("lost a race on a serving write; re-resolving (attempt %d)", attempt)
    return _publish_once(client, store, model_name, downloader)   # the last try raises


def sync_production(client: Any, store: Store, model_name: str, *,
                    downloader: Downloader | None = None) -> SyncResult:
    """`publish_production` for the start of every execution: serving catches up with
    the registry when they differ (a reload that failed after a promotion heals here),
    and "no production version yet" is an answer (`NoModelYet`), not a failure."""
    try:
        return publish_production(client, store, model_name, downloader=downloader)
    except NoModelError as err:
        return NoModelYet(reason=err.message)


def refresh_registry_snapshot(client: Any, store: Store, model_name: str) -> RegistrySnapshot:
    """Rewrite `serving/registry.json` from the registry (nothing if unchanged) and return
    the snapshot. The train step calls it after its gate, so the registry's production
    version reaches S3 (and `/health`) even when the reload after it fails."""
    for attempt in range(1, _PUBLISH_ATTEMPTS):
        try:
            return _refresh_snapshot_once(client, store, model_name)
        except ConflictError:
            log.info("lost a race on %s; re-reading (attempt %d)",
                     layout.REGISTRY_SNAPSHOT_KEY, attempt)
    return _refresh_snapshot_once(client, store, model_name)   # the last try raises


def _refresh_snapshot_once(client: Any, store: Store, model_name: str) -> RegistrySnapshot:
    snap = snapshot(client, model_name, previous=load_registry_snapshot(store))
    write_registry_snapshot(store, snap)
    return snap


def _publish_once(client: Any, store: Store, model_name: str,
                  downloader: Downloader | None) -> ReloadResult:
    snap = _refresh_snapshot_once(client, store, model_name)
    version = snap.production_version
    if version is None:
        raise NoModelError(f"no version of {model_name!r} has the alias "
                           f"{names.PRODUCTION!r}", model_name=model_name)
    prefix = layout.serving_prefix(version)
    served = next(v for v in snap.versions if v.version == version)
    export_bundle(client, store, model_name, version, downloader, aliases=served.aliases)

    current = store.get_json(layout.PRODUCTION_POINTER_KEY)
    if current is not None and current[0].get("prefix") == prefix:
        return ReloadResult(status="unchanged", version=version, prefix=prefix)
    doc = {"version": version, "prefix": prefix, "published_at": iso_now()}
    store.put_json_if_match(layout.PRODUCTION_POINTER_KEY, doc,
                            None if current is None else current[1])
    log.info("production pointer moved to %s", prefix)
    return ReloadResult(status="published", version=version, prefix=prefix)


def export_bundle(client: Any, store: Store, model_name: str, version: int,
                  downloader: Downloader | None, aliases: list[str]) -> None:
    """Write `serving/v{version}/` unless it is already complete.

    The bundle is checked by building a Predictor from the exact bytes about to be
    written, so a pointer can never be moved to a bundle that does not load.
    """
    prefix = layout.serving_prefix(version)
    if store.exists(prefix + PROVENANCE_FILE):
        return
    fetched = fetch_model(client, model_name, version, downloader)
    fetched.predictor()
    mv = fetched.model_version
    run = client.get_run(mv.run_id)
    tags = mv.tags or {}
    provenance = Provenance(
        bundle_format=BUNDLE_FORMAT, model_name=model_name, version=version, aliases=aliases,
        model_uri=f"models:/{model_name}/{version}", artifact_uri=fetched.artifact_uri,
        run_id=mv.run_id, run_name=run.info.run_name, run_artifact_uri=run.info.artifact_uri,
        trained_at=iso_from_ms(run.info.end_time or run.info.start_time),
        registered_at=iso_from_ms(mv.creation_timestamp),
        data_window=tags.get(names.TAG_DATA_WINDOW), execution=tags.get(names.TAG_EXECUTION),
        metrics=run_metrics(run), exported_at=iso_now())
    store.put_if_absent(prefix + MODEL_FILE, fetched.model_bytes)
    store.put_if_absent(prefix + TRANSFORM_FILE, fetched.transform_bytes, "application/json")
    if fetched.baseline_bytes is not None:
        store.put_if_absent(prefix + BASELINE_FILE, fetched.baseline_bytes, "application/json")
    store.put_if_absent(prefix + PROVENANCE_FILE,
                        json.dumps(provenance.model_dump(mode="json"), indent=2,
                                   sort_keys=True).encode(),
                        "application/json")
    log.info("exported %s version %d to %s", model_name, version, prefix)


def write_registry_snapshot(store: Store, new: RegistrySnapshot) -> bool:
    """Replace `serving/registry.json` (compare-and-swap) unless nothing changed."""
    current = store.get_json(layout.REGISTRY_SNAPSHOT_KEY)
    unchanged = (current is not None and
                 RegistrySnapshot.model_validate(current[0]).model_copy(
                     update={"generated_at": None}) == new.model_copy(
                     update={"generated_at": None}))
    if unchanged:
        return False
    doc = new.model_copy(update={"generated_at": iso_now()}).model_dump(mode="json")
    store.put_json_if_match(layout.REGISTRY_SNAPSHOT_KEY, doc,
                            None if current is None else current[1])
    return True
