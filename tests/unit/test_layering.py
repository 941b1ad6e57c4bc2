"""The import picture stays what docs/design.md says: the domain package `ctr` imports
neither the infrastructure (`ctr_infra`) nor the handlers nor the tests; handlers are
thin (they import `ctr`, never each other); the serving side never imports MLflow; and
no two modules of `ctr` import each other in a cycle.

Imports are read from the source (ast), including those inside functions, so a lazy
import counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CTR = ROOT / "layers/ctr/python/ctr"
INFRA = ROOT / "infra/ctr_infra"
FUNCTIONS = ROOT / "functions"


def module_name(path: Path, package_root: Path, package: str) -> str:
    parts = list(path.relative_to(package_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def imports(path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """Absolute module names `path` imports (a `from a.b import c` yields a.b and a.b.c)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def ctr_modules() -> dict[str, Path]:
    return {module_name(p, CTR, "ctr"): p for p in CTR.rglob("*.py")}


def test_the_domain_package_imports_no_infrastructure_handler_or_test():
    bad = {(name, imported) for name, path in ctr_modules().items()
           for imported in imports(path)
           if imported.split(".")[0] in {"ctr_infra", "tests", "functions", "app"}}
    assert bad == set()


def test_handlers_import_the_domain_package_and_never_each_other():
    for app in FUNCTIONS.glob("*/app.py"):
        found = set(imports(app))
        assert any(i.startswith("ctr.") for i in found), app
        assert not any(i.split(".")[0] in {"ctr_infra", "tests", "functions"} for i in found)


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    # Import-time edges only (top-level statements): a lazy import inside a function
    # cannot create an import cycle.
    return {name: {i for i in imports(path, top_level_only=True) if i in modules and i != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}            # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_domain_package():
    graph = _graph(ctr_modules())
    # A package's __init__ re-exporting its submodules is not a cycle of meaning.
    for name in graph:
        graph[name] = {i for i in graph[name] if not name.startswith(f"{i}.")}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("module", ["ctr.bundle", "ctr.registry", "ctr.registry.versions",
                                    "ctr.registry.promotion", "ctr.registry.gate"])
def test_the_serving_side_of_the_registry_has_no_top_level_mlflow_import(module):
    """The predict function has no MLflow; these modules are imported there."""
    path = ctr_modules()[module]
    assert not [i for i in imports(path, top_level_only=True) if i.split(".")[0] == "mlflow"]


def test_pyproject_lists_every_package_so_a_wheel_ships_them_all():
    """setuptools' explicit `packages` list does not include subpackages by itself."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {module_name(init, CTR, "ctr") for init in CTR.rglob("__init__.py")}
    found |= {module_name(init, INFRA, "ctr_infra") for init in INFRA.rglob("__init__.py")}
    assert listed == found
