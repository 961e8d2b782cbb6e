"""The rerun's verdict in a real headless Chromium (Debian's) at 1400 x 900: the Compare page
opened on the shipped rerun and its parent shows the verdict sentence and every column of
the verdict table. Screenshot under ``test-artifacts/`` (gitignored). The server and page
fixtures come from ``browser_session.py``."""

from __future__ import annotations

import json

import pytest

from browser_session import ARTIFACTS, BROWSER_MARKS, chromium_page, dashboard_server

pytestmark = BROWSER_MARKS
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def server(tmp_path):
    with dashboard_server(tmp_path) as served:
        yield served


@pytest.fixture
def page():
    with chromium_page(1400, 900, timeout_ms=60_000) as chromium:
        yield chromium


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
