"""The promotion gate: measure the evidence on the holdout, decide
(`ctr.registry.decision`), apply (`ctr.registry.promotion`).

The candidate and the production model are scored on the same holdout rows, in time
order; a first model is compared with the constant prior (the training rows' click
rate). A production model written in a transform format this code cannot read (after a
code upgrade) is replaced: serving runs the same code and could not load it either, and
keeping it would reject every future version. Any other failure to load it (MLflow
down, ...) propagates, so the step is retried rather than promoting blindly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from ctr import metrics
from ctr.errors import ValidationError
from ctr.predictor import Predictor
from ctr.registry import names, versions
from ctr.registry.audit import Recorder
from ctr.registry.decision import Decision, Evidence, GatePolicy, decide
from ctr.registry.promotion import apply_decision
from ctr.schema import LABEL


def measure(version: int, candidate: Predictor, holdout: pa.Table, *,
            production_version: int | None, production: Predictor | None,
            prior: float | None, production_loadable: bool = True) -> Evidence:
    """Score the candidate, and production (or the constant `prior`), on the holdout."""
    y = holdout.column(LABEL).to_numpy().astype(np.float64)
    p_cand = candidate.predict_table(holdout)
    ll_cand = metrics.per_row_logloss(y, p_cand)
    ratio, low, high = metrics.calibration_interval(y, p_cand)
    evidence = Evidence(version=version, rows=len(y), candidate_logloss=float(ll_cand.mean()),
                        calibration_ratio=ratio, calibration_interval=(low, high),
                        production_version=production_version,
                        production_loadable=production_loadable)
    if production is not None:
        p_prod = production.predict_table(holdout)
        ll_prod = metrics.per_row_logloss(y, p_prod)
        return replace(evidence, production_logloss=float(ll_prod.mean()),
                       logloss_difference=metrics.paired_difference(ll_cand - ll_prod),
                       auc_difference=metrics.paired_auc_difference(y, p_cand, p_prod))
    if production_version is None and prior is not None:
        ll_prior = metrics.per_row_logloss(y, np.full_like(y, prior))
        return replace(evidence, prior_logloss=float(ll_prior.mean()),
                       logloss_difference=metrics.paired_difference(ll_cand - ll_prior))
    return evidence


def gate(client: Any, model_name: str, version: int, candidate: Predictor,
         holdout: pa.Table, policy: GatePolicy, prior: float | None = None,
         recorder: Recorder | None = None) -> Decision:
    """Promote `version` or reject it with the reason and the numbers. `prior` is the
    constant click rate a first model must beat (the training rows' positive rate)."""
    current = versions.aliases(client, model_name).get(names.PRODUCTION)
    production, loadable = None, True
    if current is not None and current != version:
        try:
            production = versions.load_predictor(client, model_name, current)
        except ValidationError:
            loadable = False
    evidence = measure(version, candidate, holdout, production_version=current,
                       production=production, prior=prior, production_loadable=loadable)
    decision = decide(evidence, policy)
    if current != version:
        apply_decision(client, model_name, version, decision, recorder=recorder)
    return decision
