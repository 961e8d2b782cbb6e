"""The main dashboard flow in a real headless Chromium (Debian's, never `playwright install`).

Runs page -> open a run -> select a sample -> compare two runs, against a tmp copy of
``sample_runs/`` (the Curriculum page's flow, reruns and jobs: ``test_browser_flow.py``); asserts visible text at each step and saves screenshots under
``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

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
    with chromium_page(1500, 1100, timeout_ms=30_000) as chromium:
        yield chromium


def run_ids(store_root: Path) -> dict[str, str]:
    return {json.loads(p.read_text())["name"]: p.parent.name
            for p in sorted((store_root / "runs").glob("*/run.json"))}


def tick_table_row(page, expect, row_index: int, then_visible: str) -> None:
    """Tick the selection checkbox of a row of the first st.dataframe (a canvas grid).

    The grid ignores clicks until it has finished drawing, so click until ``then_visible``
    (the page's echo of the selection) shows up.
    """
    grid = page.locator("[data-testid='stDataFrame']").first
    expect(grid).to_be_visible()
    header_height, row_height = 35, 35
    for _ in range(6):
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 16, box["y"] + header_height + row_height * row_index + row_height / 2)
        try:
            expect(page.get_by_text(then_visible, exact=True)).to_be_visible(timeout=3_000)
            return
        except AssertionError:
            page.wait_for_timeout(500)
    expect(page.get_by_text(then_visible, exact=True)).to_be_visible()


def expect_app_navigation(page, expect) -> None:
    """The page is routed by app.py's st.navigation: its titled pages in the sidebar (no
    "app" entry, no lower-case script names) and its wide layout."""
    nav = page.locator("[data-testid='stSidebarNav']")
    for title in ("Runs", "Run", "Compare", "Curriculum"):
        expect(nav.get_by_text(title, exact=True)).to_be_visible()
    for legacy in ("app", "runs", "run", "compare", "curriculum"):
        expect(nav.get_by_text(legacy, exact=True)).to_have_count(0)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    main = page.locator("[data-testid='stMainBlockContainer']")
    expect(main).to_be_visible()
    assert main.bounding_box()["width"] > 1000  # wide, not the 736 px centered column


def click_data_map_point(page, index: int = 0) -> int:
    """Click point ``index`` of the data map's first trace where Plotly drew it (its own
    axes give the pixel position); return that point's sample_id."""
    position = page.evaluate(
        """(index) => {
            const gd = [...document.querySelectorAll('.js-plotly-plot')].find(
                g => g._fullLayout && g._fullLayout.xaxis && g._fullLayout.xaxis.title &&
                     String(g._fullLayout.xaxis.title.text || '').includes('variability'));
            gd.scrollIntoView({block: "center"});
            const trace = gd._fullData[0];
            const layout = gd._fullLayout;
            const box = gd.getBoundingClientRect();
            return {x: box.left + layout._size.l + layout.xaxis.l2p(trace.x[index]),
                    y: box.top + layout._size.t + layout.yaxis.l2p(trace.y[index]),
                    id: trace.customdata[index][0]};
        }""",
        index,
    )
    page.mouse.move(position["x"], position["y"])
    page.wait_for_timeout(300)
    page.mouse.click(position["x"], position["y"])
    return int(position["id"])


def test_direct_link_on_a_fresh_server(server, page):
    """A shared link is the first request the server sees: it opens the right page,
    view and sample inside app.py's navigation, with no rerun or redirect."""
    base, store_root = server
    run_id = run_ids(store_root)["cnn-noise20-s0"]

    page.goto(f"{base}/run?run={run_id}&view=Data+map&sample=8")
    expect(page.get_by_role("heading", name="cnn-noise20-s0", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Sample 8")).to_be_visible()
    expect(page.get_by_text("easy-to-learn").first).to_be_visible()
    expect_app_navigation(page, expect)
    page.wait_for_timeout(2500)
    assert page.url.startswith(f"{base}/run?") and f"run={run_id}" in page.url
    assert "sample=8" in page.url and "view=Data" in page.url
    page.screenshot(path=str(ARTIFACTS / "0-direct-link.png"), full_page=True)
    page.get_by_role("heading", name="Sample 8").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "0-direct-link-sample.png"))
    assert "Traceback" not in page.content()


def test_main_flow_in_chromium(server, page):
    base, store_root = server
    ids = run_ids(store_root)
    outside: list[str] = []  # an offline tool: no request may leave the machine (fonts, icons, ...)
    page.on("request", lambda request: outside.append(request.url)
            if urlparse(request.url).hostname not in ("127.0.0.1", "localhost", None) else None)

    # 1. Runs page: the table of the five sample runs.
    page.goto(f"{base}/")  # the Runs page is the default: the server's root URL
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_text("5 of 5 runs")).to_be_visible()
    expect_app_navigation(page, expect)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "1-runs.png"), full_page=True)

    # 2. Open a run: tick its row (newest first: the curriculum rerun) and press "Open run".
    tick_table_row(page, expect, 0, "selected: cnn-noise20-s0-clean")
    page.get_by_role("button", name="Open run").click()
    expect(page.get_by_role("heading", name="cnn-noise20-s0-clean")).to_be_visible()
    expect(page.get_by_text("Best val accuracy")).to_be_visible()
    assert f"run={ids['cnn-noise20-s0-clean']}" in page.url
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "2-run-curves.png"), full_page=True)

    # 3. Data map: click a point to open that sample, then type another id (the URL keeps it).
    page.get_by_role("tab", name="Data map").click()
    expect(page.get_by_text("easy-to-learn").first).to_be_visible()
    page.wait_for_timeout(1500)  # the WebGL scatter draws after the tab shows
    for index in (0, 7, 42):  # a point may lie under another trace's marker: try another
        clicked = click_data_map_point(page, index)
        try:
            expect(page.get_by_role("heading", name=f"Sample {clicked}")).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            continue
    expect(page.get_by_role("heading", name=f"Sample {clicked}")).to_be_visible()
    assert f"sample={clicked}" in page.url
    sample_input = page.get_by_label("Sample id")
    sample_input.fill("8")
    sample_input.press("Enter")
    expect(page.get_by_role("heading", name="Sample 8")).to_be_visible()
    expect(page.get_by_text("original label").first).to_be_visible()
    page.wait_for_timeout(2500)
    assert "sample=8" in page.url and "view=Data" in page.url
    page.screenshot(path=str(ARTIFACTS / "3-run-data-map-sample.png"), full_page=True)

    # The shared link reopens the same view and sample.
    page.goto(page.url)
    expect(page.get_by_role("heading", name="Sample 8")).to_be_visible()

    # 4. Compare: back to the runs, tick the rerun and its parent, press "Compare runs".
    page.locator("[data-testid='stSidebarNav']").get_by_text("Runs", exact=True).click()
    expect(page.get_by_text("5 of 5 runs")).to_be_visible()
    tick_table_row(page, expect, 0, "selected: cnn-noise20-s0-clean")
    tick_table_row(page, expect, 2, "selected: cnn-noise20-s0-clean, cnn-noise20-s0")
    page.get_by_role("button", name="Compare runs").click()
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
    expect(page.get_by_text("Spearman rank correlation")).to_be_visible()
    # the rerun never saw the 800 pruned samples: agreement is over the 3,200 both scored
    expect(page.get_by_text("Top-320 overlap")).to_be_visible()
    page.wait_for_timeout(2500)
    page.screenshot(path=str(ARTIFACTS / "4-compare.png"), full_page=True)
    assert "Traceback" not in page.content()
    assert outside == [], outside
