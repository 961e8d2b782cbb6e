"""store.views: the DuckDB views behind the dashboard, checked against the store's own
pandas computations (``store.run_summary``, ``store.rank_hardest``, ``cartography_region``)
on a tmp copy of ``sample_runs/``; and the curriculum counts on tiny hand-made frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import store as store_api
from store import Store, cartography_region, rank_hardest
from store import views
from store.scores import REGIONS

from conftest import SAMPLE_RUNS, sample_run_ids

REPO = Path(__file__).resolve().parents[2]


RUNS = sample_run_ids()
NOISY = RUNS["cnn-noise20-s0"]
NOISY_OTHER_SEED = RUNS["cnn-noise20-s1"]


@pytest.fixture(scope="module")
def noisy_summary(sample_store) -> pd.DataFrame:
    return store_api.run_summary(sample_store, NOISY)


def test_the_package_re_exports_every_view_from_its_module():
    import importlib

    for name in views.__all__:
        value = getattr(views, name)
        module = importlib.import_module(value.__module__)
        assert module.__name__.startswith("store.views.") and getattr(module, name) is value, name


def test_region_counts_match_store_cartography(sample_store, noisy_summary):
    summary = noisy_summary
    expected = cartography_region(summary["confidence"], summary["variability"]).value_counts()
    counts = views.region_counts(sample_store, NOISY).set_index("region")
    for region in ("easy-to-learn", "ambiguous", "hard-to-learn"):
        assert counts.loc[region, "samples"] == expected.get(region, 0)
    flipped = summary.groupby(cartography_region(summary["confidence"], summary["variability"]))[
        "label_noisy"].sum()
    assert counts["flipped"].sum() == flipped.sum() == summary["label_noisy"].sum()
    # other cut-offs move samples between regions, but all are still counted
    moved = views.region_counts(sample_store, NOISY, ambiguous_variability=0.4, easy_confidence=0.7)
    assert moved["samples"].sum() == len(summary)
    assert not moved["samples"].equals(counts["samples"].reset_index(drop=True))


@pytest.mark.parametrize("score", ["aum", "forgetting_events", "loss", "confidence"])
def test_hardest_samples_follow_the_registry(sample_store, noisy_summary, score):
    expected = rank_hardest(noisy_summary, score)["sample_id"].head(15).tolist()
    got = views.hardest_samples(sample_store, NOISY, score, 15)["sample_id"].tolist()
    assert got == expected


def test_sample_record_range_and_overview(sample_store, noisy_summary):
    summary = noisy_summary.set_index("sample_id")
    record = views.sample_record(sample_store, NOISY, 123)
    assert record["label"] == summary.loc[123, "label"]
    assert record["loss"] == pytest.approx(summary.loc[123, "loss"])
    assert views.sample_record(sample_store, NOISY, 10**9) is None
    low, high = int(summary.index.min()), int(summary.index.max())
    assert views.sample_id_range(sample_store, NOISY) == (low, high)
    overview = views.summary_overview(sample_store, NOISY)
    assert overview["samples"] == views.sample_count(sample_store, NOISY) == len(summary) == 4000
    assert (overview["sample_id_min"], overview["sample_id_max"]) == (low, high)
    assert overview["recorded_scores"] == views.recorded_scores(sample_store, NOISY)
    assert {"loss", "el2n", "aum", "forgetting_events", "grand"} <= set(overview["recorded_scores"])


def test_score_histograms_count_every_sample(sample_store, noisy_summary):
    summary = noisy_summary
    histograms = views.score_histograms(sample_store, NOISY, ["loss", "first_learned_epoch", "grand"])
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
    single = views.score_histogram(sample_store, NOISY, "loss")
    assert single.bins["samples"].tolist() == loss.bins["samples"].tolist()


def test_forgetting_counts_report_never_learned_apart(sample_store, noisy_summary):
    summary = noisy_summary
    counts = views.forgetting_counts(sample_store, NOISY).set_index("forgetting_events")
    assert counts.loc["never learned", "samples"] == summary["never_learned"].sum()
    learned = summary[~summary["never_learned"]]
    assert counts.loc["0", "samples"] == (learned["forgetting_events"] == 0).sum()
    assert counts["samples"].sum() == len(summary)


def test_data_map_samples_server_side(sample_store, noisy_summary):
    full = views.data_map(sample_store, NOISY, "aum")
    assert full.shown == full.total == 4000 and full.method == "all"
    part = views.data_map(sample_store, NOISY, "aum", max_points=1000)
    assert part.shown == 1000 and part.total == 4000 and part.method == "random sample"
    assert part.frame["sample_id"].is_unique
    again = views.data_map(sample_store, NOISY, "aum", max_points=1000)
    assert again.frame["sample_id"].tolist() == part.frame["sample_id"].tolist()  # seeded
    summary = noisy_summary.set_index("sample_id")
    row = part.frame.iloc[0]
    assert np.isclose(row["color_value"], summary.loc[row["sample_id"], "aum"])


def test_score_agreement_matches_scipy(sample_store, noisy_summary):
    a = noisy_summary
    b = store_api.run_summary(sample_store, NOISY_OTHER_SEED)
    agreement = views.score_agreement(sample_store, NOISY, NOISY_OTHER_SEED, "el2n", 0.1)
    assert agreement.common_samples == 4000 and agreement.top_k == 400
    assert agreement.spearman == pytest.approx(spearmanr(a["el2n"], b["el2n"]).statistic, abs=1e-9)
    top_a = set(a.nlargest(400, "el2n")["sample_id"])
    top_b = set(b.nlargest(400, "el2n")["sample_id"])
    assert agreement.top_k_overlap == pytest.approx(len(top_a & top_b) / 400)
    itself = views.score_agreement(sample_store, NOISY, NOISY, "aum", 0.05)
    assert itself.spearman == pytest.approx(1.0) and itself.top_k_overlap == 1.0
    with pytest.raises(ValueError, match="top_fraction"):
        views.score_agreement(sample_store, NOISY, NOISY, "aum", 0.0)


def test_step_curves_bucket_long_runs(sample_store):
    full = views.step_curves(sample_store, NOISY)
    assert full.method == "all" and full.shown == full.total == 1260
    bucketed = views.step_curves(sample_store, NOISY, max_points=100)
    assert bucketed.total == 1260 and 90 <= bucketed.shown <= 100
    assert bucketed.frame["step"].is_monotonic_increasing


def test_run_version_changes_when_a_file_is_written(fresh_copy):
    store, run_id = fresh_copy
    before = views.run_version(store, run_id)
    assert before == views.run_version(store, run_id)
    (store.run_dir(run_id) / "run.json").write_text((store.run_dir(run_id) / "run.json").read_text() + " ")
    assert views.run_version(store, run_id) != before


@pytest.fixture
def fresh_copy(tmp_path) -> tuple[Store, str]:
    root = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    return Store(root), NOISY


# -- a curriculum's weights over a summary (pure pandas) ------------------------------


@pytest.fixture
def tiny_summary() -> pd.DataFrame:
    # confidence / variability put samples 0-1 easy, 2-3 ambiguous, 4-5 hard (default cut-offs)
    return pd.DataFrame({
        "sample_id": [10, 11, 12, 13, 14, 15],
        "label": [0, 0, 1, 1, 2, 2],
        "label_noisy": [False, True, False, True, True, None],
        "confidence": [0.9, 0.95, 0.6, 0.5, 0.1, 0.2],
        "variability": [0.05, 0.01, 0.3, 0.35, 0.05, 0.1],
    })


def test_weight_groups_name_each_weight():
    assert views.weight_groups(np.array([0.0, 0.5, 1.0, 2.0])).tolist() == [
        "pruned", "down-weighted", "kept", "kept"]


def test_curriculum_preview_counts_by_hand(tiny_summary):
    weight = np.array([1.0, 0.0, 1.0, 0.5, 0.0, 1.0])
    preview = views.curriculum_preview(tiny_summary, weight)
    assert preview.flipped == 3  # the missing flag counts as not flipped
    assert preview.flipped_pruned == 2 and preview.flipped_down_weighted == 1
    by_class = preview.kept_per_class.set_index("label")
    assert by_class["samples"].tolist() == [2, 2, 2]
    assert by_class["kept"].tolist() == [1, 2, 1]
    assert by_class["mean_weight"].tolist() == pytest.approx([0.5, 0.75, 0.5])
    by_region = preview.kept_per_region
    assert by_region["region"].tolist() == list(REGIONS)
    assert by_region.set_index("region").loc["easy-to-learn"].tolist() == [2, 1, 1]
    assert by_region.set_index("region").loc["ambiguous"].tolist() == [2, 2, 1]
    assert by_region.set_index("region").loc["hard-to-learn"].tolist() == [2, 1, 1]


def test_curriculum_preview_keeps_every_region_even_when_empty(tiny_summary):
    # one sample: by the per-run thirds it is easy-to-learn (at its own median confidence and
    # not above its own variability), and the two other regions are empty
    easy_only = tiny_summary.iloc[:1]
    preview = views.curriculum_preview(easy_only, np.ones(1))
    regions = preview.kept_per_region.set_index("region")
    assert regions.index.tolist() == list(REGIONS)
    assert regions.loc["ambiguous", "samples"] == 0 and regions.loc["hard-to-learn", "samples"] == 0
    assert regions.loc["easy-to-learn", "kept"] == 1


def test_weight_map_points_sample_large_groups_and_keep_their_sizes(tiny_summary):
    weight = np.array([1.0, 0.0, 1.0, 0.5, 1.0, 1.0])
    points, sizes = views.weight_map_points(tiny_summary, weight, max_points=2)
    assert sizes == {"kept": 4, "down-weighted": 1, "pruned": 1}
    assert points["group"].tolist() == ["kept", "kept", "down-weighted", "pruned"]
    assert set(points.loc[points["group"] == "kept", "sample_id"]) <= {10, 12, 14, 15}
    again, _ = views.weight_map_points(tiny_summary, weight, max_points=2)
    assert again["sample_id"].tolist() == points["sample_id"].tolist()  # seeded
    everything, _ = views.weight_map_points(tiny_summary, weight, max_points=100)
    assert everything["sample_id"].tolist() == [10, 12, 14, 15, 13, 11]


def test_start_epoch_counts_only_for_paced_tables():
    assert views.start_epoch_counts(pd.DataFrame({"sample_id": [1], "weight": [1.0]})) is None
    paced = pd.DataFrame({"sample_id": [1, 2, 3], "weight": [1.0] * 3, "start_epoch": [2, 0, 0]})
    assert views.start_epoch_counts(paced).to_dict() == {0: 2, 2: 1}


def test_last_epoch_class_accuracy_takes_each_runs_last_epoch():
    parent = pd.DataFrame({"epoch": [0, 0, 1, 1], "label": [0, 1, 0, 1], "accuracy": [0.1, 0.2, 0.8, 0.9]})
    rerun = pd.DataFrame({"epoch": [0, 0], "label": [0, 1], "accuracy": [0.5, 0.6]})
    table = views.last_epoch_class_accuracy({"parent": parent, "rerun": rerun, "old": parent.iloc[:0]})
    assert table.columns.tolist() == ["label", "parent", "rerun"]
    assert table["parent"].tolist() == [0.8, 0.9] and table["rerun"].tolist() == [0.5, 0.6]
    assert views.last_epoch_class_accuracy({"old": parent.iloc[:0]}) is None


# -- runs of the other output kinds: per-sample losses, sequences ----------------------


@pytest.fixture
def loss_runs(store) -> tuple[Store, str, str, np.ndarray, np.ndarray]:
    from conftest import write_loss_run

    rng = np.random.default_rng(7)
    loss_a, loss_b = rng.gamma(2.0, 0.5, size=(30, 4)), rng.gamma(2.0, 0.5, size=(30, 4))
    return (store, write_loss_run(store, loss_a, finish=True), write_loss_run(store, loss_b),
            loss_a.astype(np.float32).mean(1), loss_b.astype(np.float32).mean(1))


def test_views_of_a_loss_only_run_offer_loss_alone(loss_runs):
    store, run_a, run_b, mean_a, mean_b = loss_runs
    overview = views.summary_overview(store, run_a)
    assert overview["recorded_scores"] == views.recorded_scores(store, run_a) == ["loss"]
    assert overview["samples"] == 30 and (overview["sample_id_min"], overview["sample_id_max"]) == (0, 29)
    loss = views.score_histogram(store, run_a, "loss")
    assert loss.missing == 0 and loss.bins["samples"].sum() == 30 and loss.bins["flipped"].sum() == 0
    assert np.isclose(loss.bins["bin_start"].iloc[0], mean_a.min(), rtol=1e-6)
    unrecorded = views.score_histograms(store, run_a, ["aum", "forgetting_events"])
    assert all(h.bins.empty and h.missing == 30 for h in unrecorded.values())
    assert views.forgetting_counts(store, run_a).empty  # no "0 events" for a run that cannot forget
    assert views.region_counts(store, run_a)["samples"].tolist() == [0, 0, 0]
    assert views.data_map(store, run_a, "loss").total == 0
    hardest = views.hardest_samples(store, run_b, "loss", 5)
    assert hardest["sample_id"].tolist() == np.argsort(-mean_b, kind="stable")[:5].tolist()
    record = views.sample_record(store, run_a, 3)
    assert record["loss"] == pytest.approx(mean_a[3], rel=1e-6)
    assert pd.isna(record["never_learned"]) and pd.isna(record["forgetting_events"]) and pd.isna(record["label"])


def test_two_loss_only_runs_agree_on_loss_like_scipy(loss_runs):
    store, run_a, run_b, mean_a, mean_b = loss_runs
    agreement = views.score_agreement(store, run_a, run_b, "loss", 0.2)
    assert agreement.common_samples == 30 and agreement.top_k == 6
    assert agreement.spearman == pytest.approx(spearmanr(mean_a, mean_b).statistic, abs=1e-9)
    top_a, top_b = set(np.argsort(-mean_a)[:6]), set(np.argsort(-mean_b)[:6])
    assert agreement.top_k_overlap == pytest.approx(len(top_a & top_b) / 6)


def test_views_of_a_sequence_run(store):
    from conftest import write_sequence_run

    rng = np.random.default_rng(8)
    accuracy = rng.uniform(0, 1, size=(25, 5))
    run_id = write_sequence_run(store, accuracy, rng.integers(1, 30, 25), rng.uniform(0, 3, (25, 5)),
                                rng.uniform(0, 1, (25, 5)), rng.normal(size=(25, 5)), threshold=0.5)
    summary = store_api.run_summary(store, run_id)
    assert "token_accuracy" in views.recorded_scores(store, run_id)
    hardest = views.hardest_samples(store, run_id, "token_accuracy", 25)
    assert hardest["sample_id"].tolist() == rank_hardest(summary, "token_accuracy")["sample_id"].tolist()
    assert hardest["token_accuracy"].is_monotonic_increasing  # lower token accuracy = harder
    counts = views.forgetting_counts(store, run_id).set_index("forgetting_events")
    assert counts["samples"].sum() == 25
    learned = summary[~summary["never_learned"].astype(bool)]
    assert counts.loc["0", "samples"] == (learned["forgetting_events"] == 0).sum()
    expected = cartography_region(summary["confidence"], summary["variability"]).value_counts()
    regions = views.region_counts(store, run_id).set_index("region")
    assert [regions.loc[r, "samples"] for r in REGIONS] == [expected.get(r, 0) for r in REGIONS]


def test_summaries_materialised_before_schema_3_read_the_sequence_columns_as_null(sample_store, noisy_summary):
    import pyarrow.parquet as pq

    materialised = pq.read_schema(sample_store.run_dir(NOISY) / "summary.parquet")
    assert "token_accuracy" not in materialised.names  # written before the column existed
    assert noisy_summary["token_accuracy"].isna().all() and noisy_summary["token_count"].isna().all()
    assert "token_accuracy" in views.sample_record(sample_store, NOISY, 5)
    assert "token_accuracy" not in views.recorded_scores(sample_store, NOISY)


def test_cartography_region_leaves_unrecorded_samples_out():
    region = cartography_region(pd.Series([0.9, np.nan, 0.1]), pd.Series([0.05, np.nan, 0.05]))
    assert region.iloc[0] == "easy-to-learn" and pd.isna(region.iloc[1]) and region.iloc[2] == "hard-to-learn"
    loss_only = pd.DataFrame({"sample_id": [1, 2], "label": [pd.NA, pd.NA], "label_noisy": [False, False],
                              "confidence": [np.nan, np.nan], "variability": [np.nan, np.nan]})
    preview = views.curriculum_preview(loss_only, np.array([1.0, 0.0]))
    assert preview.kept_per_region["samples"].tolist() == [0, 0, 0]  # not "hard-to-learn"
    assert preview.kept_per_class.empty
