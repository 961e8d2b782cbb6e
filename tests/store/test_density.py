"""store.views.density: the million-point views' bins and drill-down, checked against a pandas
reference (the same bin rule written again with numpy) on a tmp copy of ``sample_runs/``
(4,000 samples, 20 % flipped labels), and on a sequence run that has no label_noisy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import store as store_api
from store.views import density
from store.views import run as run_views

from conftest import sample_run_ids, write_sequence_run

RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]
NOISY_OTHER_SEED = RUNS["cnn-noise20-s1"]


@pytest.fixture(scope="module")
def noisy_summary(sample_store) -> pd.DataFrame:
    return store_api.run_summary(sample_store, NOISY)


def reference_bins(x: pd.Series, y: pd.Series, flipped: pd.Series, value: pd.Series | None,
                   x_bins: int, y_bins: int, x_range=None, y_range=None) -> pd.DataFrame:
    """The bin rule of the module docstring, in pandas: [start, end) bins over the data's range,
    the last one closed; samples outside an explicit range left out."""
    x_range = x_range or (float(x.min()), float(x.max()))
    y_range = y_range or (float(y.min()), float(y.max()))
    dx, dy = (x_range[1] - x_range[0]) / x_bins, (y_range[1] - y_range[0]) / y_bins
    inside = x.between(*x_range) & y.between(*y_range)
    frame = pd.DataFrame({
        "x_bin": np.minimum(np.floor((x[inside] - x_range[0]) / dx), x_bins - 1).astype(int),
        "y_bin": np.minimum(np.floor((y[inside] - y_range[0]) / dy), y_bins - 1).astype(int),
        "flipped": flipped[inside].astype(bool),
        "value": (value if value is not None else pd.Series(np.nan, index=x.index))[inside].astype(float),
    })
    grouped = frame.groupby(["y_bin", "x_bin"])
    return pd.DataFrame({"samples": grouped.size(), "flipped": grouped["flipped"].sum(),
                         "color_mean": grouped["value"].mean()}).reset_index().sort_values(
        ["y_bin", "x_bin"], ignore_index=True)


def test_map_density_counts_every_sample_like_pandas(sample_store, noisy_summary):
    binned = density.map_density(sample_store, NOISY, "aum", x_bins=20, y_bins=15)
    summary = noisy_summary
    expected = reference_bins(summary["variability"], summary["confidence"], summary["label_noisy"],
                              summary["aum"], 20, 15)
    bins = binned.bins
    assert list(bins.columns) == list(density.BIN_COLUMNS)
    assert bins[["y_bin", "x_bin", "samples", "flipped"]].values.tolist() == \
        expected[["y_bin", "x_bin", "samples", "flipped"]].values.tolist()
    assert bins["color_mean"].to_numpy() == pytest.approx(expected["color_mean"].to_numpy(), rel=1e-5)
    assert bins["flipped_share"].to_numpy() == pytest.approx((expected["flipped"] / expected["samples"]).to_numpy())
    # every sample once, 800 of them flipped (20 % of 4,000), in at most 20 x 15 bins
    assert binned.total == bins["samples"].sum() == len(summary) == 4_000
    assert binned.labelled == 4_000 and bins["flipped"].sum() == summary["label_noisy"].sum() == 800
    assert len(bins) <= 20 * 15 and (bins["samples"] > 0).all()
    assert binned.x_range == pytest.approx((summary["variability"].min(), summary["variability"].max()))
    assert binned.y_range == pytest.approx((summary["confidence"].min(), summary["confidence"].max()))
    # the edges follow the bin index
    assert bins["x_start"].to_numpy() == pytest.approx(binned.x_range[0] + bins["x_bin"] * binned.x_width)
    assert bins["y_end"].to_numpy() == pytest.approx(binned.y_range[0] + (bins["y_bin"] + 1) * binned.y_width)


def test_an_explicit_range_leaves_out_the_samples_outside_it(sample_store, noisy_summary):
    binned = density.map_density(sample_store, NOISY, x_bins=10, y_bins=10, x_range=(0.0, 0.2),
                                 y_range=(0.5, 1.0))
    summary = noisy_summary
    expected = reference_bins(summary["variability"], summary["confidence"], summary["label_noisy"], None,
                              10, 10, (0.0, 0.2), (0.5, 1.0))
    inside = summary["variability"].between(0, 0.2) & summary["confidence"].between(0.5, 1.0)
    assert binned.total == int(inside.sum()) == expected["samples"].sum()
    assert 0 < binned.total < len(summary)
    assert bins_key(binned.bins) == bins_key(expected)


def bins_key(frame: pd.DataFrame) -> list:
    return frame[["y_bin", "x_bin", "samples", "flipped"]].values.tolist()


def test_a_box_drilled_into_is_capped_and_counts_all_its_samples(sample_store, noisy_summary):
    summary = noisy_summary
    box = ((0.15, 0.35), (0.1, 0.6))
    inside = summary["variability"].between(*box[0]) & summary["confidence"].between(*box[1])
    capped = density.map_region_points(sample_store, NOISY, "correctness", *box, max_points=100)
    assert capped.total == int(inside.sum()) > 100
    assert capped.shown == 100 and capped.is_partial and capped.method == "random sample"
    assert set(capped.frame["sample_id"]) <= set(summary.loc[inside, "sample_id"])
    assert capped.frame["sample_id"].is_monotonic_increasing
    # the same columns as the points map, with the summary's values
    assert list(capped.frame.columns) == ["sample_id", "label", "original_label", "label_noisy",
                                          "confidence", "variability", "color_value"]
    rows = summary.set_index("sample_id").loc[capped.frame["sample_id"]]
    assert capped.frame["confidence"].to_numpy() == pytest.approx(rows["confidence"].to_numpy())
    assert capped.frame["color_value"].to_numpy() == pytest.approx(rows["correctness"].to_numpy())
    # deterministic, and everything when the cap allows it
    again = density.map_region_points(sample_store, NOISY, "correctness", *box, max_points=100)
    assert again.frame["sample_id"].tolist() == capped.frame["sample_id"].tolist()
    every = density.map_region_points(sample_store, NOISY, "correctness", *box, max_points=10_000)
    assert every.method == "all" and sorted(every.frame["sample_id"]) == sorted(summary.loc[inside, "sample_id"])
    empty = density.map_region_points(sample_store, NOISY, "correctness", (0.9, 1.0), (0.0, 0.01))
    assert empty.total == 0 and empty.frame.empty


def test_a_box_along_bin_edges_holds_exactly_its_bins(sample_store):
    binned = density.map_density(sample_store, NOISY, x_bins=8, y_bins=8)
    low, high = 2, 5  # bins 2..5 on both axes
    x_box = (binned.x_range[0] + low * binned.x_width, binned.x_range[0] + (high + 1) * binned.x_width)
    y_box = (binned.y_range[0] + low * binned.y_width, binned.y_range[0] + (high + 1) * binned.y_width)
    # shrink by a hair so the closed box does not reach into the next bins
    eps = 1e-9
    region = density.map_region_points(sample_store, NOISY, "correctness", (x_box[0], x_box[1] - eps),
                                       (y_box[0], y_box[1] - eps), max_points=0)
    bins = binned.bins
    chosen = bins["x_bin"].between(low, high) & bins["y_bin"].between(low, high)
    assert region.total == bins.loc[chosen, "samples"].sum() > 0
    assert region.frame.empty  # max_points 0: the count only


def test_agreement_density_joins_two_runs_like_pandas(sample_store):
    a = store_api.run_summary(sample_store, NOISY)
    b = store_api.run_summary(sample_store, NOISY_OTHER_SEED)
    joined = a[["sample_id", "label_noisy", "el2n"]].merge(b[["sample_id", "el2n"]], on="sample_id",
                                                           suffixes=("_a", "_b"))
    binned = density.agreement_density(sample_store, NOISY, NOISY_OTHER_SEED, "el2n", x_bins=25, y_bins=25)
    expected = reference_bins(joined["el2n_a"], joined["el2n_b"], joined["label_noisy"], None, 25, 25)
    assert bins_key(binned.bins) == bins_key(expected)
    assert binned.total == len(joined) == 4_000
    assert binned.bins["color_mean"].isna().all()
    box = ((0.5, 1.0), (0.5, 1.0))
    inside = joined["el2n_a"].between(*box[0]) & joined["el2n_b"].between(*box[1])
    region = density.agreement_region_points(sample_store, NOISY, NOISY_OTHER_SEED, "el2n", *box, max_points=50)
    assert region.total == int(inside.sum()) > 50 and region.shown == 50
    assert list(region.frame.columns) == ["sample_id", "label_noisy", "value_a", "value_b"]
    assert region.frame["value_a"].between(*box[0]).all() and region.frame["value_b"].between(*box[1]).all()


def test_a_run_without_label_noise_has_a_zero_flipped_share(store):
    rng = np.random.default_rng(0)
    shape = (30, 4)
    run_id = write_sequence_run(store, rng.uniform(0, 1, shape), rng.integers(5, 20, shape[0]),
                                rng.uniform(0.1, 3, shape), rng.uniform(0.05, 0.95, shape),
                                rng.normal(0, 1, shape), finish=True)
    binned = density.map_density(store, run_id, "loss", x_bins=5, y_bins=5)
    assert binned.total == binned.labelled == 30  # a sequence's labels are never flipped: known, not missing
    assert (binned.bins["flipped_share"] == 0).all() and (binned.bins["flipped"] == 0).all()


def test_bad_bins_and_boxes_are_refused(sample_store):
    with pytest.raises(ValueError, match="x_bins must be between 1 and 200"):
        density.map_density(sample_store, NOISY, x_bins=201)
    with pytest.raises(ValueError, match="y_bins must be between 1 and 200"):
        density.agreement_density(sample_store, NOISY, NOISY_OTHER_SEED, "el2n", y_bins=0)
    with pytest.raises(ValueError, match="the x range must be two finite numbers, low < high"):
        density.map_density(sample_store, NOISY, x_range=(0.5, 0.5), y_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="low <= high"):
        density.map_region_points(sample_store, NOISY, "correctness", (0.3, 0.1), (0.0, 1.0))
    with pytest.raises(ValueError, match="max_points"):
        density.map_region_points(sample_store, NOISY, "correctness", (0.1, 0.3), (0.0, 1.0), max_points=-1)
    with pytest.raises(ValueError, match="unknown score 'no_such_score'"):
        density.map_density(sample_store, NOISY, "no_such_score")


def test_density_agrees_with_the_points_map_below_the_cap(sample_store):
    """Under the points cap the density and the sampled map see the same samples."""
    points = run_views.data_map(sample_store, NOISY, "correctness")
    binned = density.map_density(sample_store, NOISY, "correctness", x_bins=1, y_bins=1)
    assert binned.total == points.total == len(points.frame)
    assert binned.bins["color_mean"].iloc[0] == pytest.approx(points.frame["color_value"].mean())
