"""Dashboard: store views, Plotly builders, and every page through Streamlit's AppTest.

Pages run against a tmp copy of ``sample_runs/`` (4 compacted MNIST-1D CNN runs: clean
and 20 % label noise, two seeds each) and assert on what is shown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import spearmanr

import store as store_api
from dashboard import charts
from store import Store, cartography_region, rank_hardest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")
SAMPLE_RUNS = REPO / "sample_runs"


def sample_run_ids() -> dict[str, str]:
    """name -> run_id of the shipped sample runs."""
    ids = {}
    for path in sorted((SAMPLE_RUNS / "runs").iterdir()):
        info = json.loads((path / "run.json").read_text())
        ids[info["name"]] = info["run_id"]
    return ids


RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]
NOISY_OTHER_SEED = RUNS["cnn-noise20-s1"]


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("dashboard") / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    return Store(root)


@pytest.fixture
def fresh_store(tmp_path) -> Store:
    root = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    return Store(root)


def app_test(store: Store, page: str | None = None, **params):
    """An AppTest of the whole app on ``store``, opened on ``page`` with URL ``params``."""
    from streamlit.testing.v1 import AppTest

    os.environ["TRAINMAP_STORE"] = str(store.root)
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def run_clean(at):
    """Run and assert that no exception (traceback) was shown."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def figure_titles(at) -> list[str]:
    return [(figure["layout"].get("title") or {}).get("text", "") for figure in figures(at)]


def metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.info, *at.warning, *at.error)]
    return "\n".join(str(p) for p in parts)


# -- the dashboard never imports torch ------------------------------------------------


def test_dashboard_modules_do_not_import_torch(sample_store):
    # the modules, then every page rendered through app.py, in a fresh interpreter
    code = (
        "import sys; import store, store.views, dashboard.common, dashboard.charts, dashboard.views; "
        "from streamlit.testing.v1 import AppTest\n"
        "for page in (None, 'views/runs.py', 'views/run.py', 'views/compare.py', 'views/curriculum.py'):\n"
        f"    at = AppTest.from_file({APP!r}, default_timeout=60)\n"
        "    at.run()\n"
        "    if page:\n"
        "        at.switch_page(page).run()\n"
        "    assert not at.exception, (page, [e.value for e in at.exception])\n"
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'lightning' not in sys.modules, 'lightning imported'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, TRAINMAP_STORE=str(sample_store.root)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- store.views against the store's own computations --------------------------------


def test_region_counts_match_store_cartography(sample_store):
    summary = store_api.run_summary(sample_store, NOISY)
    expected = cartography_region(summary["confidence"], summary["variability"]).value_counts()
    counts = store_api.region_counts(sample_store, NOISY).set_index("region")
    for region in ("easy-to-learn", "ambiguous", "hard-to-learn"):
        assert counts.loc[region, "samples"] == expected.get(region, 0)
    flipped = summary.groupby(cartography_region(summary["confidence"], summary["variability"]))[
        "label_noisy"].sum()
    assert counts["flipped"].sum() == flipped.sum() == summary["label_noisy"].sum()
    # other cut-offs move samples between regions, but all are still counted
    moved = store_api.region_counts(sample_store, NOISY, ambiguous_variability=0.4, easy_confidence=0.7)
    assert moved["samples"].sum() == len(summary)
    assert not moved["samples"].equals(counts["samples"].reset_index(drop=True))


@pytest.mark.parametrize("score", ["aum", "forgetting_events", "loss", "confidence"])
def test_hardest_samples_follow_the_registry(sample_store, score):
    summary = store_api.run_summary(sample_store, NOISY)
    expected = rank_hardest(summary, score)["sample_id"].head(15).tolist()
    got = store_api.hardest_samples(sample_store, NOISY, score, 15)["sample_id"].tolist()
    assert got == expected


def test_score_histograms_count_every_sample(sample_store):
    summary = store_api.run_summary(sample_store, NOISY)
    histograms = store_api.score_histograms(sample_store, NOISY, ["loss", "first_learned_epoch", "grand"])
    loss = histograms["loss"]
    assert len(loss.bins) <= 40 and loss.missing == 0  # empty bins are not sent
    assert loss.bins["samples"].sum() == len(summary)
    assert loss.bins["flipped"].sum() == summary["label_noisy"].sum()
    assert np.isclose(loss.bins["bin_start"].iloc[0], summary["loss"].min())
    assert np.isclose(loss.bins["bin_end"].iloc[-1], summary["loss"].max())
    first = histograms["first_learned_epoch"]
    assert first.missing == summary["never_learned"].sum() > 0  # never learned: no value, no sentinel
    assert (first.bins["bin_end"] - first.bins["bin_start"] == 1).all()
    grand = histograms["grand"]  # the sample runs record GraNd on the default schedule
    assert grand.missing == 0 and grand.bins["samples"].sum() == len(summary)
    assert np.isclose(grand.bins["bin_start"].iloc[0], summary["grand"].min())


def test_forgetting_counts_report_never_learned_apart(sample_store):
    summary = store_api.run_summary(sample_store, NOISY)
    counts = store_api.forgetting_counts(sample_store, NOISY).set_index("forgetting_events")
    assert counts.loc["never learned", "samples"] == summary["never_learned"].sum()
    learned = summary[~summary["never_learned"]]
    assert counts.loc["0", "samples"] == (learned["forgetting_events"] == 0).sum()
    assert counts["samples"].sum() == len(summary)


def test_data_map_samples_server_side(sample_store):
    full = store_api.data_map(sample_store, NOISY, "aum")
    assert full.shown == full.total == 4000 and full.method == "all"
    part = store_api.data_map(sample_store, NOISY, "aum", max_points=1000)
    assert part.shown == 1000 and part.total == 4000 and part.method == "random sample"
    assert part.frame["sample_id"].is_unique
    again = store_api.data_map(sample_store, NOISY, "aum", max_points=1000)
    assert again.frame["sample_id"].tolist() == part.frame["sample_id"].tolist()  # seeded
    summary = store_api.run_summary(sample_store, NOISY).set_index("sample_id")
    row = part.frame.iloc[0]
    assert np.isclose(row["color_value"], summary.loc[row["sample_id"], "aum"])


def test_score_agreement_matches_scipy(sample_store):
    a = store_api.run_summary(sample_store, NOISY)
    b = store_api.run_summary(sample_store, NOISY_OTHER_SEED)
    agreement = store_api.score_agreement(sample_store, NOISY, NOISY_OTHER_SEED, "el2n", 0.1)
    assert agreement.common_samples == 4000 and agreement.top_k == 400
    assert agreement.spearman == pytest.approx(spearmanr(a["el2n"], b["el2n"]).statistic, abs=1e-9)
    top_a = set(a.nlargest(400, "el2n")["sample_id"])
    top_b = set(b.nlargest(400, "el2n")["sample_id"])
    assert agreement.top_k_overlap == pytest.approx(len(top_a & top_b) / 400)
    itself = store_api.score_agreement(sample_store, NOISY, NOISY, "aum", 0.05)
    assert itself.spearman == pytest.approx(1.0) and itself.top_k_overlap == 1.0


def test_step_curves_bucket_long_runs(sample_store):
    full = store_api.step_curves(sample_store, NOISY)
    assert full.method == "all" and full.shown == full.total == 1260
    bucketed = store_api.step_curves(sample_store, NOISY, max_points=100)
    assert bucketed.total == 1260 and 90 <= bucketed.shown <= 100
    assert bucketed.frame["step"].is_monotonic_increasing


# -- figure builders ------------------------------------------------------------------


def test_data_map_figure_marks_flipped_labels_and_says_it_is_sampled():
    points = pd.DataFrame({
        "sample_id": [0, 1, 2, 3], "label": [1, 2, 3, 4], "original_label": [1, 2, 0, 4],
        "label_noisy": [False, False, True, False], "confidence": [0.9, 0.5, 0.1, 0.7],
        "variability": [0.05, 0.3, 0.1, 0.2], "color_value": [1.0, 0.5, 0.0, 0.8],
    })
    figure = charts.data_map_figure(points, "correctness", total=10, selected_sample=2)
    assert [trace.type for trace in figure.data] == ["scattergl"] * 3
    assert [len(trace.x) for trace in figure.data] == [3, 1, 1]
    assert figure.data[1].marker.symbol == "x"
    assert list(figure.data[0].customdata[:, 0]) == [0, 1, 3]
    assert figure.layout.xaxis.title.text == "variability"
    assert figure.layout.yaxis.title.text == "confidence"
    assert "showing 4 of 10 samples (random sample)" in figure.layout.title.text
    assert "showing" not in charts.data_map_figure(points, "aum").layout.title.text


def test_step_figure_joins_sampled_gradient_norms_and_says_when_there_are_none():
    steps = pd.DataFrame({"step": range(6), "loss": [2.0, 1.8, 1.5, 1.4, 1.2, 1.1],
                          "grad_norm": [3.0, np.nan, np.nan, 2.0, np.nan, np.nan], "lr": [0.1] * 6})
    norms = charts.step_figure(steps, "grad_norm", "Gradient norm", log_y=True)
    assert list(norms.data[0].x) == [0, 3] and list(norms.data[0].y) == [3.0, 2.0]
    assert not norms.layout.annotations
    assert list(charts.step_figure(steps, "loss", "Loss").data[0].x) == list(range(6))
    none = charts.step_figure(steps.assign(grad_norm=np.nan), "grad_norm", "Gradient norm")
    assert len(none.data[0].x) == 0 and none.layout.annotations[0].text == "not recorded in this run"


def test_histogram_and_forgetting_figures():
    bins = pd.DataFrame({"bin_start": [0.0, 0.5], "bin_end": [0.5, 1.0], "samples": [10, 4],
                         "flipped": [1, 3]})
    figure = charts.histogram_figure(bins, "el2n", missing=2)
    assert len(figure.data) == 2 and figure.layout.barmode == "stack"
    assert list(figure.data[0].y) == [9, 1] and list(figure.data[1].y) == [1, 3]
    assert figure.layout.xaxis.title.text == "el2n" and "2 samples without a value" in figure.layout.title.text
    counts = pd.DataFrame({"forgetting_events": ["0", "1", "never learned"], "samples": [5, 3, 2],
                           "flipped": [0, 0, 2]})
    forgetting = charts.forgetting_figure(counts)
    assert list(forgetting.data[0].x) == ["0", "1", "never learned"]
    assert forgetting.layout.xaxis.type == "category"


def test_input_trajectory_and_compare_figures():
    line = charts.input_figure(np.arange(40, dtype=np.float32), "signal")
    assert line.data[0].type == "scatter" and len(line.data[0].y) == 40
    image = charts.input_figure(np.zeros((8, 8)), "image")
    assert image.data[0].type == "heatmap" and np.asarray(image.data[0].z).shape == (8, 8)
    trajectory = pd.DataFrame({"epoch": [0, 1, 2], "p_true": [0.1, 0.5, 0.9], "loss": [2.3, 0.7, 0.1],
                               "el2n": [1.2, 0.7, 0.1], "correct": [False, True, True]})
    figure = charts.trajectory_figure(trajectory)
    assert len(figure.data) == 4 and list(figure.data[3].y) == [0.0, 1.0, 1.0]
    curves = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "epoch": [0, 1, 0, 1],
                           "val_accuracy": [0.5, 0.6, 0.4, 0.7]})
    overlay = charts.compare_epochs_figure(curves, "val_accuracy", {"a": "run A", "b": "run B"})
    assert [trace.name for trace in overlay.data] == ["run A", "run B"]
    assert overlay.layout.yaxis.title.text == "validation accuracy"
    assert charts.sampling_note(20_000, 50_000) == "showing 20,000 of 50,000 samples (random sample)"


# -- pages ----------------------------------------------------------------------------


def test_runs_page_lists_every_run(sample_store):
    at = run_clean(app_test(sample_store))
    table = at.dataframe[0].value
    assert len(table) == len(RUNS) == 5
    assert set(table["name"]) == set(RUNS)
    assert set(table["status"]) == {"finished"}
    noisy = table.set_index("name").loc["cnn-noise20-s0"]
    assert noisy["label noise"] == pytest.approx(0.2)
    assert noisy["best val acc"] == pytest.approx(0.843)
    assert metrics(at)["Runs"] == "5"
    # the curriculum rerun lists its parent
    child = table.set_index("name").loc["cnn-noise20-s0-clean"]
    assert child["parent run"] in ("cnn-noise20-s0", RUNS["cnn-noise20-s0"])
    # filtering by name narrows the table
    at.text_input(key="runs_filter").input("noise20-s1").run()
    assert sorted(at.dataframe[0].value["name"]) == ["cnn-noise20-s1"]


def test_run_page_curves(sample_store):
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Curves"))
    assert at.title[0].value == "cnn-noise20-s0"
    assert metrics(at)["Best val accuracy"] == "84.3 %"
    assert metrics(at)["Samples"] == "4,000"
    titles = figure_titles(at)
    assert titles[:2] == ["Loss", "Accuracy"]
    assert any(t.startswith("Gradient norm") for t in titles)
    assert any(t.startswith("Learning rate") for t in titles)
    loss = figures(at)[0]
    assert len(loss["data"]) == 2 and len(loss["data"][0]["x"]["bdata"]) > 0


def test_run_page_data_map_shows_store_region_counts_and_sample(sample_store):
    summary = store_api.run_summary(sample_store, NOISY)
    expected = cartography_region(summary["confidence"], summary["variability"]).value_counts()
    flipped = summary[summary["label_noisy"]].iloc[0]
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Data map",
                            sample=str(int(flipped["sample_id"]))))
    shown = metrics(at)
    for region in ("easy-to-learn", "ambiguous", "hard-to-learn"):
        assert shown[region] == f"{expected.get(region, 0):,}"
    data_map = figures(at)[0]
    assert data_map["layout"]["xaxis"]["title"]["text"] == "variability"
    assert [trace["name"] for trace in data_map["data"][:2]] == ["given label", "flipped label"]
    page = texts(at)
    assert (f"given label **{int(flipped['label'])}**, original label "
            f"**{int(flipped['original_label'])}**") in page
    assert "flipped label" in page
    assert at.number_input(key="sample").value == int(flipped["sample_id"])
    # the sample's input (1-D signal) and its trajectory over 20 epochs are drawn
    titles = figure_titles(at)
    assert any(t.startswith("Input (label") for t in titles)
    assert "Over training" in titles


def test_run_page_typing_a_sample_id_shows_it(sample_store):
    at = run_clean(app_test(sample_store, "views/run.py", run=RUNS["cnn-clean-s0"], view="Data map"))
    assert "Pick a sample" in texts(at)
    summary = store_api.run_summary(sample_store, RUNS["cnn-clean-s0"]).set_index("sample_id")
    at.number_input(key="sample").set_value(123).run()
    assert not at.exception
    assert f"given label **{summary.loc[123, 'label']}**" in texts(at)
    assert at.subheader[-1].value == "Sample 123"


def test_run_page_scores_view_has_a_histogram_per_recorded_score(sample_store):
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Scores"))
    recorded = store_api.recorded_scores(sample_store, NOISY)
    titles = figure_titles(at)
    assert len(titles) == len(recorded)  # one histogram per score, forgetting as its own chart
    assert "Forgetting events" in titles
    assert any(t.startswith("el2n") for t in titles)


def test_run_page_tables_rank_like_the_registry(sample_store):
    at = run_clean(app_test(sample_store, "views/run.py", run=NOISY, view="Samples"))
    summary = store_api.run_summary(sample_store, NOISY)
    tables = [frame.value for frame in at.dataframe]
    assert [len(table) for table in tables] == [20, 20, 20]
    assert tables[0]["sample_id"].tolist() == rank_hardest(summary, "loss")["sample_id"].head(20).tolist()
    assert tables[2]["sample_id"].tolist() == rank_hardest(summary, "aum")["sample_id"].head(20).tolist()
    assert tables[2]["label_noisy"].mean() > 0.8  # lowest AUM: mostly the flipped labels


def test_compare_page_overlays_runs_and_measures_agreement(sample_store):
    at = run_clean(app_test(sample_store, "views/compare.py", runs=[NOISY, NOISY_OTHER_SEED]))
    a = store_api.run_summary(sample_store, NOISY)
    b = store_api.run_summary(sample_store, NOISY_OTHER_SEED)
    rho = spearmanr(a["el2n"], b["el2n"]).statistic
    shown = metrics(at)
    assert shown["Spearman rank correlation"] == f"{rho:.3f}"
    assert shown["Samples in both"] == "4,000"
    assert "Top-400 overlap" in shown
    curves = figures(at)[0]
    assert [trace["name"] for trace in curves["data"]] == ["cnn-noise20-s0", "cnn-noise20-s1"]
    scatter = figures(at)[-1]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "el2n — cnn-noise20-s0"


def test_compare_page_asks_for_two_runs(sample_store):
    at = run_clean(app_test(sample_store, "views/compare.py", runs=[NOISY]))
    assert any("Pick two or more runs" in info.value for info in at.info)


# -- empty, failed and unfinished runs -----------------------------------------------


@pytest.mark.parametrize("page", [None, "views/run.py", "views/compare.py"])
def test_empty_store_says_so(tmp_path, page):
    at = run_clean(app_test(Store(tmp_path / "nothing-here"), page))
    assert any("No runs in" in info.value for info in at.info)


def test_failed_run_is_explained(fresh_store):
    run_id = fresh_store.create_run(name="crashed", task="mnist1d", model="cnn", seed=0, max_epochs=5)
    fresh_store.update_run(run_id, status="failed", error="RuntimeError: CUDA out of memory")
    at = run_clean(app_test(fresh_store))
    assert any("crashed" in w.value and "CUDA out of memory" in w.value for w in at.warning)
    assert metrics(at)["Failed"] == "1"
    at = run_clean(app_test(fresh_store, "views/run.py", run=run_id))
    assert any("This run failed" in w.value for w in at.warning)
    assert any("no completed epoch" in info.value for info in at.info)


def test_live_run_without_an_epoch_then_with_one(fresh_store):
    from conftest import write_synthetic_run  # noqa: F401  (same helper the store tests use)

    run_id = fresh_store.create_run(name="live", task="mnist1d", model="mlp", seed=0, max_epochs=3)
    at = run_clean(app_test(fresh_store, "views/run.py", run=run_id, view="Data map"))
    assert any("has not completed an epoch yet" in info.value for info in at.info)
    assert "running · epoch 0/3" in texts(at)
    # the trainer finishes epoch 0: segments land, run.json reports progress
    num_samples = 50
    fresh_store.write_samples(run_id, pa.table({
        "sample_id": np.arange(num_samples), "label": np.zeros(num_samples, dtype=np.int64),
        "original_label": np.zeros(num_samples, dtype=np.int64),
        "label_noisy": np.zeros(num_samples, dtype=bool)}))
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.05, 0.95, num_samples).astype(np.float32)
    fresh_store.write_segment(run_id, "presentations", pa.table({
        "epoch": np.zeros(num_samples, dtype=np.int32), "step": np.arange(num_samples) // 10,
        "sample_id": np.arange(num_samples), "label": np.zeros(num_samples, dtype=np.int32),
        "loss": -np.log(p_true), "p_true": p_true, "el2n": np.sqrt(2) * (1 - p_true),
        "correct": p_true > 0.5, "pred": np.zeros(num_samples, dtype=np.int32),
        "margin": np.log(p_true / (1 - p_true)), "weight": np.ones(num_samples, dtype=np.float32),
        "grand_last": np.full(num_samples, np.nan, dtype=np.float32),
        "rank": np.zeros(num_samples, dtype=np.int16)}), "r00-e000000")
    fresh_store.update_run(run_id, epochs_done=1)
    time.sleep(0.05)
    at.run()  # AppTest runs no timers: a rerun stands in for the fragment's refresh
    assert not at.exception
    assert "running · epoch 1/3" in texts(at)
    assert metrics(at)["hard-to-learn"] == str(int((p_true < 0.5).sum()))
    assert metrics(at)["Samples"] == "50"
    runs = run_clean(app_test(fresh_store))
    table = runs.dataframe[0].value.set_index("name")
    assert table.loc["live", "status"] == "running · epoch 1/3"
    assert metrics(runs)["Running"] == "1"


def test_unknown_run_in_the_url_falls_back_to_the_newest(sample_store):
    at = run_clean(app_test(sample_store, "views/run.py", run="no-such-run"))
    assert at.selectbox(key="run").value == max(RUNS.values())


def test_ui_on_an_empty_store_seeds_it_with_a_copy_of_the_sample_runs(tmp_path):
    """`trainmap ui` with no runs yet opens a copy of sample_runs/ in the user's store, so
    curricula and reruns made from the UI never write into the package's sample_runs/."""
    from dashboard.launch import SAMPLE_RUNS, resolve_store

    before = sorted((p.relative_to(SAMPLE_RUNS), p.stat().st_mtime_ns) for p in SAMPLE_RUNS.rglob("*"))
    target = tmp_path / "trainmap_runs"
    assert resolve_store(target) == target
    shipped = sorted(p.name for p in (SAMPLE_RUNS / "runs").iterdir())
    assert sorted(Store(target).run_ids()) == shipped and len(shipped) == 5
    assert (target / "datasets" / "mnist1d.parquet").is_file()
    # a store that has runs is shown as it is, never re-seeded
    Store(target).delete_run(shipped[0])
    assert resolve_store(target) == target
    assert sorted(Store(target).run_ids()) == shipped[1:]
    after = sorted((p.relative_to(SAMPLE_RUNS), p.stat().st_mtime_ns) for p in SAMPLE_RUNS.rglob("*"))
    assert after == before


def test_a_clicked_point_gives_its_sample_id_whatever_shape_customdata_arrives_in():
    from dashboard.common import first_custom_id

    # a row of 2-D customdata arrives from the browser as an object keyed by position
    assert first_custom_id([{"customdata": {"0": 17, "1": 2, "2": 5}}]) == 17
    assert first_custom_id([{"customdata": [23, 1, 1]}]) == 23
    assert first_custom_id([{"customdata": 4}]) == 4
    assert first_custom_id([{"x": 0.1}, {"customdata": {"0": 9}}]) == 9
    assert first_custom_id([]) is None and first_custom_id([{"customdata": []}]) is None
