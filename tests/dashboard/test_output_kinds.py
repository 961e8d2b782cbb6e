"""Every dashboard page on a per-sample-loss run and on a sequence run (AppTest).

A loss-only run (run.json ``output_kind`` "loss") has a loss per presentation and nothing
else: each page opens without error, offers exactly the scores it recorded, and says in one
sentence why the data map is missing and what to record for it. A sequence run offers every
score, token accuracy among them, and states what "correct" means wherever forgetting shows.
Values are checked against pandas / SciPy references on the synthetic arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import store as store_api
from dashboard import formatting
from store import Store, cartography_region

from conftest import write_loss_run, write_sequence_run
from tests.dashboard.app_pages import app_test, figure_titles, figures, metrics, run_clean, texts

SAMPLES = 40
THRESHOLD = 0.5
SEQUENCE_DEFINITION = "A sequence counts as correct when its token accuracy ≥ 0.5."


@dataclass(frozen=True)
class KindRuns:
    store: Store
    loss_run: str
    other_loss_run: str
    sequence_run: str
    other_sequence_run: str
    #: mean loss per sample of the two loss runs (float32 as stored)
    mean_loss: np.ndarray
    other_mean_loss: np.ndarray


def sequence_run(store: Store, seed: int, name: str) -> str:
    rng = np.random.default_rng(seed)
    token_count = rng.integers(1, 50, size=SAMPLES)
    token_accuracy = rng.integers(0, token_count[:, None] + 1, size=(SAMPLES, 5)) / token_count[:, None]
    p_true = rng.uniform(0.01, 0.99, size=(SAMPLES, 5))
    return write_sequence_run(store, token_accuracy, token_count, -np.log(p_true), p_true,
                              rng.normal(size=(SAMPLES, 5)), threshold=THRESHOLD, finish=True, name=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> KindRuns:
    store = Store(tmp_path_factory.mktemp("kinds") / "store", create=True)
    rng = np.random.default_rng(12)
    loss, other = rng.gamma(2.0, 0.5, size=(SAMPLES, 4)), rng.gamma(2.0, 0.5, size=(SAMPLES, 4))
    return KindRuns(
        store=store,
        loss_run=write_loss_run(store, loss, finish=True, name="loss-a"),
        other_loss_run=write_loss_run(store, other, finish=True, name="loss-b"),
        sequence_run=sequence_run(store, 13, "lm-a"),
        other_sequence_run=sequence_run(store, 14, "lm-b"),
        mean_loss=loss.astype(np.float32).astype(np.float64).mean(1),
        other_mean_loss=other.astype(np.float32).astype(np.float64).mean(1),
    )


def highest_first(values: np.ndarray) -> list[int]:
    return np.argsort(-values, kind="stable").tolist()


# -- a per-sample-loss run --------------------------------------------------------------


def test_loss_run_curves_say_there_is_no_accuracy(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.loss_run, view="Curves"))
    assert at.title[0].value == "loss-a"
    titles = figure_titles(at)
    assert titles[0] == "Loss" and "Accuracy" not in titles and "Loss per step" in titles
    loss = figures(at)[0]
    assert [trace["name"] for trace in loss["data"]] == ["train"]  # train loss per epoch, no validation
    assert any("No accuracy for this run" in info.value for info in at.info)
    assert "per-sample loss only" in texts(at)
    assert metrics(at)["Samples"] == f"{SAMPLES}" and metrics(at)["Best val accuracy"] == "–"


def test_loss_run_data_map_says_in_one_sentence_why_it_is_missing(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.loss_run, view="Data map", sample="3"))
    sentence = formatting.data_map_unavailable("loss")
    assert [info.value for info in at.info] == [sentence]
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert "p(label)" in sentence and "per_sample_loss" in sentence and "logits" in sentence
    assert "Data map" not in figure_titles(at) and "Regions" not in [s.value for s in at.subheader]
    # the sample below still shows what the run recorded: its loss, and the loss over training
    assert at.subheader[-1].value == "Sample 3"
    shown = metrics(at)
    assert shown["loss"] == formatting.number(runs.mean_loss[3])
    assert not {"el2n", "confidence", "variability", "correctness", "aum"} & set(shown)
    trajectory = figures(at)[figure_titles(at).index("Over training")]
    assert len(trajectory["data"]) == 1 and trajectory["layout"]["annotations"][0]["text"] == "loss"
    assert "given label" not in texts(at) and "forgetting events" not in texts(at)


def test_loss_run_scores_tab_shows_only_the_loss(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.loss_run, view="Scores"))
    assert figure_titles(at) == ["loss"]
    histogram = figures(at)[0]
    assert [trace["name"] for trace in histogram["data"]] == ["given label"]  # no flipped labels
    assert charts_values(histogram["data"][0]["y"]).sum() == SAMPLES
    assert "Not available for this run (el2n, grand last, forgetting events, first learned epoch, " \
           "confidence, variability, correctness, aum)" in texts(at)


def test_loss_run_samples_tab_ranks_by_loss_alone(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.loss_run, view="Samples"))
    assert at.selectbox(key="table_score").options == ["loss"]
    tables = [frame.value for frame in at.dataframe]
    assert len(tables) == 1
    assert tables[0]["sample_id"].tolist() == highest_first(runs.mean_loss)[:20]
    assert list(tables[0].columns) == ["sample_id", "loss"]
    np.testing.assert_allclose(tables[0]["loss"], np.sort(runs.mean_loss)[::-1][:20], rtol=1e-12)
    page = texts(at)
    assert "Most forgotten: forgetting_events not recorded in this run" in page
    assert "Most likely mislabeled: aum not recorded in this run" in page


def test_compare_two_loss_runs_on_loss(runs):
    at = run_clean(app_test(runs.store, "views/compare.py", runs=[runs.loss_run, runs.other_loss_run]))
    assert at.selectbox(key="compare_score").options == ["loss"]
    rho = spearmanr(runs.mean_loss, runs.other_mean_loss).statistic
    shown = metrics(at)
    assert shown["Spearman rank correlation"] == f"{rho:.3f}"
    assert shown["Samples in both"] == f"{SAMPLES}" and "Top-4 overlap" in shown
    top_a, top_b = set(highest_first(runs.mean_loss)[:4]), set(highest_first(runs.other_mean_loss)[:4])
    assert shown["Top-4 overlap"] == formatting.percent(len(top_a & top_b) / 4)


def open_curriculum_page(runs: KindRuns, source: str):
    at = app_test(runs.store)
    at.run()  # register the pages first
    at.switch_page("views/curriculum.py")
    at = run_clean(at)
    at.multiselect(key="cur_sources").set_value([source]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_curriculum_from_a_loss_run_prunes_the_highest_losses_and_offers_only_loss(runs):
    at = open_curriculum_page(runs, runs.loss_run)
    at.selectbox(key="cur_strategy").set_value("downweight-noise").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="cur_score").options == ["loss"]  # no AUM, no cartography
    assert ("Not offered for these runs: el2n, grand_last, forgetting_events, first_learned_epoch, "
            "confidence, variability, correctness, aum, cartography.") in texts(at)
    shown = metrics(at)
    pruned = round(0.2 * SAMPLES)  # the page's default fraction
    assert shown["Samples"] == f"{SAMPLES}" and shown["Pruned"] == f"{pruned}"
    losses = figures(at)[figure_titles(at).index("Loss: what the curriculum drops")]
    by_name = {trace["name"]: trace for trace in losses["data"]}
    assert set(by_name) == {f"kept ({SAMPLES - pruned})", f"pruned ({pruned})"}
    pruned_losses = np.sort(charts_values(by_name[f"pruned ({pruned})"]["x"]))
    np.testing.assert_allclose(pruned_losses, np.sort(runs.mean_loss)[-pruned:], rtol=1e-12)
    page = texts(at)
    assert "No cartography regions: these runs recorded no p(label)." in page
    assert "No class labels in these runs" in page
    at.selectbox(key="cur_strategy").set_value("class-balance").run()
    assert not at.exception
    assert any("class-balance needs the class label of every sample" in w.value for w in at.warning)


def charts_values(encoded) -> np.ndarray:
    """A Plotly array from a figure's JSON (plain list, or typed ``{"dtype", "bdata"}``)."""
    import base64

    if isinstance(encoded, list):
        return np.asarray(encoded, dtype=float)
    return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=np.dtype(encoded["dtype"])).astype(float)


# -- a sequence run --------------------------------------------------------------------


def test_sequence_run_data_map_states_what_correct_means(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.sequence_run, view="Data map"))
    summary = store_api.run_summary(runs.store, runs.sequence_run)
    expected = cartography_region(summary["confidence"], summary["variability"]).value_counts()
    shown = metrics(at)
    for region in ("easy-to-learn", "ambiguous", "hard-to-learn"):
        assert shown[region] == f"{expected.get(region, 0):,}"
    assert "Data map" in figure_titles(at)[0]
    data_map = figures(at)[0]
    assert "label %{customdata[1]}" not in data_map["data"][0]["hovertemplate"]  # no class label
    assert SEQUENCE_DEFINITION in texts(at)
    assert "sequences (one row per sequence)" in texts(at)


def test_sequence_run_scores_tab_has_token_accuracy_and_the_forgetting_definition(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.sequence_run, view="Scores"))
    recorded = store_api.recorded_scores(runs.store, runs.sequence_run)
    assert "token_accuracy" in recorded
    titles = figure_titles(at)
    assert len(titles) == len(recorded) and "token accuracy" in titles and "Forgetting events" in titles
    forgetting = figures(at)[titles.index("Forgetting events")]
    summary = store_api.run_summary(runs.store, runs.sequence_run)
    counted = sum(charts_values(trace["y"]).sum() for trace in forgetting["data"])
    assert counted == len(summary) == SAMPLES
    caption = next(c.value for c in at.caption if c.value.startswith("Toneva et al. 2019"))
    assert caption.endswith(SEQUENCE_DEFINITION)


def test_sequence_run_samples_tab_offers_every_recorded_score(runs):
    at = run_clean(app_test(runs.store, "views/run.py", run=runs.sequence_run, view="Samples", sample="2"))
    recorded = store_api.recorded_scores(runs.store, runs.sequence_run)
    assert at.selectbox(key="table_score").options == recorded
    at.selectbox(key="table_score").set_value("token_accuracy").run()
    assert not at.exception
    summary = store_api.run_summary(runs.store, runs.sequence_run)
    tables = [frame.value for frame in at.dataframe]
    assert tables[0]["sample_id"].tolist() == store_api.rank_hardest(summary, "token_accuracy")[
        "sample_id"].head(20).tolist()
    assert "label" not in tables[0].columns
    page = texts(at)
    assert f"most forgetting events; never-learned first. {SEQUENCE_DEFINITION}" in page
    record = summary.set_index("sample_id").loc[2]
    assert metrics(at)["token accuracy"] == formatting.number(record["token_accuracy"])
    assert f"{formatting.number(record['token_count'], 1)} tokens on average" in page
    assert SEQUENCE_DEFINITION in [c.value for c in at.caption]


def test_compare_sequence_runs_on_forgetting_says_what_correct_means(runs):
    at = app_test(runs.store, "views/compare.py", runs=[runs.sequence_run, runs.other_sequence_run])
    run_clean(at)
    assert "token_accuracy" in at.selectbox(key="compare_score").options
    at.selectbox(key="compare_score").set_value("forgetting_events").run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert f"lm-a: {SEQUENCE_DEFINITION}" in captions and f"lm-b: {SEQUENCE_DEFINITION}" in captions
    a = store_api.run_summary(runs.store, runs.sequence_run)
    b = store_api.run_summary(runs.store, runs.other_sequence_run)
    rho = spearmanr(store_api.hardness(a, "forgetting_events"), store_api.hardness(b, "forgetting_events")).statistic
    assert metrics(at)["Spearman rank correlation"] == f"{rho:.3f}"


def test_curriculum_from_a_sequence_run(runs):
    at = open_curriculum_page(runs, runs.sequence_run)
    at.selectbox(key="cur_strategy").set_value("downweight-noise").run()
    assert not at.exception
    recorded = store_api.recorded_scores(runs.store, runs.sequence_run)
    assert at.selectbox(key="cur_score").options == [*recorded, "cartography"]
    at.selectbox(key="cur_score").set_value("token_accuracy").run()
    assert not at.exception
    assert metrics(at)["Pruned"] == f"{round(0.2 * SAMPLES)}"
    at.selectbox(key="cur_score").set_value("forgetting_events").run()
    assert not at.exception
    assert f"lm-a: {SEQUENCE_DEFINITION}" in [c.value for c in at.caption]
