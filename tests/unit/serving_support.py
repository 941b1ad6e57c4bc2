"""Shared by the serving unit tests: tiny real models (trained through ctr.features on
synthetic rows) and an in-memory stand-in for the part of MlflowClient that reload
uses, so a bundle goes through the real `ctr.bundle.publish_production` path."""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from ctr.features import FeatureTransform
from ctr.predictor import Predictor
from ctr.schema import FEATURE_COLUMNS, LABEL
from ctr.synth import generate_table

MODEL_NAME = "criteo_ctr_model"


@functools.cache
def sample_table(rows: int = 3000, seed: int = 0) -> pa.Table:
    return generate_table(rows, seed=seed)[0]


@functools.cache
def tiny_predictor(variant: int = 0) -> Predictor:
    """A small but real model; each variant trains a different number of rounds on
    the same rows, so variants give visibly different predictions."""
    table = sample_table()
    transform = FeatureTransform.fit(table, max_categories=50, min_count=5)
    label = table.column(LABEL).to_numpy().astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.3,
                         "tree_method": "hist", "nthread": 1},
                        transform.matrix(table, label=label), num_boost_round=4 + 3 * variant)
    return Predictor(booster, transform)


class ResourceDoesNotExist(Exception):
    error_code = "RESOURCE_DOES_NOT_EXIST"


@dataclass
class _Info:
    run_id: str
    run_name: str
    artifact_uri: str
    start_time: int
    end_time: int | None
    status: str = "FINISHED"


@dataclass
class _Data:
    metrics: dict[str, float]


@dataclass
class FakeRun:
    info: _Info
    data: _Data


@dataclass
class FakeVersion:
    version: str
    run_id: str
    source: str
    creation_timestamp: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)   # search results leave it empty


class _Page(list):
    token: str | None = None


@dataclass
class _Registered:
    aliases: dict[str, str]


class FakeMlflowClient:
    """Registry + runs + artifacts on the local disk, with MLflow's method names."""

    tracking_uri = "fake://mlflow"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions: dict[int, FakeVersion] = {}
        self.runs: dict[str, FakeRun] = {}
        self.aliases: dict[str, str] = {}
        self.calls: list[str] = []
        self.page_size = 2

    # --- test setup -----------------------------------------------------------
    def add_version(self, predictor: Predictor, *, status: str = "candidate",
                    metrics: dict[str, float] | None = None) -> int:
        number = len(self.versions) + 1
        run_id = f"run{number:04d}"
        run_dir = self.root / run_id
        predictor.save(run_dir / "model")
        (run_dir / "model" / "MLmodel").write_text(
            "flavors:\n  xgboost:\n    data: model.ubj\n    model_format: ubj\n")
        (run_dir / "feature_transform").mkdir()
        (run_dir / "model" / "feature_transform.json").rename(
            run_dir / "feature_transform" / "feature_transform.json")
        metrics = metrics or {"holdout_logloss": 0.5 - number / 100, "holdout_auc": 0.7}
        self.runs[run_id] = FakeRun(
            _Info(run_id, f"train-manual-{number}", str(run_dir), 1_700_000_000_000 + number,
                  1_700_000_060_000 + number),
            _Data({**metrics, "train_logloss_curve": 0.4}))
        self.versions[number] = FakeVersion(
            str(number), run_id, f"models:/m-{number}", 1_700_000_100_000 + number,
            tags={"status": status, "status_reason": f"why {number}",
                  "data_window": f"parquet parts 0-{number}", "execution": "manual",
                  "holdout_logloss": f"{metrics['holdout_logloss']:.6f}"})
        return number

    def set_alias(self, alias: str, version: int) -> None:
        self.aliases[alias] = str(version)

    # --- the MlflowClient surface used by ctr.bundle ---------------------------
    def get_registered_model(self, name: str) -> _Registered:
        self.calls.append("get_registered_model")
        if not self.versions:
            raise ResourceDoesNotExist(f"Registered Model with name={name} not found")
        return _Registered(dict(self.aliases))

    def get_model_version(self, name: str, version: str) -> FakeVersion:
        self.calls.append("get_model_version")
        return self.versions[int(version)]

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return str(self.root / self.versions[int(version)].run_id / "model")

    def get_run(self, run_id: str) -> FakeRun:
        self.calls.append("get_run")
        return self.runs[run_id]

    def search_model_versions(self, filter_string: str, page_token: str | None = None
                              ) -> _Page:
        self.calls.append("search_model_versions")
        ordered = [self.versions[k] for k in sorted(self.versions)]
        start = int(page_token or 0)
        page = _Page(ordered[start:start + self.page_size])
        if start + self.page_size < len(ordered):
            page.token = str(start + self.page_size)
        return page

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        folder = self.root / run_id / (path or "")
        return ([SimpleNamespace(path=str(p.relative_to(self.root / run_id)))
                 for p in sorted(folder.iterdir())] if folder.is_dir() else [])

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        target = Path(dst_path) / Path(path).name
        shutil.copy(self.root / run_id / path, target)
        return str(target)


def copy_downloader(uri: str, dst: Path) -> Path:
    """Stands in for mlflow.artifacts.download_artifacts on a local directory."""
    shutil.copytree(uri, dst)
    return dst


def features_of(table: pa.Table) -> list[list[Any]]:
    return [[row[c] for c in FEATURE_COLUMNS] for row in table.to_pylist()]
