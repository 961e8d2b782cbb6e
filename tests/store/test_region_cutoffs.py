"""Per-run region cut-offs (``store.scores.region_cutoffs``), the counts per region, a curriculum
from a map selection (``store.views.selection``), the last predicted label per sample and the
per-layer gradient norms (``store.views.samples`` / ``store.views.run``), against independent
numpy / pandas computations on synthetic data and the shipped sample runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import sample_run_ids
from store import run_summary
from store.curriculum import CurriculumError, load_curriculum, save_to_store
from store.queries import dynamics, layer_grad_norms
from store.scores import REGIONS, RegionCutoffs, cartography_region, region_cutoffs
from store.views.distributions import region_counts
from store.views.run import layer_grad_norm_curves, run_region_cutoffs
from store.views.samples import predicted_labels, sample_ids, samples_by_id
from store.views.selection import SELECTION_STRATEGY, selection_curriculum

RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]
RERUN = RUNS["cnn-noise20-s0-clean"]


def thirds(confidence: np.ndarray, variability: np.ndarray) -> pd.Series:
    """The stated rule written out again: ambiguous = variability above its 2/3 quantile; the
    rest split at their median confidence (easy at or above, hard below)."""
    ambiguous_cut = np.quantile(variability, 2 / 3)
    rest = variability <= ambiguous_cut
    easy_cut = np.median(confidence[rest])
    region = np.full(len(confidence), "hard-to-learn", dtype=object)
    region[rest & (confidence >= easy_cut)] = "easy-to-learn"
    region[~rest] = "ambiguous"
    return pd.Series(region)


def test_region_cutoffs_split_into_thirds():
    rng = np.random.default_rng(0)
    confidence = pd.Series(rng.uniform(0, 1, 3000))
    variability = pd.Series(rng.uniform(0, 0.5, 3000))
    cutoffs = region_cutoffs(confidence, variability)
    assert cutoffs.ambiguous_variability == pytest.approx(np.quantile(variability, 2 / 3))
    stable = variability <= cutoffs.ambiguous_variability
    assert cutoffs.easy_confidence == pytest.approx(np.median(confidence[stable]))
    region = cartography_region(confidence, variability)
    assert region.value_counts().to_dict() == {"easy-to-learn": 1000, "ambiguous": 1000, "hard-to-learn": 1000}
    assert (region == thirds(confidence.to_numpy(), variability.to_numpy())).all()


def test_explicit_cutoffs_and_boundaries():
    confidence = pd.Series([0.9, 0.5, 0.49, 0.2, np.nan])
    variability = pd.Series([0.1, 0.1, 0.1, 0.3, 0.1])
    region = cartography_region(confidence, variability, RegionCutoffs(0.3, 0.5))
    # variability exactly at the cut-off is not ambiguous; confidence exactly at it is easy
    assert region.iloc[:4].tolist() == ["easy-to-learn", "easy-to-learn", "hard-to-learn", "hard-to-learn"]
    assert pd.isna(region.iloc[4])
    everywhere_missing = cartography_region(pd.Series([np.nan]), pd.Series([np.nan]))
    assert everywhere_missing.isna().all()
    with pytest.raises(ValueError, match="no sample has both a confidence and a variability"):
        region_cutoffs(pd.Series([np.nan]), pd.Series([0.1]))


def test_run_cutoffs_and_region_counts_on_the_sample_runs(sample_store):
    for run_id, scored in ((NOISY, 4000), (RERUN, 3200)):  # the rerun never presented 800 pruned samples
        summary = run_summary(sample_store, run_id)
        summary = summary[summary["confidence"].notna() & summary["variability"].notna()].reset_index(drop=True)
        assert len(summary) == scored
        cutoffs = run_region_cutoffs(sample_store, run_id)
        assert cutoffs.ambiguous_variability == pytest.approx(np.quantile(summary["variability"], 2 / 3))
        expected = thirds(summary["confidence"].to_numpy(), summary["variability"].to_numpy())
        counts = region_counts(sample_store, run_id).set_index("region")
        assert counts.index.tolist() == list(REGIONS)
        for region in REGIONS:
            assert counts.loc[region, "samples"] == (expected == region).sum()
            assert counts.loc[region, "flipped"] == (summary["label_noisy"] & (expected == region)).sum()
        # every region holds a third (up to one sample), not nearly all samples in one
        assert counts["samples"].max() - counts["samples"].min() <= 1
    noisy = region_counts(sample_store, NOISY).set_index("region")
    assert noisy["flipped"].tolist() == [0, 447, 353]  # no flipped label looks easy to learn
    # fixed cut-offs (the earlier defaults) are still available to a caller
    fixed = region_counts(sample_store, NOISY, 0.2, 0.5).set_index("region")
    summary = run_summary(sample_store, NOISY)
    assert fixed.loc["ambiguous", "samples"] == (summary["variability"] > 0.2).sum()


def test_selection_curriculum_actions():
    ids = [0, 1, 2, 3, 4, 5]
    drop = selection_curriculum(ids, [4, 1], "drop", source_run="r")
    assert drop.table["sample_id"].tolist() == ids
    assert drop.table["weight"].tolist() == [1, 0, 1, 1, 0, 1]
    down = selection_curriculum(ids, [1, 4, 4], "down-weight", 0.25, source_run="r", name="corner")
    assert down.table["weight"].tolist() == [1, 0.25, 1, 1, 0.25, 1]
    assert down.metadata["params"] == {"action": "down-weight", "selected": 2, "weight": 0.25}
    assert down.label == "corner" and down.strategy == SELECTION_STRATEGY
    keep = selection_curriculum(ids, [2], "keep-only", source_run="r")
    assert keep.table["weight"].tolist() == [0, 0, 1, 0, 0, 0]
    with pytest.raises(CurriculumError, match="selection is empty"):
        selection_curriculum(ids, [], "drop", source_run="r")
    with pytest.raises(CurriculumError, match="not in run 'r', e.g. 9"):
        selection_curriculum(ids, [1, 9], "drop", source_run="r")
    with pytest.raises(CurriculumError, match="keeps no sample"):
        selection_curriculum(ids, ids, "drop", source_run="r")
    with pytest.raises(CurriculumError, match=r"weight in \[0, 1\), got 1.5"):
        selection_curriculum(ids, [1], "down-weight", 1.5, source_run="r")
    with pytest.raises(CurriculumError, match="unknown selection action 'prune'; expected one of drop"):
        selection_curriculum(ids, [1], "prune", source_run="r")


def test_selection_curriculum_round_trips_through_the_curriculum_file(tmp_path, sample_store):
    every = sample_ids(sample_store, NOISY)
    assert every.tolist() == list(range(4000))
    chosen = [5, 17, 3999]
    path = save_to_store(selection_curriculum(every, chosen, "down-weight", 0.5, source_run=NOISY,
                                              task="mnist1d"), tmp_path)
    loaded = load_curriculum(path, task="mnist1d", sample_ids=every)
    weights = loaded.table.set_index("sample_id")["weight"]
    assert weights.loc[chosen].tolist() == [0.5, 0.5, 0.5]
    assert (weights.drop(chosen) == 1.0).all() and len(weights) == 4000
    assert loaded.metadata["source_runs"] == [NOISY]


def test_predicted_labels_are_the_last_presentations_prediction(sample_store):
    presentations = dynamics(sample_store, NOISY)
    last = presentations.sort_values(["sample_id", "step"]).groupby("sample_id")["pred"].last()
    predicted = predicted_labels(sample_store, NOISY).set_index("sample_id")["predicted_label"]
    assert predicted.index.tolist() == last.index.tolist()
    assert (predicted.astype(int) == last.astype(int)).all()
    rows = samples_by_id(sample_store, NOISY, [7, 2, 2, 123456])
    assert rows["sample_id"].tolist() == [2, 7]


def test_layer_grad_norm_curves(sample_store):
    recorded = layer_grad_norms(sample_store, NOISY)
    curves = layer_grad_norm_curves(sample_store, NOISY)
    assert curves.method == "all" and curves.total == recorded["step"].nunique()
    merged = curves.frame.merge(recorded, on=["step", "layer"], suffixes=("", "_recorded"))
    assert len(merged) == len(recorded)
    np.testing.assert_allclose(merged["grad_norm"], merged["grad_norm_recorded"])
    bucketed = layer_grad_norm_curves(sample_store, NOISY, max_points=10)
    assert bucketed.method == "bucket means"
    per_layer = bucketed.frame.groupby("layer").size()
    assert per_layer.index.tolist() == sorted(recorded["layer"].unique())
    assert (per_layer <= 10).all()
    # each bucket mean lies within its layer's recorded range
    low, high = recorded.groupby("layer")["grad_norm"].min(), recorded.groupby("layer")["grad_norm"].max()
    for layer, part in bucketed.frame.groupby("layer"):
        assert part["grad_norm"].between(low[layer] - 1e-9, high[layer] + 1e-9).all()
