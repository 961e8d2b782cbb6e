"""The architecture's rules (ARCHITECTURE.md), checked on the source: layers, no import
cycles, no private names across modules, small modules, and packaging that follows the layers."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "training", "dashboard")
MAX_LINES = 500
#: The dashboard modules that may import ``store``: the data module, and the two that
#: start processes on a store (``trainmap ui`` seeding the sample runs; rerun jobs).
DASHBOARD_STORE_IMPORTERS = {"dashboard.data", "dashboard.launch", "dashboard.launcher"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import anywhere in ``module``."""
    path = SOURCES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            names = [alias.name for alias in node.names]
            submodules = [name for name in names if f"{base}.{name}" in SOURCES]
            found.extend((f"{base}.{name}", []) for name in submodules)
            rest = [name for name in names if name not in submodules]
            if rest or not submodules:
                found.append((base, rest))
    return found


def project_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in SOURCES}
    for module in SOURCES:
        for target, _ in imports(module):
            while target and target not in SOURCES:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    return edges


def top(name: str) -> str:
    return name.split(".")[0]


def test_no_import_cycles_between_project_modules():
    edges = project_edges()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_no_private_name_is_imported_from_another_module():
    offenders = [
        f"{module}: from {source} import {name}"
        for module in SOURCES
        for source, names in imports(module)
        if top(source) in PACKAGES
        for name in names
        if name.startswith("_")
    ]
    assert offenders == []


@pytest.mark.parametrize("layer, forbidden", [
    ("store", {"torch", "lightning", "streamlit", "plotly", "training", "dashboard"}),
    ("dashboard", {"torch", "lightning", "training"}),
    ("training", {"dashboard", "streamlit", "plotly"}),
])
def test_layer_rules(layer, forbidden):
    offenders = [
        f"{module} imports {target}"
        for module in SOURCES
        if top(module) == layer and not module.startswith("training.cli")
        for target, _ in imports(module)
        if top(target) in forbidden
    ]
    assert offenders == []


def test_only_the_command_line_imports_both_sides():
    both = [module for module in SOURCES
            if {"training", "dashboard"} <= {top(module)} | {top(target) for target, _ in imports(module)}]
    assert both and all(module.startswith("training.cli") for module in both), both


def test_dashboard_pages_reach_the_store_only_through_the_data_module():
    importers = {module for module in SOURCES if top(module) == "dashboard"
                 and any(top(target) == "store" for target, _ in imports(module))}
    assert "dashboard.data" in importers
    # dashboard.data grows by topic into dashboard.data_<topic> modules (e.g. data_jobs)
    others = {module for module in importers - DASHBOARD_STORE_IMPORTERS if not module.startswith("dashboard.data_")}
    assert not others, others


def test_no_module_is_over_the_size_limit():
    sizes = {module: len(path.read_text().splitlines()) for module, path in SOURCES.items()}
    assert {module: lines for module, lines in sizes.items() if lines > MAX_LINES} == {}


def test_packaging_follows_the_layers():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {requirement.split("=")[0].split(">")[0].split("[")[0] for requirement in project["dependencies"]}
    assert base == {"duckdb", "pandas", "pyarrow", "numpy", "plotly", "streamlit"}
    train = project["optional-dependencies"]["train"]
    assert "torch==2.13.0" in train and any(r.startswith("lightning") for r in train)
    assert project["scripts"]["trainmap"] == "training.cli:main"
