"""What every browser test shares: `trainmap ui` on a tmp copy of ``sample_runs/`` and a page
of Debian's headless Chromium driven by Playwright (never `playwright install`), with the
flags the project's guide names. Each test module wraps these in its own fixtures (its
viewport and default timeout)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: ``pytestmark`` of a module that drives Chromium
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dashboard_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`trainmap ui` on a tmp copy of sample_runs, bound to loopback; yields (base URL, store root)."""
    store_root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", store_root)
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    # Started the way users start it: `trainmap ui` (which runs `streamlit run` headless),
    # from a folder holding a `store/` folder that must not shadow trainmap's `store` package.
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("trainmap")), "ui", "--store", str(store_root),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("streamlit did not start: " + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.3)
        yield base, store_root
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # trainmap ui and its streamlit child
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@contextmanager
def chromium_page(width: int, height: int, timeout_ms: int = 30_000) -> Iterator[object]:
    """A Playwright page of Debian's headless Chromium at ``width`` x ``height``."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(timeout_ms)
        try:
            yield page
        finally:
            browser.close()
