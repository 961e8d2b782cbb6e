"""The rerun's verdict in a real headless Chromium (Debian's) at 1400 x 900: the Compare page
opened on the shipped rerun and its parent shows the verdict sentence and every column of
the verdict table. Screenshot under ``test-artifacts/`` (gitignored). The server and page
fixtures follow ``test_browser.py``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """``trainmap ui`` on a tmp copy of sample_runs; yields (base URL, store root)."""
    store_root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", store_root)
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
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
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def page():
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def test_compare_page_shows_the_verdict_of_a_rerun(server, page):
    base, store_root = server
    ids = {json.loads(p.read_text())["name"]: p.parent.name for p in (store_root / "runs").glob("*/run.json")}
    parent, rerun = ids["cnn-noise20-s0"], ids["cnn-noise20-s0-clean"]
    page.goto(f"{base}/compare?runs={parent}&runs={rerun}")
    heading = "Verdict: cnn-noise20-s0-clean vs its parent cnn-noise20-s0"
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    info = {name: json.loads((store_root / "runs" / ids[name] / "run.json").read_text())
            for name in ("cnn-noise20-s0", "cnn-noise20-s1", "cnn-noise20-s0-clean")}
    best = {name: value["best_val_accuracy"] for name, value in info.items()}
    difference = best["cnn-noise20-s0-clean"] - best["cnn-noise20-s0"]
    spread = abs(best["cnn-noise20-s0"] - best["cnn-noise20-s1"])
    sentence = (f"The rerun is {100 * difference:.1f} points better than its parent on best validation accuracy "
                f"({100 * best['cnn-noise20-s0']:.1f} % → {100 * best['cnn-noise20-s0-clean']:.1f} %); "
                f"the parent's 2 seeds differ by {100 * spread:.1f} points")
    expect(page.get_by_text(sentence, exact=False)).to_be_visible()
    # the verdict table (a canvas grid) shows its last column within the 1400 px window
    grid = page.locator("[data-testid='stDataFrame']").nth(1)
    expect(grid).to_be_visible()
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    assert box["x"] + box["width"] <= 1400
    page.screenshot(path=str(ARTIFACTS / "verdict-compare.png"), full_page=False)
