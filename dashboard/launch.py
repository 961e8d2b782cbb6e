"""Start the Streamlit server for ``trainmap ui`` (no torch import here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUNS = PACKAGE_ROOT / "sample_runs"


def resolve_store(path: Path) -> Path:
    """The store to show: ``path`` if it has runs, else the shipped ``sample_runs/``."""
    runs = path / "runs"
    if runs.is_dir() and any(runs.iterdir()):
        return path
    if SAMPLE_RUNS.is_dir():
        print(f"trainmap: no runs in {str(path)!r} yet; showing the shipped sample runs", file=sys.stderr)
        return SAMPLE_RUNS
    return path


def streamlit_command(store: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no "Deploy" button or developer menu
        "--server.address", host,
        "--server.port", str(port),
    ]


def launch(path: Path, host: str = "127.0.0.1", port: int = 8501) -> int:
    store = resolve_store(Path(path))
    env = dict(os.environ, TRAINMAP_STORE=str(store.resolve()), TRAINMAP_LAUNCH_STORE=str(Path(path).resolve()))
    print(f"trainmap: dashboard on http://{host}:{port} (store {store})", file=sys.stderr)
    try:
        # cwd: `python -m` puts the working directory first on sys.path, where a user's own
        # folder named `store/` or `training/` could shadow trainmap's packages.
        return subprocess.call(streamlit_command(store, host, port), env=env, cwd=str(PACKAGE_ROOT))
    except KeyboardInterrupt:
        return 0
