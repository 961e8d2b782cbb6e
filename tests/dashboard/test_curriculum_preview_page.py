"""The Curriculum page cannot mislead: a fully scored default source, the never-presented
samples named and their treatment chosen, per-class warnings, soft weights shown per group."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app_pages import app_test, figure_titles, figures, metrics, texts
from conftest import sample_run_ids
from store import run_summary
from store.curriculum.reweight import downweight_noise_soft


@pytest.fixture()
def page(sample_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = app_test(sample_store)
    at.run()
    at.switch_page("views/curriculum.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def values(encoded) -> np.ndarray:
    """A plotly array: a list, or its binary form {dtype, bdata (base64)}."""
    if isinstance(encoded, dict):
        return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"])
    return np.asarray(encoded, dtype=float)


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_default_source_is_the_newest_fully_scored_run_and_unscored_needs_a_choice(page):
    ids = sample_run_ids()
    # the newest finished run is the pruned rerun; the newest that presented every sample is noise20-s1
    assert page.multiselect(key="cur_sources").value == [ids["cnn-noise20-s1"]]
    page.multiselect(key="cur_sources").set_value([ids["cnn-noise20-s0-clean"]])
    page.selectbox(key="cur_strategy").set_value("downweight-noise")
    run(page)
    assert f"800 of 4,000 samples were never presented in run cnn-noise20-s0-clean ({ids['cnn-noise20-s0-clean']})" \
        in texts(page)
    assert page.radio(key="cur_unscored").value is None
    assert "Samples" not in metrics(page)  # no preview until the user chooses
    page.radio(key="cur_unscored").set_value("keep")
    run(page)
    shown = metrics(page)
    assert shown["Samples"] == "4,000" and shown["Pruned"] == "640"  # 0.2 of the 3,200 presented
    assert "800 samples never presented in the source run(s) are kept, outside the ranking." in texts(page)


def test_class_warning_and_the_class_floor(page, sample_store):
    ids = sample_run_ids()
    page.selectbox(key="cur_strategy").set_value("keep-easy")
    run(page)
    summary = run_summary(sample_store, ids["cnn-noise20-s1"])
    table = next(frame.value for frame in page.dataframe if "weight / sample share" in frame.value.columns)
    assert table["samples"].tolist() == summary["label"].value_counts().sort_index().tolist()
    assert table["kept"].sum() == 2000
    ratio = table.set_index("label")["weight / sample share"]
    below = sorted(ratio[ratio < 0.5].index)
    assert below, "keep-easy 0.5 by loss leaves some class under half its share"
    warning = next(w.value for w in page.warning if "below 0.5 of their share" in w.value)
    for label in below:
        assert f"class {label} keeps" in warning
    page.checkbox(key="cur_keep-easy_class_floor_on").check()
    run(page)
    page.number_input(key="cur_keep-easy_class_floor").set_value(0.6)
    run(page)
    assert not [w for w in page.warning if "of their share" in w.value]
    table = next(frame.value for frame in page.dataframe if "weight / sample share" in frame.value.columns)
    assert table["kept"].sum() == 2000 and (table["weight / sample share"] >= 0.5).all()


def test_soft_mode_shows_flipped_and_clean_weights_and_the_effective_sample_count(page, sample_store):
    ids = sample_run_ids()
    page.selectbox(key="cur_strategy").set_value("downweight-noise")
    run(page)
    page.selectbox(key="cur_downweight-noise_mode").set_value("soft")
    run(page)
    summary = run_summary(sample_store, ids["cnn-noise20-s1"])
    weight = downweight_noise_soft(summary, "loss", 0.2, 0.05).set_index("sample_id")["weight"]
    weight = weight.loc[summary["sample_id"]].to_numpy()
    kish = weight.sum() ** 2 / (weight ** 2).sum()
    shown = metrics(page)
    assert shown["Effective sample count"] == f"{kish:,.0f}"
    flipped = summary["label_noisy"].to_numpy(bool)
    assert shown["Mean weight: flipped / clean"] == f"{weight[flipped].mean():.2f} / {weight[~flipped].mean():.2f}"
    histogram = figures(page)[figure_titles(page).index("Weights (0 = pruned)")]
    traces = {trace["name"]: trace for trace in histogram["data"]}
    assert sorted(traces) == ["clean (3,200)", "flipped (800)"]
    shown_flipped = values(traces["flipped (800)"]["x"])
    assert len(shown_flipped) == 800 and histogram["layout"]["barmode"] == "overlay"
    np.testing.assert_allclose(np.sort(shown_flipped), np.sort(weight[flipped]), rtol=1e-6)


def test_relabel_preview_counts_the_labels_it_gives_back(page, sample_store):
    import pandas as pd

    run_id = sample_run_ids()["cnn-noise20-s1"]
    page.selectbox(key="cur_strategy").set_value("relabel")
    run(page)
    assert page.number_input(key="cur_relabel_first").value == 0  # the first half of epochs 0..19
    assert page.number_input(key="cur_relabel_last").value == 9
    page.number_input(key="cur_relabel_first").set_value(5)
    run(page)
    page.number_input(key="cur_relabel_last").set_value(9)
    run(page)
    # reference: the most frequent prediction over epochs 5..9 (ties to the label, then the
    # smallest class) for the 20 % of samples with the highest mean loss
    summary = run_summary(sample_store, run_id).set_index("sample_id")
    raw = pd.read_parquet(sample_store.run_dir(run_id) / "presentations.parquet",
                          columns=["sample_id", "epoch", "pred"])
    raw = raw[raw["epoch"].between(5, 9)]
    counts = raw.groupby(["sample_id", "pred"]).size().rename("votes").reset_index()
    counts["own"] = counts["pred"] == summary.loc[counts["sample_id"], "label"].to_numpy()
    best = counts.sort_values(["sample_id", "votes", "own", "pred"], ascending=[True, False, False, True])
    suggested = best.drop_duplicates("sample_id").set_index("sample_id")["pred"]
    suspected = summary["loss"].sort_values(kind="stable").index[-800:]
    changed = [i for i in suspected if suggested[i] != summary.loc[i, "label"]]
    fixed = sum(suggested[i] == summary.loc[i, "original_label"] for i in changed)
    shown = metrics(page)
    assert shown["Labels replaced"] == f"{len(changed):,}"
    assert shown["Flipped labels given their clean label"] == f"{fixed:,} / 800"
