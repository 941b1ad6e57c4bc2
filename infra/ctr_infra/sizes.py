"""Lambda package sizes: each function's real dependency set against the 250 MB limit.

    python -m ctr_infra.sizes [--json]

Lambda allows 250 MB unzipped for a zip function's code plus all its layers. For each
function this reports: its code directory, the `ctr` layer, and the dependency layer
it uses (`layers/deps-*/requirements.txt`, pinned).

How sizes are measured (offline, and honest): the dependency layer's closure is
resolved from the pinned requirements and each distribution's `Requires-Dist`
(environment markers evaluated for Lambda: Linux x86_64, CPython 3.13; extras
followed), and every distribution's size is the sum of the file sizes in its
installed `RECORD`, i.e. exactly the bytes of the wheel that pip installed for this
platform, which is what `pip install --target` would put in the layer (without
`.pyc` files, which pip can compile but a layer does not need). The distributions are
read from the running environment (the dev venv) and must match the pins; a mismatch
is reported as an error rather than measured. Files that two distributions share
(mlflow-skinny and mlflow-tracing ship the same modules) are counted once. It agrees
with a real `pip install --no-compile --target` of the layer up to pip's own
bookkeeping files (INSTALLER, REQUESTED, RECORD).

Two checks go the other way, so that a layer is not only small but sufficient:
a static import scan (every third-party module imported at module level by the
function's `app.py` and the `ctr` modules it reaches must come from its layer;
imports inside functions are listed as notes, and requirements the function never
imports are listed too), and an isolated import: the handler module is imported in a
fresh interpreter (`python -I -S`) that sees only the standard library, the `ctr`
layer and a directory of symlinks to exactly the layer's files, as in Lambda. That
probe also reports the native libraries actually loaded, a lower bound for a trimmed
layer.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.metadata as md
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ctr_infra.bench.report import markdown_table

LIMIT_MB = 250.0
MB = 1_000_000

# Which dependency layer each function ships with (the template attaches the same).
FUNCTION_LAYERS = {
    "guard": "deps-data",
    "chunk": "deps-data",
    "aggregate": "deps-data",
    "train": "deps-train",
    "reload": "deps-train",
    "monitor": "deps-train",
    "predict": "deps-serve",
    "score": "deps-serve",
}
# Lambda's environment for marker evaluation.
LAMBDA_ENV: dict[str, str] = {
    **{k: str(v) for k, v in default_environment().items()},
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
    "os_name": "posix", "python_version": "3.13", "python_full_version": "3.13.0",
    "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@dataclass
class Closure:
    """Resolved distributions of one requirements file."""

    sizes: dict[str, int] = field(default_factory=dict)      # dist -> bytes (deduplicated)
    versions: dict[str, str] = field(default_factory=dict)
    top_modules: dict[str, frozenset[str]] = field(default_factory=dict)  # dist -> modules
    errors: list[str] = field(default_factory=list)
    prune: list[str] = field(default_factory=list)           # the layer's prune.txt rules
    pruned: int = 0                                          # bytes those rules leave out

    def keeps(self, rel: str) -> bool:
        """Whether the layer ships the installed file `rel` (prune.txt, if any)."""
        return not self.prune or not _prune_module().is_pruned(rel, self.prune)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def _requirements(path: Path) -> list[Requirement]:
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(Requirement(line))
    return reqs


@functools.cache
def _top_level_modules(name: str) -> frozenset[str]:
    dist = md.distribution(name)
    text = dist.read_text("top_level.txt")
    if text:
        return frozenset(m.strip() for m in text.split() if m.strip())
    mods = set()
    for rel, _ in _files(name):
        parts = Path(rel).parts
        if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
            continue
        module = parts[0].split(".", 1)[0] if len(parts) == 1 else parts[0]
        if len(parts) > 1 or rel.endswith((".py", ".so")):
            mods.add(module)
    return frozenset(mods)


@functools.cache
def _files(name: str) -> tuple[tuple[str, int], ...]:
    """(relative path, size) of every file in an installed distribution's RECORD."""
    dist = md.distribution(name)
    return tuple((str(f), int(f.size)) for f in dist.files or [] if f.size)


@functools.cache
def _prune_module() -> Any:
    """layers/deps-serve/prune.py: the one implementation of prune.txt's rules (the
    layer's Makefile runs it at `sam build`; it needs only the standard library)."""
    import importlib.util

    path = repo_root() / "layers" / "deps-serve" / "prune.py"
    spec = importlib.util.spec_from_file_location("ctr_layer_prune", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve(path: Path) -> Closure:
    """Walk `Requires-Dist` from the pinned requirements in `path`; files that the
    layer's prune.txt (beside it, if any) leaves out are not counted."""
    closure = Closure()
    prune_txt = path.parent / "prune.txt"
    if prune_txt.is_file():
        closure.prune = _prune_module().patterns(prune_txt.read_text())
    seen_files: set[str] = set()
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in
                                                      _requirements(path)]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, parent_extras = todo.pop()
        env_extras = parent_extras or frozenset({""})
        if req.marker and not any(req.marker.evaluate({**LAMBDA_ENV, "extra": e})
                                  for e in env_extras):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            closure.errors.append(f"{req.name} is required but not installed here")
            continue
        if req.specifier and dist.version not in req.specifier:
            closure.errors.append(f"{req.name}: installed {dist.version}, wanted {req.specifier}")
        if name not in closure.versions:
            closure.versions[name] = dist.version
            closure.top_modules[name] = _top_level_modules(name)
            size = 0
            for rel, nbytes in _files(name):
                if rel not in seen_files:
                    seen_files.add(rel)
                    if closure.keeps(rel):
                        size += nbytes
                    else:
                        closure.pruned += nbytes
            closure.sizes[name] = size
        for sub in dist.requires or []:
            todo.append((Requirement(sub), frozenset(req.extras)))
    return closure


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts)


# --------------------------------------------------------------------------- import scan

def _imports(source: Path) -> tuple[set[str], set[str]]:
    """(module-level imports, imports inside functions) of one source file."""
    tree = ast.parse(source.read_text(), str(source))
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            target = lazy if inside_function else eager
            if isinstance(child, ast.Import):
                target.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                target.add(child.module)
                target.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child, inside_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return eager, lazy


def _ctr_module_file(name: str, ctr_dir: Path) -> Path | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        base = ctr_dir.joinpath(*parts[:n])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def imported_top_modules(function: str, root: Path) -> tuple[set[str], set[str]]:
    """Third-party top-level modules reachable from functions/<function>/app.py through
    the `ctr` package: (imported when the module loads, imported only inside functions
    -- needed only if that code path runs in this function)."""
    ctr_dir = root / "layers" / "ctr" / "python"
    todo = [(root / "functions" / function / "app.py", False)]
    seen: set[tuple[Path, bool]] = set()
    eager_mods: set[str] = set()
    lazy_mods: set[str] = set()
    while todo:
        src, lazy_path = todo.pop()
        if (src, lazy_path) in seen:
            continue
        seen.add((src, lazy_path))
        eager, lazy = _imports(src)
        for name, is_lazy in [(n, lazy_path) for n in eager] + [(n, True) for n in lazy]:
            top = name.split(".", 1)[0]
            if top == "ctr":
                found = _ctr_module_file(name, ctr_dir)
                if found is not None:
                    todo.append((found, is_lazy))
            elif top not in sys.stdlib_module_names and top != "__future__":
                (lazy_mods if is_lazy else eager_mods).add(top)
    return eager_mods, lazy_mods - eager_mods


# --------------------------------------------------------------------------- isolated import

def materialize(closure: Closure, dest: Path) -> None:
    """Symlink exactly the closure's installed files into `dest` (a layer's python/)."""
    for name in closure.sizes:
        dist = md.distribution(name)
        for f in dist.files or []:
            rel = Path(str(f))
            if rel.parts and rel.parts[0] == "..":
                continue           # console scripts live outside site-packages
            if not closure.keeps(rel.as_posix()):
                continue
            target = dest / rel
            if target.exists() or target.is_symlink():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(str(dist.locate_file(f))).resolve())


_IMPORT_PROBE = """
import json, os, sys
sys.path[:0] = [os.environ["PROBE_FUNCTION_DIR"], os.environ["PROBE_CTR_DIR"],
                os.environ["PROBE_DEPS_DIR"]]
import app
loaded, native = set(), 0
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if path.startswith(os.environ["PROBE_REAL_DIR"]) and path not in loaded:
        loaded.add(path)
        native += os.path.getsize(path)
print(json.dumps({"modules": sorted({m.split(".")[0] for m in sys.modules}),
                  "native_mb": native / 1e6}))
"""

# Enough environment for every handler module to build its settings at import.
_PROBE_ENV = {"BUCKET_NAME": "probe-bucket", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
              "MODEL_NAME": "criteo_ctr_model", "EXPERIMENT_NAME": "criteo_ctr",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "probe",
              "AWS_SECRET_ACCESS_KEY": "probe", "POWERTOOLS_TRACE_DISABLED": "true",
              "POWERTOOLS_SERVICE_NAME": "probe"}


def import_in_isolation(function: str, deps_dir: Path, root: Path) -> dict[str, Any]:
    """Import functions/<function>/app.py in a fresh interpreter that sees only the
    standard library, the `ctr` layer and `deps_dir` (no site-packages), as in Lambda."""
    import os
    import subprocess
    import tempfile

    env = {"PATH": os.environ.get("PATH", ""),
           "HOME": os.environ.get("HOME", tempfile.gettempdir()),
           "MPLCONFIGDIR": tempfile.gettempdir(), **_PROBE_ENV,
           "PROBE_FUNCTION_DIR": str(root / "functions" / function),
           "PROBE_CTR_DIR": str(root / "layers" / "ctr" / "python"),
           "PROBE_DEPS_DIR": str(deps_dir),
           # The symlinks resolve into the environment the files were measured in.
           "PROBE_REAL_DIR": str(Path(str(md.distribution("numpy").locate_file(""))).resolve())}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _IMPORT_PROBE], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip().splitlines()[-1:]}
    return {"ok": True, **json.loads(proc.stdout)}


# --------------------------------------------------------------------------- report

def measure(root: Path | None = None, probe: bool = True) -> dict[str, Any]:
    import tempfile

    root = root or repo_root()
    layers = {name: resolve(root / "layers" / name / "requirements.txt")
              for name in sorted(set(FUNCTION_LAYERS.values()))}
    ctr_bytes = dir_size(root / "layers" / "ctr")
    functions = {}
    with tempfile.TemporaryDirectory(prefix="ctr-sizes-") as tmp:
        if probe:
            for name, closure in layers.items():
                materialize(closure, Path(tmp) / name)
        for function, layer in FUNCTION_LAYERS.items():
            closure = layers[layer]
            code = dir_size(root / "functions" / function)
            total = code + ctr_bytes + closure.total
            provided = {m for mods in closure.top_modules.values() for m in mods}
            eager, lazy = imported_top_modules(function, root)
            used = {d for d, mods in closure.top_modules.items() if mods & (eager | lazy)}
            functions[function] = {
                "layer": layer,
                "code_mb": code / MB, "ctr_layer_mb": ctr_bytes / MB,
                "deps_mb": closure.total / MB, "total_mb": total / MB,
                "fits": total / MB <= LIMIT_MB,
                "missing_modules": sorted(eager - provided),
                "missing_lazy_modules": sorted(lazy - provided),
                "unused_requirements": sorted(
                    canonicalize_name(r.name)
                    for r in _requirements(root / "layers" / layer / "requirements.txt")
                    if canonicalize_name(r.name) not in used),
                "isolated_import": (import_in_isolation(function, Path(tmp) / layer, root)
                                    if probe else None),
            }
    return {
        "limit_mb": LIMIT_MB,
        "method": "RECORD file sizes of the pinned wheels' dependency closure",
        "layers": {name: {"total_mb": c.total / MB, "errors": c.errors,
                          "pruned_mb": c.pruned / MB,
                          "distributions": {d: {"version": c.versions[d], "mb": c.sizes[d] / MB}
                                            for d in sorted(c.sizes, key=lambda d: -c.sizes[d])}}
                   for name, c in layers.items()},
        "functions": functions,
    }


def to_markdown(report: dict[str, Any]) -> str:
    rows = []
    for name, f in report["functions"].items():
        probe = f["isolated_import"]
        ok = "-" if probe is None else ("ok" if probe["ok"] else f"FAILED {probe['error']}")
        native = f"{probe['native_mb']:.0f}" if probe and probe.get("ok") else "-"
        rows.append((name, f["layer"], f"{f['code_mb']:.2f}", f"{f['ctr_layer_mb']:.2f}",
                     f"{f['deps_mb']:.1f}", f"{f['total_mb']:.1f}",
                     "yes" if f["fits"] else "**no**", ok, native))
    lines = [f"Unzipped size per function (limit {report['limit_mb']:.0f} MB; "
             f"{report['method']})", "",
             *markdown_table(("function", "layer", "code MB", "ctr MB", "deps MB", "total MB",
                              "fits", "isolated import", "native libs loaded MB"), rows)]
    for name, layer in report["layers"].items():
        big = ", ".join(f"{d} {v['mb']:.0f}" for d, v in layer["distributions"].items()
                        if v["mb"] >= 3)
        pruned = (f" (prune.txt leaves out {layer['pruned_mb']:.1f} MB)"
                  if layer.get("pruned_mb") else "")
        lines.append(f"\n{name}: {layer['total_mb']:.1f} MB{pruned}; largest (MB): {big}")
        lines.extend(f"  ERROR: {err}" for err in layer["errors"])
    for name, f in report["functions"].items():
        if f["missing_modules"]:
            lines.append(f"\nERROR: {name} imports {f['missing_modules']} that {f['layer']} "
                         f"does not provide")
        if f["missing_lazy_modules"]:
            lines.append(f"\nnote: {name} reaches function-level imports of "
                         f"{f['missing_lazy_modules']} that {f['layer']} does not provide "
                         f"(fine only if those code paths never run in {name})")
        if f["unused_requirements"]:
            lines.append(f"\nnote: {name} never imports {f['unused_requirements']} "
                         f"from {f['layer']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-probe", action="store_true",
                        help="skip importing each function in an isolated interpreter")
    args = parser.parse_args(argv)
    report = measure(probe=not args.no_probe)
    print(json.dumps(report, indent=2) if args.json else to_markdown(report))
    errors = any(layer["errors"] for layer in report["layers"].values()) or any(
        f["missing_modules"] or (f["isolated_import"] and not f["isolated_import"]["ok"])
        for f in report["functions"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
