"""The process tree stays lean and the layering holds: what each process imports, and
which package may import which (DESIGN.md's dependency rules)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sitetune"
HEAVY = ("torch", "monai", "onnxruntime", "numba")


@pytest.mark.parametrize(
    "module",
    ["sitetune.service.app", "sitetune.processes", "sitetune.pacs.worker", "sitetune.clients.cli"],
)
def test_processes_that_do_not_segment_import_no_model_runtime(module):
    """BentoML's arbiter imports the service module, the supervisors `processes`, the
    PACS worker runs models only when an analysis comes: none loads torch at import."""
    code = f"import sys, {module}; print([m for m in {HEAVY!r} if m in sys.modules])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", f"{module} imports {run.stdout.strip()}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n for n in names if n.startswith("sitetune")}


def _package(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py") if len(parts) > 1 or parts[0] != "__init__.py" else ""


def test_the_dependency_rules_hold():
    allowed_below = {  # a package may not import these
        "imaging": {"service", "pacs", "training", "analysis", "models", "measure", "clients"},
        "measure": {"service", "pacs", "training", "analysis", "models", "clients"},
        "models": {"service", "pacs", "training", "analysis", "clients"},
        "analysis": {"service", "pacs", "training", "clients"},
        "pacs": {"service", "training", "clients"},
        "training": {"service", "pacs", "clients"},
    }
    broken = []
    for path in PACKAGE.rglob("*.py"):
        package = _package(path)
        for name in _imports(path):
            target = name.split(".")[1] if "." in name else ""
            if target == "service" and package != "service":
                broken.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if package == "clients" and target not in ("clients", "dicomweb"):  # no server code
                broken.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if target in allowed_below.get(package, set()):
                broken.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert broken == []


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """The sitetune modules ``path`` imports when it is imported (not in functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("sitetune")}


def test_the_import_graph_has_no_cycle():
    modules = {_module(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    graph = {m: {n for n in _top_level_imports(p) if n in modules and n != m}
             for m, p in modules.items()}  # fmt: skip
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
