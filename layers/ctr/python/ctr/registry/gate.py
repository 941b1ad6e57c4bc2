"""The promotion gate: score the candidate and the production model on the same
holdout rows, decide (`ctr.registry.decision`), apply (`ctr.registry.promotion`).

A production model written in a transform format this code cannot read (after a code
upgrade) is replaced: serving runs the same code and could not load it either, and
keeping it would reject every future version. Any other failure to load it (MLflow
down, ...) propagates, so the step is retried rather than promoting blindly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ctr import metrics
from ctr.errors import ValidationError
from ctr.predictor import Predictor
from ctr.registry import names, versions
from ctr.registry.decision import Decision, Evidence, decide
from ctr.registry.promotion import apply_decision
from ctr.schema import LABEL


def gate(client: Any, model_name: str, version: int, candidate: Predictor,
         holdout: pa.Table, tolerance: float) -> Decision:
    """Promote `version` if it is no worse than production on `holdout`, else reject
    it with the reason and the numbers."""
    y = holdout.column(LABEL).to_numpy().astype(np.float64)
    current = versions.aliases(client, model_name).get(names.PRODUCTION)
    production_logloss, loadable = None, True
    if current is not None and current != version:
        try:
            production = versions.load_predictor(client, model_name, current)
        except ValidationError:
            loadable = False
        else:
            production_logloss = metrics.logloss(y, production.predict_table(holdout))
    decision = decide(Evidence(
        version=version, candidate_logloss=metrics.logloss(y, candidate.predict_table(holdout)),
        rows=len(y), tolerance=tolerance, production_version=current,
        production_logloss=production_logloss, production_loadable=loadable))
    if current != version:
        apply_decision(client, model_name, version, decision)
    return decision
