"""The million-point data map and agreement scatter (issue 13 item 4) in AppTest: past the
density threshold (lowered here with ``TRAINMAP_DENSITY_THRESHOLD`` so that the 4,000-sample
``sample_runs/`` cross it) the page draws every sample as bins, and a typed region is drilled
into as points; values checked against pandas on the store's summary. The density builder
and the threshold's parsing alone. The same flow in Chromium: test_browser_density.py."""

from __future__ import annotations

import base64

import numpy as np
import pytest

import store as store_api
from conftest import sample_run_ids
from dashboard import charts_map, data_density
from store.views import density as density_views
from tests.dashboard.app_pages import app_test, figures, metrics, run_clean, texts

RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]
NOISY_OTHER_SEED = RUNS["cnn-noise20-s1"]


def decoded(array, shape=None) -> np.ndarray:
    """A Plotly JSON array (a list, or {"dtype", "bdata", "shape"}) as numpy."""
    if isinstance(array, dict):
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        if "shape" in array:
            values = values.reshape([int(n) for n in str(array["shape"]).split(",")])
        return values
    return np.asarray(array, dtype=float)


@pytest.fixture
def low_threshold(monkeypatch):
    monkeypatch.setenv(data_density.THRESHOLD_VARIABLE, "1000")


def test_past_the_threshold_the_map_is_a_density_of_every_sample(sample_store, low_threshold):
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Data map"))
    [figure] = figures(at)
    heatmap, centres = figure["data"]
    assert heatmap["type"] == "heatmap" and centres["name"] == charts_map.BIN_CENTRES
    counts = 10 ** decoded(heatmap["z"]).astype(float)  # samples, on a log10 scale
    assert np.nansum(counts) == pytest.approx(4_000, rel=1e-4)
    assert np.isfinite(counts).sum() <= 100 * 100 == len(decoded(heatmap["z"]).ravel())
    assert "all 4,000 samples in 100 × 100 bins" in figure["layout"]["title"]["text"]
    assert {shape["name"] for shape in figure["layout"]["shapes"]} == {"ambiguous cut-off", "easy cut-off"}
    page = texts(at)
    assert "Every one of the 4,000 samples is counted in DuckDB (runs over 1,000 samples" in page
    assert "at most 10,000 bins" in page and "at most 5,000 of them are drawn" in page
    shown = metrics(at)  # the region counts still count every sample
    assert [shown[name] for name in ("easy-to-learn", "ambiguous", "hard-to-learn")] == ["1,334", "1,333", "1,333"]

    # a region typed in: its samples as the points map, zoomed onto it
    for key, value in zip(("map_region_variability_low", "map_region_variability_high",
                           "map_region_confidence_low", "map_region_confidence_high"), (0.2, 0.35, 0.1, 0.5)):
        at.number_input(key=key).set_value(value)
    run_clean(at)
    density_figure, points_figure = figures(at)
    summary = store_api.run_summary(sample_store, NOISY)
    inside = summary["variability"].between(0.2, 0.35) & summary["confidence"].between(0.1, 0.5)
    drawn = np.concatenate([decoded(trace["x"]) for trace in points_figure["data"]])
    assert len(drawn) == int(inside.sum()) > 0 and drawn.min() >= 0.2 and drawn.max() <= 0.35
    title = points_figure["layout"]["title"]["text"]
    assert title.startswith("Region: variability 0.200–0.350, confidence 0.100–0.500")
    assert points_figure["layout"]["xaxis"]["range"] == pytest.approx([0.2 - 0.003, 0.35 + 0.003])
    assert f"Showing all {int(inside.sum()):,} samples in this region" in texts(at)


def test_past_the_threshold_compare_draws_the_agreement_as_a_density(sample_store, low_threshold):
    at = run_clean(app_test(sample_store, "views/compare.py", runs=[NOISY, NOISY_OTHER_SEED]))
    [figure] = [f for f in figures(at) if "(density)" in (f["layout"].get("title") or {}).get("text", "")]
    assert figure["data"][0]["type"] == "heatmap"
    counts = 10 ** decoded(figure["data"][0]["z"]).astype(float)
    assert np.nansum(counts) == pytest.approx(4_000, rel=1e-4)
    assert not any(trace.get("type") == "scattergl" and trace.get("name") == "given label"
                   for f in figures(at) for trace in f["data"])  # no points scatter


def test_the_density_figure_holds_the_bins(sample_store):
    binned = density_views.map_density(sample_store, NOISY, "aum", x_bins=12, y_bins=9)
    figure = charts_map.density_figure(binned.bins, 12, 9, binned.x_range, binned.y_range, "flipped-label share",
                                       "t", "variability", "confidence", score_name="aum")
    z = np.asarray(figure.data[0].z, dtype=float)
    assert z.shape == (9, 12) and np.isfinite(z).sum() == len(binned.bins)
    rows, cols = binned.bins["y_bin"].to_numpy(), binned.bins["x_bin"].to_numpy()
    assert z[rows, cols] == pytest.approx(binned.bins["flipped_share"].to_numpy(), rel=1e-6)
    custom = np.asarray(figure.data[0].customdata, dtype=float)
    assert custom[rows, cols, 0].tolist() == binned.bins["samples"].tolist()
    assert (figure.data[0].zmin, figure.data[0].zmax) == (0, 1)
    assert len(figure.data[1].x) == len(binned.bins)  # one invisible centre per non-empty bin


def test_the_threshold_and_its_variable(monkeypatch):
    monkeypatch.delenv(data_density.THRESHOLD_VARIABLE, raising=False)
    assert data_density.density_threshold() == data_density.DENSITY_THRESHOLD == 20_000
    monkeypatch.setenv(data_density.THRESHOLD_VARIABLE, " 500 ")
    assert data_density.density_threshold() == 500
    for bad in ("many", "0", "-3"):
        monkeypatch.setenv(data_density.THRESHOLD_VARIABLE, bad)
        with pytest.raises(ValueError, match="TRAINMAP_DENSITY_THRESHOLD must be a positive whole number"):
            data_density.density_threshold()
