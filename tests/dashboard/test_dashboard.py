"""Dashboard pages through Streamlit's AppTest, and the torch-free import of the whole app.

Pages run against a tmp copy of ``sample_runs/`` (4 compacted MNIST-1D CNN runs: clean
and 20 % label noise, two seeds each, and a curriculum rerun) and assert on what is shown.
The store views are tested in ``tests/store/test_views.py``, the figure builders in
``test_charts.py``, the data module in ``test_data.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import spearmanr

import store as store_api
from store import Store, cartography_region, rank_hardest

from conftest import SAMPLE_RUNS, sample_run_ids
from tests.dashboard.app_pages import APP, REPO, app_test, figure_titles, figures, metrics, run_clean, texts


RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]
NOISY_OTHER_SEED = RUNS["cnn-noise20-s1"]


@pytest.fixture
def fresh_store(tmp_path) -> Store:
    root = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    return Store(root)


# -- the dashboard never imports torch ------------------------------------------------


def test_dashboard_modules_do_not_import_torch(sample_store):
    # the modules, then every page rendered through app.py, in a fresh interpreter
    code = (
        "import sys; import store, store.views, dashboard.data, dashboard.widgets, dashboard.formatting, "
        "dashboard.charts, dashboard.launcher, dashboard.views; "
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
    # one epoch: no variability, so none is ambiguous and the per-run thirds' cut-off is the
    # median confidence (store.region_cutoffs): hard-to-learn is the lower half
    assert metrics(at)["ambiguous"] == "0"
    assert metrics(at)["hard-to-learn"] == str(int((p_true < np.median(p_true.astype(np.float64))).sum()))
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


def test_curriculum_page_previews_and_compares_an_earlier_rerun(sample_store, tmp_path, monkeypatch):
    # away from the checkout, the rerun's recorded (relative) curriculum path leads nowhere:
    # the page finds the copy in the store's curricula/
    monkeypatch.chdir(tmp_path)
    at = app_test(sample_store)
    at.run()  # register the pages first
    at.switch_page("views/curriculum.py")
    at = run_clean(at)
    assert "Outcome: rerun vs parent" not in [s.value for s in at.subheader]  # drawn only when opened
    at.session_state["cur_earlier_open"] = True  # open "Compare an earlier rerun with its parent"
    at.selectbox(key="cur_strategy").set_value("downweight-noise").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = metrics(at)
    summary = store_api.run_summary(sample_store, max(RUNS.values()))  # the newest finished run
    assert shown["Samples"] == f"{len(summary):,}" and shown["Pruned"] == "800"  # fraction 0.2 by loss
    flipped = int(summary["label_noisy"].sum())
    assert shown["Flipped labels pruned"].endswith(f" / {flipped}")
    titles = figure_titles(at)
    assert "Weights (0 = pruned)" in titles and "Data map: what the curriculum drops" in titles
    data_map = figures(at)[titles.index("Data map: what the curriculum drops")]
    assert [trace["name"] for trace in data_map["data"]] == ["kept (3200)", "pruned (800)"]
    tables = [frame.value for frame in at.dataframe]
    by_class, by_region = tables[0], tables[1]
    assert by_class["samples"].sum() == len(summary) and by_class["kept"].sum() == 3200
    assert by_region["region"].tolist() == ["easy-to-learn", "ambiguous", "hard-to-learn"]
    # the shipped rerun beside its parent: curves, per-class accuracy, what happened to the pruned
    page = texts(at)
    assert "Outcome: rerun vs parent" in [s.value for s in at.subheader]
    assert "Validation accuracy per class (last epoch)" in page
    assert "What happened to the pruned and down-weighted samples" in page
    outcome = next(t for t in tables if "metric" in t.columns and "difference" in t.columns).set_index("metric")
    assert outcome.loc["Best validation accuracy", ["parent", "rerun", "difference"]].tolist() == \
        ["84.3 %", "90.2 %", "+5.9 pp"]
    assert any(m.value.startswith("**Verdict.** The rerun is 5.9 points better") for m in at.markdown)
    fate = next(t for t in tables if "group" in t.columns)
    assert fate["samples"].sum() == len(summary) and set(fate["group"]) == {"kept", "pruned"}
