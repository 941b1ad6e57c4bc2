"""`ctr data synth | put`: the operator commands of the data plane."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from ctr import criteo, synth
from ctr.errors import ConfigError
from ctr.storage import Store
from ctr_infra import cli
from ctr_infra.commands import data as data_commands
from ctr_infra.memory_s3 import MemoryS3


def test_synth_writes_gzip_and_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d" / "train.txt.gz"
    assert cli.main(["data", "synth", "--rows", "500", "--seed", "3", "--out", str(out),
                     "--quiet"]) == 0
    parsed = criteo.parse_tsv(gzip.decompress(out.read_bytes()))
    assert parsed.lines == 500 and parsed.rejects == []
    assert np.load(synth.sidecar_path(out)).shape == (500,)
    assert "wrote 500 rows" in capsys.readouterr().out


def test_put_uploads_into_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(MemoryS3(), "bucket")
    monkeypatch.setattr(data_commands, "resolve_store", lambda args: store)
    path = tmp_path / "day1.txt"
    path.write_bytes(b"0" + b"\t" * 39 + b"\n")
    assert cli.main(["data", "put", str(path), "--source-name", "kaggle", "--quiet"]) == 0
    assert store.get("raw/kaggle/day1.txt").body == path.read_bytes()
    assert "uploaded: s3://bucket/raw/kaggle/day1.txt" in capsys.readouterr().out


def test_put_without_any_bucket_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CTR_BUCKET", raising=False)
    monkeypatch.setenv("CTR_STATE_DIR", str(tmp_path / "no-cloud-here"))
    with pytest.raises(ConfigError, match="no bucket"):
        data_commands.resolve_store(cli.build_parser().parse_args(["data", "put", "x"]))
    assert cli.main(["data", "put", str(tmp_path / "x.txt")]) == 2
    assert "no bucket" in capsys.readouterr().err
