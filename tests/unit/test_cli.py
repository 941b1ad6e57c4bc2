"""The `ctr` command line fails loudly when a command group cannot be imported: a
broken or missing module is an ImportError naming the group, never a command that
quietly disappears from `ctr --help`."""

from __future__ import annotations

import sys

import pytest

from ctr_infra import cli, commands


def test_every_command_group_registers(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    listed = capsys.readouterr().out
    for command in ("up", "down", "data", "model", "run", "predict", "bench"):
        assert f"\n    {command} " in listed, command


def test_a_command_module_whose_import_fails_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "broken.py").write_text("import ctr_no_such_dependency  # noqa: F401\n")
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "broken"))
    monkeypatch.delitem(sys.modules, "ctr_infra.commands.broken", raising=False)

    with pytest.raises(ImportError, match=r"'broken' .*ctr_no_such_dependency") as err:
        cli.main(["--help"])
    assert err.value.name == "ctr_no_such_dependency"


def test_a_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "not_built"))

    with pytest.raises(ImportError, match="'not_built'"):
        cli.build_parser()


def test_model_list_labels_metrics_with_their_holdout_and_shows_the_gate():
    from ctr.registry import VersionSummary
    from ctr_infra.commands.model import format_versions

    v = VersionSummary(
        version=2, aliases=["production"], status="production", status_reason="ok",
        run_id="r", run_name="n", run_status="FINISHED",
        metrics={"holdout_logloss": 0.44, "holdout_auc": 0.8}, data_window="w",
        execution="e", created_at=None,
        holdout="parquet/part_000002.parquet[3500:5000]@ab12 + "
                "parquet/part_000003.parquet[0:10]@cd34",
        gate={"compared_with_version": "1", "logloss_diff_mean": "-0.002500",
              "logloss_diff_upper95": "-0.001500"})
    text = format_versions([v])
    assert "part_000002[3500:5000] + part_000003[0:10]" in text
    assert "vs v1: -0.002500, upper -0.001500" in text
    assert "each version on its own holdout" in text
