"""Start the Streamlit server for ``trainmap ui`` (no torch import here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).with_name("app.py")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RUNS = PACKAGE_ROOT / "sample_runs"


def resolve_store(path: Path) -> Path:
    """The store to show: ``path`` if it has runs; else ``path`` seeded with a copy of the
    shipped ``sample_runs/``.

    The copy, not the shipped folder itself, is what the dashboard opens: curricula saved
    and reruns launched from the UI write into the store they start from, and they belong
    in the user's store beside their parent, never in the package's ``sample_runs/``.
    Where the copy cannot be made (a read-only folder) the shipped runs are shown as they are.
    """
    runs = path / "runs"
    if runs.is_dir() and any(runs.iterdir()):
        return path
    if not (SAMPLE_RUNS / "runs").is_dir():
        return path
    try:
        shutil.copytree(SAMPLE_RUNS, path, dirs_exist_ok=True)
    except OSError as error:
        print(f"trainmap: no runs in {str(path)!r} and it cannot be written ({error}); "
              "showing the shipped sample runs read-only", file=sys.stderr)
        return SAMPLE_RUNS
    count = sum(1 for _ in (path / "runs").iterdir())
    print(f"trainmap: no runs in {str(path)!r} yet; copied the {count} shipped sample runs there "
          "to start from (delete them any time)", file=sys.stderr)
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
    env = dict(os.environ, TRAINMAP_STORE=str(store.resolve()))
    print(f"trainmap: dashboard on http://{host}:{port} (store {store})", file=sys.stderr)
    # cwd: `python -m` puts the working directory first on sys.path, where a user's own
    # folder named `store/` or `training/` could shadow trainmap's packages.
    server = subprocess.Popen(streamlit_command(store, host, port), env=env, cwd=str(PACKAGE_ROOT))

    def stop(signum: int, frame: object) -> None:  # SIGTERM / SIGHUP: take the server down too
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        return 0
