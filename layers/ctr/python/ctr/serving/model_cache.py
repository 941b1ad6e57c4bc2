"""The model the predict API answers with, and how it follows the production pointer.

Models come from S3 only: `serving/production.json` names a bundle that reload wrote
(see `ctr.bundle`). `ModelCache` reads the pointer at most every `pointer_ttl_seconds`;
when it moves, the new Predictor is built completely and then one reference is
swapped, so requests in flight finish on the old model and none fails during a
reload. Nothing here imports MLflow: a cold start stays small and the API keeps
answering while the registry is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ctr import layout
from ctr.bundle import Pointer, Provenance, load_bundle, load_pointer
from ctr.clock import iso_now
from ctr.errors import DomainError, NoModelError
from ctr.predictor import Predictor
from ctr.registry.names import PRODUCTION
from ctr.serving import schemas
from ctr.storage import Store

log = logging.getLogger(__name__)

PREDICT_THREADS = 1


@dataclass(frozen=True)
class LoadedModel:
    """Everything a request needs from one bundle; replaced whole, never mutated."""

    predictor: Predictor
    provenance: Provenance
    pointer: Pointer
    loaded_at: str
    ref: dict[str, Any]            # the response's "model" block, built once

    @classmethod
    def build(cls, predictor: Predictor, provenance: Provenance,
              pointer: Pointer) -> LoadedModel:
        # One thread per prediction: a Lambda below 1,769 MB has less than one vCPU, and
        # on a busy host OpenMP threads waiting for each other cost milliseconds of p99
        # (measured by the serving bench). Concurrency comes from more requests.
        # One thread also means no OpenMP team: a process that predicted can be forked
        # (the local SnapStart emulation forks its snapshot template after the warm-up).
        predictor.use_threads(PREDICT_THREADS)
        # Validated here, once: a bundle whose provenance does not fit the response is
        # not loaded (the current model stays), instead of failing every request.
        ref = schemas.ModelRef(
            name=provenance.model_name, version=provenance.version, alias=PRODUCTION,
            run_id=provenance.run_id, run_name=provenance.run_name,
            artifact_uri=provenance.artifact_uri, trained_at=provenance.trained_at
        ).model_dump()
        return cls(predictor, provenance, pointer, iso_now(), ref)

    def predict(self, table: pa.Table) -> np.ndarray:
        """Click probabilities for the rows of `table` (39 feature columns): the same
        `Predictor.predict_table` that training and the promotion gate use."""
        return self.predictor.predict_table(table)


class ModelCache:
    """The live model, refreshed from the pointer at most every `ttl` seconds.

    Only one thread checks the pointer at a time; while it loads a new bundle, other
    requests keep using the current model. Before the first model exists, a request
    waits for an ongoing check instead of failing. A failed check or load (S3 down, a
    broken bundle) is logged and retried after the TTL; the current model stays. A
    deleted pointer is an answer, not a failure: there is no model to serve (503).
    """

    def __init__(self, store_factory: Callable[[], Store], ttl: float) -> None:
        self._store_factory = store_factory
        self._store: Store | None = None
        self._ttl = ttl
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._checked_at: float | None = None
        self.last_error: str | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def forget_connections(self) -> None:
        """Drop the S3 client; the next read makes a new one (SnapStart: a restored
        copy must not reuse the snapshot's connections)."""
        self._store = None

    def expire_pointer(self) -> None:
        """Make the next request re-read the pointer, whatever the clock says (SnapStart:
        the monotonic time saved in a snapshot means nothing after a restore)."""
        self._checked_at = None

    def pointer_age(self) -> float | None:
        return None if self._checked_at is None else time.monotonic() - self._checked_at

    def get(self) -> LoadedModel:
        """The model to answer with, or NoModelError (503) if none is published."""
        self.refresh()
        model = self._current
        if model is None:
            hint = f" (last error: {self.last_error})" if self.last_error else ""
            raise NoModelError("no model is published yet: train one and run reload, "
                               f"or retry in a few seconds{hint}")
        return model

    def refresh(self, force: bool = False) -> None:
        if not force and not self.due():
            return
        # With a model, never queue behind a check: the current model is good enough.
        if not self._lock.acquire(blocking=self._current is None):
            return
        try:
            if force or self.due():
                self._check()
        finally:
            self._lock.release()

    def due(self) -> bool:
        """Whether the next request should read the pointer again."""
        return self._checked_at is None or time.monotonic() - self._checked_at >= self._ttl

    def _check(self) -> None:
        try:
            pointer = load_pointer(self.store)
            serving = None if self._current is None else self._current.pointer.prefix
            if pointer is None:
                if self._current is not None:
                    log.warning("%s was deleted: no model to serve",
                                layout.PRODUCTION_POINTER_KEY)
                self._current = None
            elif pointer.prefix != serving:
                predictor, provenance = load_bundle(self.store, pointer)
                self._current = LoadedModel.build(predictor, provenance, pointer)
                log.info("serving %s version %s from %s", provenance.model_name,
                         provenance.version, pointer.prefix)
            self.last_error = None
        except Exception as err:  # keep serving what we have; the next check retries
            # Our own messages are fit for clients; a library's may name endpoints or keys.
            detail = err.message if isinstance(err, DomainError) else "details in the logs"
            self.last_error = f"{type(err).__name__}: {detail}"
            log.warning("model refresh failed: %s", err, exc_info=True)
        finally:
            self._checked_at = time.monotonic()
