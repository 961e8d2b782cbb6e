"""The million-point data map in a real headless Chromium: the density renders, a box dragged
on it drills into that region's samples as points, and clicking one opens the sample view.

The run is a tmp copy of ``sample_runs/``'s 4,000-sample noisy run with the density threshold
lowered to 1,000 samples (``TRAINMAP_DENSITY_THRESHOLD``, inherited by `trainmap ui`), so the
page takes the same path as on a million samples without building one (a 1 M-sample run's
timings and screenshot: benchmarks/bench_density.py). Screenshots under ``test-artifacts/``.
"""

from __future__ import annotations

import pytest

import store as store_api
from browser_session import ARTIFACTS, BROWSER_MARKS, chromium_page, dashboard_server
from conftest import sample_run_ids

pytestmark = BROWSER_MARKS
expect = pytest.importorskip("playwright.sync_api").expect

NOISY = sample_run_ids()["cnn-noise20-s0"]

#: Pixel geometry of the plot whose title holds ``prefix``: its plotting area and axis ranges.
PLOT_JS = """(prefix) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(
        g => g._fullLayout && String((g._fullLayout.title || {}).text || '').includes(prefix));
    if (!gd) return null;
    gd.scrollIntoView({block: "center"});
    const layout = gd._fullLayout, box = gd.getBoundingClientRect();
    const trace = gd._fullData[0];
    return {left: box.left + layout._size.l, top: box.top + layout._size.t,
            width: layout.xaxis._length, height: layout.yaxis._length,
            x: layout.xaxis.range, y: layout.yaxis.range, type: trace.type,
            first: trace.type === 'heatmap' ? null : {x: trace.x[0], y: trace.y[0], id: trace.customdata[0][0]}};
}"""


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINMAP_DENSITY_THRESHOLD", "1000")
    with dashboard_server(tmp_path) as served:
        yield served


@pytest.fixture
def page():
    with chromium_page(1400, 1000) as chromium:
        yield chromium


def pixel(plot: dict, x: float, y: float) -> tuple[float, float]:
    (x0, x1), (y0, y1) = plot["x"], plot["y"]
    return (plot["left"] + (x - x0) / (x1 - x0) * plot["width"],
            plot["top"] + (y1 - y) / (y1 - y0) * plot["height"])


def plot_geometry(page, prefix: str) -> dict:
    page.wait_for_function(f"() => ({PLOT_JS})({prefix!r}) !== null")
    page.wait_for_timeout(500)  # the scroll into view settles
    return page.evaluate(PLOT_JS, prefix)


def test_density_map_drills_into_a_region_and_opens_a_sample(server, page):
    base, store_root = server
    page.goto(f"{base}/run?run={NOISY}&view=Data+map")
    expect(page.get_by_role("heading", name="Regions")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Every one of the 4,000 samples is counted in DuckDB")).to_be_visible()
    density = plot_geometry(page, "Data map (density)")
    assert density["type"] == "heatmap"
    # the heatmap is drawn: its image of bins sits in the plot area
    expect(page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").first).to_be_attached()
    page.screenshot(path=str(ARTIFACTS / "density-1-map.png"))

    # drag a box over the unconfident, fairly variable corner (the chart starts in box mode)
    start, end = pixel(density, 0.20, 0.55), pixel(density, 0.35, 0.10)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    expect(page.get_by_text("samples in this region")).to_be_visible()
    low = float(page.get_by_label("Variability from").input_value())
    high = float(page.get_by_label("Variability to").input_value())
    bottom = float(page.get_by_label("Confidence from").input_value())
    top = float(page.get_by_label("Confidence to").input_value())
    assert low == pytest.approx(0.20, abs=0.01) and high == pytest.approx(0.35, abs=0.01)
    assert bottom == pytest.approx(0.10, abs=0.02) and top == pytest.approx(0.55, abs=0.02)
    summary = store_api.run_summary(store_api.Store(store_root), NOISY)
    inside = summary["variability"].between(low, high) & summary["confidence"].between(bottom, top)
    expect(page.get_by_text(f"Showing all {int(inside.sum()):,} samples in this region")).to_be_visible()

    # the region's points: click the first one, the sample view opens
    region = plot_geometry(page, "Region:")
    assert region["type"] == "scattergl" and low <= region["first"]["x"] <= high
    point = pixel(region, region["first"]["x"], region["first"]["y"])
    page.mouse.move(*point)
    page.wait_for_timeout(300)
    page.mouse.click(*point)
    sample_id = int(region["first"]["id"])
    expect(page.get_by_role("heading", name=f"Sample {sample_id}")).to_be_visible()
    assert bool(inside[summary["sample_id"] == sample_id].iloc[0])
    page.screenshot(path=str(ARTIFACTS / "density-2-region-sample.png"), full_page=True)
    assert "Traceback" not in page.content()
