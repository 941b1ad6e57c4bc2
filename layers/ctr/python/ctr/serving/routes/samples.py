"""GET /samples: a few real rows to try the API with (the page's sample button)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ctr import criteo
from ctr.schema import FEATURE_COLUMNS, LABEL
from ctr.serving import schemas
from ctr.serving.dependencies import Samples

router = APIRouter()


@router.get("/samples", response_model=schemas.SamplesResponse)
def sample_rows(samples: Samples, n: int = Query(5, ge=1, le=100)) -> dict[str, Any]:
    """A few real rows of the newest Parquet part, as JSON rows and as TSV lines."""
    key, table = samples.sample(n)
    features = table.select(list(FEATURE_COLUMNS))
    return {"rows": features.to_pylist(),
            "lines": criteo.table_to_lines(features, with_label=False),
            "labels": table.column(LABEL).to_pylist(),
            "source": key}
