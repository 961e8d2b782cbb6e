"""Groups in the dashboard: the store views behind it (against pandas from the rows), the
pure figure builders, and the Run page's "Groups" section in AppTest."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from store.views.groups import group_loss_curves, group_score_boxes
from tests.dashboard.app_pages import app_test, figure_titles, figures, run_clean
from tests.dashboard.test_structure import DASHBOARD, imports_package, streamlit_calls
from tests.store.group_runs import GROUP_IDS, sample_groups, write_grouped_run

NAMES = {gid: name for name, gid in GROUP_IDS.items()}


def values(array) -> np.ndarray:
    """A plotly JSON array: a list, or typed binary data (``{"dtype", "bdata"}``)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    from store import Store

    store = Store(tmp_path_factory.mktemp("groups") / "store", create=True)
    return store, write_grouped_run(store, num_samples=30, num_epochs=5, batch_size=3, finish=True)


def per_sample_loss(rows: pd.DataFrame) -> pd.DataFrame:
    groups = sample_groups(rows).map(NAMES)
    return pd.DataFrame({"loss": rows.groupby("sample_id")["loss"].mean().loc[groups.index], "group": groups})


def test_loss_curves_are_capped_and_are_the_means_of_their_buckets(grouped):
    store, run = grouped
    rows = run.rows.dropna(subset=["group_id"])
    full = group_loss_curves(store, run.run_id, max_points=10_000)
    assert full.method == "all" and full.total == full.shown == rows.groupby(["group_id", "step"]).ngroups
    capped = group_loss_curves(store, run.run_id, max_points=30)  # 3 groups: 10 buckets of 5 of the 50 steps
    assert capped.method == "bucket means" and capped.is_partial
    # per step the total is exact; in buckets it counts each bucket's width: every group has rows in
    # each of the 10 buckets here, so they cover 3 x 50 steps, an upper bound of the 101 exact points
    assert full.total == 101 and len(capped.frame) == 30 and capped.total == 150
    assert capped.shown <= 30 and capped.frame.groupby("group").size().max() == 10
    for row in capped.frame.itertuples():
        inside = rows[(rows["group_id"] == row.group_id) & rows["step"].between(row.step, row.step_end)]
        np.testing.assert_allclose(row.loss, inside["loss"].mean(), rtol=1e-6)


def test_score_boxes_are_the_quartiles_of_each_groups_samples(grouped):
    store, run = grouped
    boxes = group_score_boxes(store, run.run_id, "loss").set_index("group")
    samples = per_sample_loss(run.rows)
    assert list(boxes.index) == ["code", "docs", "math"]
    for group, loss in samples.groupby("group")["loss"]:
        expected = [loss.min(), *np.quantile(loss, [0.25, 0.5, 0.75]), loss.max(), loss.mean()]
        np.testing.assert_allclose(boxes.loc[group, ["low", "q1", "median", "q3", "high", "mean"]].astype(float),
                                   expected, rtol=1e-6)
        assert boxes.loc[group, "samples"] == len(loss)
    with pytest.raises(ValueError, match="unknown score"):
        group_score_boxes(store, run.run_id, "loss; DROP TABLE summary")


def test_figure_builders_draw_one_trace_per_group_in_one_colour_each():
    from dashboard import charts_groups

    curves = pd.DataFrame({"group": ["b", "b", "a", "a"], "step": [0, 1, 0, 1], "loss": [2.0, 1.5, 1.0, 0.5]})
    loss = charts_groups.group_loss_figure(curves, total=8, groups=["a", "b", "c"])
    assert [trace.name for trace in loss.data] == ["a", "b"]
    assert list(loss.data[1].y) == [2.0, 1.5] and "showing 4 of 8 points" in loss.layout.title.text
    boxes = pd.DataFrame({"group": ["c", "b"], "samples": [3, 4], "low": [0, 1], "q1": [1, 2], "median": [2, 3],
                          "q3": [3, 4], "high": [4, 5], "mean": [2.5, 3.5]})
    box = charts_groups.group_box_figure(boxes, "el2n", groups=["a", "b", "c"])
    colors = charts_groups.group_colors(["a", "b", "c"])
    assert [trace.marker.color for trace in box.data] == [colors["c"], colors["b"]]
    assert list(box.data[0].q1) == [1] and list(box.data[1].upperfence) == [5]
    assert loss.data[1].line.color == colors["b"] and len(set(colors.values())) == 3
    # pure: no Streamlit, no store
    path = DASHBOARD / "charts_groups.py"
    assert streamlit_calls(path) == [] and not imports_package(path, "store")


def test_the_run_page_shows_the_groups_section(grouped):
    store, run = grouped
    at = run_clean(app_test(store, "views/run.py", run=run.run_id, view="Curves"))
    assert [h.value for h in at.subheader].count("Groups") == 1
    titles = figure_titles(at)
    assert titles[:3] == ["Loss per group and step", "Loss per group and epoch",
                          "Loss per group<br><sup>per sample; whiskers: min and max</sup>"]
    step_figure, epoch_figure, box_figure = figures(at)[:3]
    rows = run.rows.dropna(subset=["group_id"]).assign(group=lambda f: f["group_id"].map(NAMES))
    assert [trace["name"] for trace in step_figure["data"]] == ["code", "docs", "math"]
    docs = rows[rows["group"] == "docs"].groupby("step")["loss"].mean()
    np.testing.assert_allclose(values(step_figure["data"][1]["y"]), docs.to_numpy(), rtol=1e-6)
    per_epoch = rows[rows["group"] == "math"].groupby("epoch")["loss"].mean()
    np.testing.assert_allclose(values(epoch_figure["data"][2]["y"]), per_epoch.to_numpy(), rtol=1e-6)
    medians = per_sample_loss(run.rows).groupby("group")["loss"].median()
    np.testing.assert_allclose([values(trace["median"])[0] for trace in box_figure["data"]], medians, rtol=1e-6)
    # another score for the spread
    at.selectbox(key="group_score").set_value("aum").run()
    assert any(t.startswith("Aum per group") for t in figure_titles(at))


def test_a_run_without_groups_has_no_groups_section(store):
    from conftest import write_synthetic_run

    p = np.tile(np.linspace(0.9, 0.1, 5)[:, None], (1, 2))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5)
    at = run_clean(app_test(store, "views/run.py", run=run_id, view="Curves"))
    assert "Groups" not in [h.value for h in at.subheader]
    assert not any("per group" in t for t in figure_titles(at))
