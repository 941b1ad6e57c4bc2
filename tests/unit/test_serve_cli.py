"""`ctr predict`: lines go to the API in batches; predictions and provenance are printed;
API errors become clear CLI errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ctr.errors import ConfigError, TransientError, ValidationError
from ctr_infra.cli import main
from ctr_infra.commands import serve

MODEL = {"name": "criteo_ctr_model", "version": 3, "alias": "production", "run_id": "abc",
         "run_name": "train-x", "artifact_uri": "s3://b/mlflow-artifacts/m",
         "trained_at": "2026-01-01T00:00:00+00:00"}


@pytest.fixture
def api(monkeypatch) -> list[dict[str, Any]]:
    """A stand-in API that answers 0.25 for every line and records each request."""
    sent: list[dict[str, Any]] = []

    def request(method: str, url: str, json: Any = None, timeout: float = 0) -> httpx.Response:
        sent.append({"method": method, "url": url, "json": json})
        if any("bad" in line for line in json["lines"]):
            return httpx.Response(422, json={"error": "ValidationError", "message": "1 invalid",
                                             "errors": [{"loc": ["body", "lines", 0, "I1"],
                                                         "msg": "must be an integer"}]})
        return httpx.Response(200, json={"predictions": [0.25] * len(json["lines"]),
                                         "num_samples": len(json["lines"]), "model": MODEL})

    monkeypatch.setattr(httpx, "request", request)
    monkeypatch.setenv("CTR_API_URL", "http://api.test/v1/")
    return sent


def test_predict_file_in_batches_with_provenance(api, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(serve, "BATCH_LINES", 2)
    rows = tmp_path / "rows.tsv"
    rows.write_text("a\nb\n\nc\n")

    assert main(["predict", "--file", str(rows)]) == 0

    out = capsys.readouterr().out
    assert [r["json"]["lines"] for r in api] == [["a", "b"], ["c"]]
    assert api[0]["url"] == "http://api.test/v1/predict"
    assert "3\t0.250000\t25.00%" in out
    assert "version 3 (alias production)" in out and "train-x (abc)" in out
    assert "s3://b/mlflow-artifacts/m" in out


def test_predict_line_accepts_escaped_tabs(api, capsys):
    assert main(["predict", "--line", "1\\t2", "--json"]) == 0
    assert api[0]["json"]["lines"] == ["1\t2"]
    assert json.loads(capsys.readouterr().out)["model"]["version"] == 3


def test_validation_errors_are_explained(api):
    with pytest.raises(ValidationError) as err:
        serve.cmd_predict(_args(line=["bad"]))
    assert "body.lines.0.I1: must be an integer" in err.value.message


def _args(**kwargs: Any) -> Any:
    import argparse

    return argparse.Namespace(**{"line": None, "file": None, "api": None, "json": False,
                                 **kwargs})


def test_no_model_and_unreachable_api(monkeypatch):
    monkeypatch.setattr(httpx, "request", lambda *a, **k: httpx.Response(
        503, json={"error": "NoModelError", "message": "no model is published yet"}))
    with pytest.raises(TransientError, match="no model"):
        serve.call("http://api.test", "GET", "/health")

    def refuse(*a: Any, **k: Any) -> httpx.Response:
        raise httpx.ConnectError("refused")
    monkeypatch.setattr(httpx, "request", refuse)
    with pytest.raises(TransientError, match="cannot reach"):
        serve.call("http://api.test", "GET", "/health")


def test_api_url_is_required(monkeypatch, tmp_path):
    monkeypatch.delenv("CTR_API_URL", raising=False)
    monkeypatch.setenv("CTR_STATE_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="no API URL"):
        serve.api_base(None)
