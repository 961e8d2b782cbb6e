"""The dashboard's shape, read from its source (AST): pages only render, one data module
talks to ``store/``, chart builders and formatting are pure."""

from __future__ import annotations

import ast
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
PAGES = sorted((DASHBOARD / "views").glob("*.py"))
#: Modules of dashboard/ allowed to import store/, and what for.
STORE_IMPORTERS = {
    "data.py": "the one door to the store for every page",
    "launcher.py": "checks a rerun's label noise (store.settings) and finds the rerun by name (store.layout)",
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (also inside functions)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def imports_package(path: Path, package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in imported_modules(path))


def test_pages_exist():
    assert {page.name for page in PAGES} >= {"runs.py", "run.py", "compare.py", "curriculum.py"}


def test_no_page_imports_the_store():
    offenders = [page.name for page in PAGES if imports_package(page, "store")]
    assert not offenders, f"pages that import store/ directly (go through dashboard.data): {offenders}"


def test_pages_import_only_dashboard_modules_and_libraries():
    for page in PAGES:
        project = {name.split(".")[0] for name in imported_modules(page)} & {"store", "training", "torch"}
        assert not project, (page.name, project)


def test_only_the_data_module_and_the_launcher_import_the_store():
    importers = {path.name for path in DASHBOARD.glob("*.py") if imports_package(path, "store")}
    # data.py's topic modules (data_jobs.py, data_map.py, ...) are part of the same door
    others = {name for name in importers - set(STORE_IMPORTERS) if not name.startswith("data_")}
    assert not others, others
    assert "data.py" in importers
    launcher = imported_modules(DASHBOARD / "launcher.py")
    assert {name for name in launcher if name.startswith("store.") and name.count(".") == 1} <= {
        "store.settings", "store.layout", "store.errors", "store.jobs", "store.progress"}
    assert not imports_package(DASHBOARD / "launcher.py", "streamlit")  # a plain subprocess launcher


def streamlit_calls(path: Path) -> list[str]:
    """``st.<name>`` attribute uses in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"st.{node.attr} (line {node.lineno})" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "st"]


def test_chart_builders_make_no_streamlit_call():
    charts = DASHBOARD / "charts.py"
    assert streamlit_calls(charts) == []
    assert not imports_package(charts, "streamlit") and not imports_package(charts, "store")


def test_formatting_is_pure():
    formatting = DASHBOARD / "formatting.py"
    assert streamlit_calls(formatting) == []
    assert not imports_package(formatting, "streamlit") and not imports_package(formatting, "store")


def test_the_store_views_need_no_streamlit_or_plotly():
    views = DASHBOARD.parent / "store" / "views"
    for path in views.glob("*.py"):
        for package in ("streamlit", "plotly", "dashboard", "torch", "training"):
            assert not imports_package(path, package), (path.name, package)
