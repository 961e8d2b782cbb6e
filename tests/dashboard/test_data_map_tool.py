"""The data map as a tool (issue 15 item 4): region cut-offs drawn and counted per the stated
rule, the predicted and suggested labels in the sample view and the tables, the per-layer
gradient norms on the Curves tab, and a box selection made into a curriculum file.

AppTest against a tmp copy of ``sample_runs/`` (values checked against independent numpy /
pandas computations on the store's presentations and summary), and one real headless
Chromium at 1400 x 900 for the box selection (screenshots under ``test-artifacts/``).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest

import store as store_api
from browser_session import ARTIFACTS, chromium_page, dashboard_server
from conftest import sample_run_ids
from store.curriculum import list_curricula, load_curriculum
from store.queries import dynamics, layer_grad_norms
from tests.dashboard.app_pages import app_test, figures, metrics, run_clean, texts

RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]


def thirds(summary: pd.DataFrame) -> tuple[float, float, pd.Series]:
    """The rule the page states, written out again: ambiguous = variability above its 2/3
    quantile; the rest split at their median confidence."""
    ambiguous_cut = float(np.quantile(summary["variability"], 2 / 3))
    rest = summary["variability"] <= ambiguous_cut
    easy_cut = float(np.median(summary.loc[rest, "confidence"]))
    region = pd.Series("hard-to-learn", index=summary.index)
    region[rest & (summary["confidence"] >= easy_cut)] = "easy-to-learn"
    region[~rest] = "ambiguous"
    return ambiguous_cut, easy_cut, region


def suggested(presentations: pd.DataFrame, sample_id: int, label: int, epochs: tuple[int, int]) -> tuple[int, float]:
    """Most frequent prediction over ``epochs`` (ties: the given label, then the smallest class)."""
    window = presentations[(presentations["sample_id"] == sample_id)
                           & presentations["epoch"].between(*epochs)]["pred"].astype(int)
    counts = window.value_counts()
    best = counts[counts == counts.max()].index.tolist()
    choice = label if label in best else min(best)
    return choice, counts[choice] / len(window)


def decoded(array) -> np.ndarray:
    """A Plotly JSON array (a list, or {"dtype", "bdata"}) as numpy."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array)


# -- AppTest -------------------------------------------------------------------------------


def test_data_map_draws_and_counts_the_runs_thirds(sample_store):
    summary = store_api.run_summary(sample_store, NOISY)
    ambiguous_cut, easy_cut, region = thirds(summary)
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Data map"))
    shown = metrics(at)
    expected = region.value_counts()
    assert [shown[name] for name in ("easy-to-learn", "ambiguous", "hard-to-learn")] == [
        f"{expected[name]:,}" for name in ("easy-to-learn", "ambiguous", "hard-to-learn")]
    assert [shown["easy-to-learn"], shown["ambiguous"], shown["hard-to-learn"]] == ["1,334", "1,333", "1,333"]
    shapes = {shape["name"]: shape for shape in figures(at)[0]["layout"]["shapes"]}
    assert shapes["ambiguous cut-off"]["x0"] == pytest.approx(ambiguous_cut)
    assert shapes["easy cut-off"]["y0"] == pytest.approx(easy_cut)
    assert shapes["easy cut-off"]["x1"] == pytest.approx(ambiguous_cut)  # the line stops at the ambiguous one
    page = texts(at)
    assert "per-run thirds" in page and f"variability > {ambiguous_cut:.3f} is ambiguous" in page


def test_cutoffs_set_by_hand_recount(sample_store):
    summary = store_api.run_summary(sample_store, NOISY)
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Data map"))
    at.toggle(key="map_manual_cutoffs").set_value(True).run()
    at.slider(key="map_ambiguous").set_value(0.2).run()
    at.slider(key="map_easy").set_value(0.5)
    at = run_clean(at)
    ambiguous = summary["variability"] > 0.2
    shown = metrics(at)
    assert shown["ambiguous"] == f"{int(ambiguous.sum()):,}"
    assert shown["hard-to-learn"] == f"{int((~ambiguous & (summary['confidence'] < 0.5)).sum()):,}"
    shapes = {shape["name"]: shape for shape in figures(at)[0]["layout"]["shapes"]}
    assert shapes["ambiguous cut-off"]["x0"] == pytest.approx(0.2)
    assert "Cut-offs set by hand" in texts(at)


def test_sample_view_shows_the_predicted_and_suggested_label(sample_store):
    presentations = dynamics(sample_store, NOISY)
    summary = store_api.run_summary(sample_store, NOISY).set_index("sample_id")
    flipped = summary.index[summary["label_noisy"].astype(bool)][:40]
    last = presentations.sort_values("step").groupby("sample_id")["pred"].last()
    # a flipped sample the net ended up predicting differently from its given label
    sample_id = next(int(s) for s in flipped if last[s] != summary.loc[s, "label"])
    label, epochs = int(summary.loc[sample_id, "label"]), (0, 9)  # default window: the first half of 0..19
    choice, share = suggested(presentations, sample_id, label, epochs)
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Samples", sample=str(sample_id)))
    page = texts(at)
    assert f"predicted **{int(last[sample_id])}** at its last presentation" in page
    assert f"suggested label **{choice}** (confidence {share:.2f} over epochs 0–9)" in page
    # another window, chosen on the page
    at.slider(key="relabel_epochs").set_value((5, 9))
    at = run_clean(at)
    choice, share = suggested(presentations, sample_id, label, (5, 9))
    assert f"suggested label **{choice}** (confidence {share:.2f} over epochs 5–9)" in texts(at)


def test_samples_tables_lead_with_their_key_column(sample_store):
    presentations = dynamics(sample_store, NOISY)
    last = presentations.sort_values("step").groupby("sample_id")["pred"].last()
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Samples"))
    hardest, forgotten, mislabeled = (frame.value for frame in at.dataframe[:3])
    assert hardest.columns[:2].tolist() == ["sample_id", "loss"]
    assert forgotten.columns[:2].tolist() == ["sample_id", "forgetting_events"]
    assert mislabeled.columns[:2].tolist() == ["sample_id", "aum"]
    for frame in (hardest, forgotten, mislabeled):
        assert {"predicted_label", "suggested_label", "suggested_confidence"} <= set(frame.columns)
        assert frame["predicted_label"].astype(int).tolist() == last.loc[frame["sample_id"]].astype(int).tolist()
    assert mislabeled["aum"].is_monotonic_increasing
    # never-learned samples lead "Most forgotten" and say so, never as a count of 0
    summary = store_api.run_summary(sample_store, NOISY).set_index("sample_id").loc[forgotten["sample_id"]]
    expected = ["never learned" if never else str(int(events))
                for never, events in zip(summary["never_learned"], summary["forgetting_events"])]
    assert forgotten["forgetting_events"].tolist() == expected and expected[0] == "never learned"


def test_curves_tab_draws_each_layers_gradient_norm(sample_store):
    recorded = layer_grad_norms(sample_store, NOISY)
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Curves"))
    figure = next(f for f in figures(at) if f["layout"]["title"]["text"].startswith("Gradient norm per layer"))
    assert [trace["name"] for trace in figure["data"]] == sorted(recorded["layer"].unique())
    assert figure["layout"]["yaxis"]["type"] == "log"
    for trace in figure["data"]:
        expected = recorded[recorded["layer"] == trace["name"]].sort_values("step")
        np.testing.assert_allclose(decoded(trace["y"]), expected["grad_norm"], rtol=1e-6)


def test_selection_csv_lists_the_ids_in_order():
    from dashboard import data_map

    frame = pd.read_csv(io.BytesIO(data_map.selection_csv((12, 3, 7))))
    assert frame.columns.tolist() == ["sample_id"] and frame["sample_id"].tolist() == [3, 7, 12]


# -- Chromium: a box selection made into a curriculum ---------------------------------------


@pytest.fixture
def server(tmp_path):
    with dashboard_server(tmp_path) as served:
        yield served


@pytest.fixture
def page():
    with chromium_page(1400, 900) as chromium:
        yield chromium


MAP_AXES_JS = """() => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(
        g => g._fullLayout && g._fullLayout.xaxis && g._fullLayout.xaxis.title &&
             String(g._fullLayout.xaxis.title.text || '').includes('variability'));
    gd.scrollIntoView({block: "center"});
    const layout = gd._fullLayout, box = gd.getBoundingClientRect();
    return {left: box.left + layout._size.l, top: box.top + layout._size.t,
            width: layout.xaxis._length, height: layout.yaxis._length,
            x: layout.xaxis.range, y: layout.yaxis.range};
}"""


@pytest.mark.browser
def test_box_selection_becomes_a_curriculum_in_chromium(server, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)

    base, store_root = server
    page.goto(f"{base}/run?run={NOISY}&view=Data+map")
    expect(page.get_by_role("heading", name="Regions")).to_be_visible(timeout=60_000)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.wait_for_timeout(1500)
    axes = page.evaluate(MAP_AXES_JS)
    page.screenshot(path=str(ARTIFACTS / "map-1-cutoffs.png"))

    def pixel(x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = axes["x"], axes["y"]
        return (axes["left"] + (x - x0) / (x1 - x0) * axes["width"],
                axes["top"] + (y1 - y) / (y1 - y0) * axes["height"])

    def data_at(px: float, py: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = axes["x"], axes["y"]
        return (x0 + (px - axes["left"]) / axes["width"] * (x1 - x0),
                y1 - (py - axes["top"]) / axes["height"] * (y1 - y0))

    # the box tool, then a drag over the unconfident, fairly variable corner
    page.mouse.move(*pixel(0.2, 0.5))
    page.locator(".modebar-btn[data-title='Box Select']").first.click()
    start, end = pixel(0.30, 0.32), pixel(0.42, 0.05)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    heading = page.get_by_role("heading", name="Selection:")
    expect(heading).to_be_visible()
    selected_count = int(heading.inner_text().split()[1].replace(",", ""))

    # the points inside the dragged box, from the summary (every sample is drawn: 4,000 < the cap)
    (vx0, cy1), (vx1, cy0) = data_at(*start), data_at(*end)
    summary = store_api.run_summary(store_api.Store(store_root), NOISY)
    inside = summary["variability"].between(vx0, vx1) & summary["confidence"].between(cy0, cy1)
    near_edge = (np.minimum.reduce([abs(summary["variability"] - vx0), abs(summary["variability"] - vx1)]) < 2e-3) | (
        np.minimum.reduce([abs(summary["confidence"] - cy0), abs(summary["confidence"] - cy1)]) < 4e-3)
    assert selected_count > 0
    page.screenshot(path=str(ARTIFACTS / "map-2-selection.png"), full_page=True)

    # down-weight the selection to 0.5 and save it into the store's curricula/
    page.get_by_text("Down-weight the selection").click()
    weight = page.get_by_label("Weight of the selection")
    expect(weight).to_be_enabled()
    weight.fill("0.5")
    weight.press("Enter")
    page.get_by_label("Name (optional)").fill("corner-box")
    page.get_by_label("Name (optional)").press("Enter")
    page.wait_for_timeout(800)
    expect(page.get_by_role("heading", name=f"Selection: {selected_count:,} samples")).to_be_visible()
    page.get_by_role("button", name="Save curriculum").click()
    expect(page.get_by_text("into the store's curricula/")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "map-3-saved.png"), full_page=True)

    saved = [path for path in list_curricula(store_root) if path.name == "corner-box.parquet"]  # named by the user
    assert len(saved) == 1
    curriculum = load_curriculum(saved[0], task="mnist1d", sample_ids=summary["sample_id"].to_numpy())
    weights = curriculum.table.set_index("sample_id")["weight"]
    chosen = weights.index[weights == 0.5]
    assert len(chosen) == selected_count and len(weights) == 4000
    assert set(weights.unique()) == {0.5, 1.0}
    assert curriculum.label == "corner-box"
    # exactly the samples inside the box, up to those within a pixel of its edges
    assert set(chosen) >= set(summary.loc[inside & ~near_edge, "sample_id"])
    assert set(chosen) <= set(summary.loc[inside | near_edge, "sample_id"])

    # the Samples tab at 1400 px: the key score column is the first after the id
    page.goto(f"{base}/run?run={NOISY}&view=Samples")
    expect(page.get_by_role("heading", name="Most forgotten")).to_be_visible()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / "map-4-samples-1400.png"))
    assert "Traceback" not in page.content()
