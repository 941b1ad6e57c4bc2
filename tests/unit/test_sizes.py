"""Lambda package sizes (ctr_infra.sizes): the check runs in the tests and prints its table."""

from __future__ import annotations

import pytest

from ctr_infra import sizes


@pytest.fixture(scope="module")
def report():
    return sizes.measure(probe=False)


def test_layer_pins_match_the_measured_environment(report):
    for name, layer in report["layers"].items():
        assert layer["errors"] == [], name
        assert layer["total_mb"] > 10, name


def test_every_function_gets_what_it_imports_from_its_layer(report):
    for name, f in report["functions"].items():
        assert f["missing_modules"] == [], name


def test_serving_ships_without_mlflow(report):
    assert "mlflow-skinny" not in report["layers"]["deps-serve"]["distributions"]
    assert "mlflow" not in report["layers"]["deps-serve"]["distributions"]


def test_sizes_are_reported_against_the_250_mb_limit(report, capsys):
    table = sizes.to_markdown(report)
    with capsys.disabled():
        print("\n" + table)
    for name in ("guard", "chunk", "aggregate"):
        assert report["functions"][name]["fits"], name
    # pyarrow + scipy (xgboost-cpu needs it) + numpy + pandas alone pass the zip limit:
    # train ships as a container image on AWS.
    train = report["functions"]["train"]
    assert train["total_mb"] > sizes.LIMIT_MB and not train["fits"]


def test_import_scan_separates_module_level_from_function_level_imports():
    eager, lazy = sizes.imported_top_modules("train", sizes.repo_root())
    assert {"mlflow", "xgboost", "pyarrow", "matplotlib"} <= eager
    assert "pandas" in eager | lazy
    eager, lazy = sizes.imported_top_modules("predict", sizes.repo_root())
    assert "mlflow" not in eager
