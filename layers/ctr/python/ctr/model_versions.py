"""Registry reads that take an MlflowClient but do not import MLflow, so both the
training side (ctr.registry) and the MLflow-free serving side (ctr.bundle) use them."""

from __future__ import annotations

from typing import Any


def all_versions(client: Any, model_name: str) -> list[Any]:
    """Every version of `model_name`, following pagination (unordered; note that
    `search_model_versions` does not fill aliases)."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name='{model_name}'", page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out
