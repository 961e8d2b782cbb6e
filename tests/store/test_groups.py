"""store.groups: per-group aggregates read with DuckDB from a run's files (live segments of
one or two ranks, or compacted), checked against pandas computed from the rows alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import run_summary, sample_summary
from store.errors import StoreError
from store.groups import (
    GROUP_SCORE_COLUMNS,
    NoGroupsError,
    group_epoch_metrics,
    group_names,
    group_scores,
    group_step_loss,
    has_groups,
    rank_groups,
    with_group_names,
)
from tests.store.group_runs import GROUP_IDS, sample_groups, write_grouped_run

NAMES = {gid: name for name, gid in GROUP_IDS.items()}
LAYOUTS = [(1, False), (2, False), (2, True)]  # (world_size, compacted)


def per_sample(rows: pd.DataFrame) -> pd.DataFrame:
    """The summary's definitions, in pandas, from the presentation rows."""
    out = {}
    for sample_id, sample in rows.sort_values(["epoch", "step"]).groupby("sample_id"):
        correct = sample["correct"].to_numpy(bool)
        out[sample_id] = {
            "loss": sample["loss"].mean(),
            "confidence": sample["p_true"].mean(),
            "variability": sample["p_true"].std(ddof=0),
            "correctness": correct.mean(),
            "aum": sample["margin"].mean(),
            "forgetting_events": int((correct[:-1] & ~correct[1:]).sum()),
            "never_learned": not correct.any(),
            "final_correct": bool(correct[-1]),
            "presentations": len(sample),
            "label_noisy": bool(sample["label_noisy"].iloc[0]),
        }
    return pd.DataFrame.from_dict(out, orient="index")


def expected_group_scores(rows: pd.DataFrame) -> pd.DataFrame:
    samples = per_sample(rows)
    samples["group"] = sample_groups(rows).map(NAMES)
    samples = samples.dropna(subset=["group"])
    grouped = samples.groupby("group")
    return pd.DataFrame({
        "samples": grouped.size(),
        "presentations": grouped["presentations"].sum(),
        "flipped": grouped["label_noisy"].sum(),
        "never_learned": grouped["never_learned"].sum(),
        "loss": grouped["loss"].mean(),
        "forgetting_events": grouped["forgetting_events"].mean(),
        "forgetting_events_total": grouped["forgetting_events"].sum(),
        "confidence": grouped["confidence"].mean(),
        "variability": grouped["variability"].mean(),
        "correctness": grouped["correctness"].mean(),
        "aum": grouped["aum"].mean(),
        "final_accuracy": grouped["final_correct"].mean(),
    })


@pytest.mark.parametrize("world_size, compacted", LAYOUTS)
def test_group_scores_match_pandas(store, world_size, compacted):
    run = write_grouped_run(store, world_size=world_size, finish=compacted)
    frame = group_scores(store, run.run_id)
    assert list(frame.columns) == ["group", "group_id", *GROUP_SCORE_COLUMNS]
    assert frame["group"].tolist() == ["code", "docs", "math"]
    assert frame["group_id"].tolist() == [GROUP_IDS[name] for name in frame["group"]]
    expected = expected_group_scores(run.rows)
    actual = frame.set_index("group")
    for column in expected:
        np.testing.assert_allclose(actual[column].astype(float), expected[column].astype(float), rtol=1e-6,
                                   err_msg=column)
    # sample 0 has no group; every other sample is counted once, in its latest group
    assert actual["samples"].sum() == 14
    assert actual[["grand", "grand_last", "token_accuracy", "token_count"]].isna().all().all()
    # EL2N was written as sqrt(2) (1 - p_true) per presentation
    el2n = (np.sqrt(2) * (1 - run.rows["p_true"])).astype(np.float32).astype(float)
    reference = run.rows.assign(el2n=el2n, group=run.rows["sample_id"].map(sample_groups(run.rows)).map(NAMES))
    by_sample = reference.groupby("sample_id").agg(el2n=("el2n", "mean"), group=("group", "first")).dropna()
    np.testing.assert_allclose(actual["el2n"], by_sample.groupby("group")["el2n"].mean(), rtol=1e-6)


def test_a_samples_group_is_that_of_its_latest_presentation(store):
    run = write_grouped_run(store, switching=(1, 4))
    summary = sample_summary(store, run.run_id).set_index("sample_id")
    # sample 1 and 4 were "docs" in epoch 0, then their own group
    assert summary.loc[1, "group_id"] == GROUP_IDS["docs"] == GROUP_IDS[list(GROUP_IDS)[1 % 3]]
    assert summary.loc[4, "group_id"] == GROUP_IDS["docs"]
    assert summary.loc[7, "group_id"] == GROUP_IDS["docs"]  # 7 % 3 == 1
    assert summary.loc[5, "group_id"] == GROUP_IDS["math"] and summary.loc[3, "group_id"] == GROUP_IDS["code"]
    assert pd.isna(summary.loc[0, "group_id"])
    named = with_group_names(store, run.run_id, summary.reset_index())
    assert list(named.columns[named.columns.get_loc("group_id"):][:2]) == ["group_id", "group"]
    expected = sample_groups(run.rows).map(NAMES)
    assert named.set_index("sample_id")["group"].drop(index=0).to_dict() == expected.to_dict()
    assert named.set_index("sample_id")["group"].loc[0] is None


def test_group_scores_over_two_runs_average_each_samples_scores_first(store):
    runs = [write_grouped_run(store, seed=seed) for seed in (0, 1)]
    frame = group_scores(store, [run.run_id for run in runs]).set_index("group")
    per_run = [per_sample(run.rows) for run in runs]
    loss = (per_run[0]["loss"] + per_run[1]["loss"]) / 2
    groups = sample_groups(runs[0].rows).map(NAMES)
    np.testing.assert_allclose(frame["loss"], loss.loc[groups.index].groupby(groups).mean(), rtol=1e-6)
    assert frame["presentations"].tolist() == (2 * per_run[0]["presentations"].loc[groups.index]
                                               ).groupby(groups).sum().tolist()


def test_an_epoch_window_bounds_the_loss_means(store):
    run = write_grouped_run(store)
    frame = group_scores(store, run.run_id, epochs=(2, 3)).set_index("group")
    window = run.rows[run.rows["epoch"].between(2, 3)]
    groups = sample_groups(run.rows).map(NAMES)
    loss = window.groupby("sample_id")["loss"].mean().loc[groups.index]
    np.testing.assert_allclose(frame["loss"], loss.groupby(groups).mean(), rtol=1e-6)
    # forgetting always counts every presentation
    assert frame["forgetting_events_total"].tolist() == group_scores(store, run.run_id).set_index(
        "group")["forgetting_events_total"].tolist()


@pytest.mark.parametrize("world_size, compacted", LAYOUTS)
def test_loss_per_step_and_per_epoch_match_pandas(store, world_size, compacted):
    run = write_grouped_run(store, world_size=world_size, finish=compacted)
    rows = run.rows.dropna(subset=["group_id"])
    per_step = group_step_loss(store, run.run_id)
    expected = rows.groupby(["group_id", "step"]).agg(
        loss=("loss", "mean"), presentations=("loss", "size"), accuracy=("correct", "mean"), epoch=("epoch", "min"))
    actual = per_step.set_index(["group_id", "step"]).sort_index()
    assert list(actual.index) == list(expected.index)
    np.testing.assert_allclose(actual["loss"], expected["loss"], rtol=1e-6)
    np.testing.assert_allclose(actual["accuracy"], expected["accuracy"])
    assert actual["presentations"].tolist() == expected["presentations"].tolist()
    assert actual["epoch"].tolist() == expected["epoch"].tolist()
    assert (per_step["step_end"] == per_step["step"]).all()
    assert per_step["group"].tolist() == [NAMES[g] for g in per_step["group_id"]]

    per_epoch = group_epoch_metrics(store, run.run_id).set_index(["group_id", "epoch"])
    expected = rows.groupby(["group_id", "epoch"]).agg(
        loss=("loss", "mean"), accuracy=("correct", "mean"), presentations=("loss", "size"))
    assert list(per_epoch.index) == list(expected.index)
    for column in expected:
        np.testing.assert_allclose(per_epoch[column].astype(float), expected[column].astype(float), rtol=1e-6)
    assert per_epoch["token_accuracy"].isna().all()


@pytest.mark.parametrize("buckets", [1, 3, 5])
def test_steps_in_buckets_are_the_means_of_every_presentation_in_them(store, buckets):
    run = write_grouped_run(store, num_samples=23, batch_size=3)  # 8 steps per epoch, 32 in all
    rows = run.rows.dropna(subset=["group_id"])
    frame = group_step_loss(store, run.run_id, max_buckets=buckets)
    assert frame.groupby("group_id").size().max() == buckets
    # the buckets cut the steps 0..31 into `buckets` consecutive, nearly equal ranges
    edges = frame.drop_duplicates("step").sort_values("step")
    assert edges["step"].iloc[0] == 0 and edges["step_end"].iloc[-1] == 31
    assert (edges["step"].iloc[1:].to_numpy() == edges["step_end"].iloc[:-1].to_numpy() + 1).all()
    sizes = edges["step_end"] - edges["step"] + 1
    assert sizes.max() - sizes.min() <= 1
    for row in frame.itertuples():
        inside = rows[(rows["group_id"] == row.group_id) & rows["step"].between(row.step, row.step_end)]
        assert row.presentations == len(inside)
        np.testing.assert_allclose(row.loss, inside["loss"].mean(), rtol=1e-6)
    assert frame["presentations"].sum() == len(rows)


def test_group_names_are_deduplicated_and_a_clash_is_refused(store):
    run = write_grouped_run(store, world_size=2)  # both ranks wrote their groups
    names = group_names(store, run.run_id)
    assert names.to_dict("list") == {"group_id": sorted(GROUP_IDS.values()),
                                     "group": [NAMES[g] for g in sorted(GROUP_IDS.values())]}
    assert has_groups(store, run.run_id)
    store.write_segment(run.run_id, "groups", pa.table({"group_id": pa.array([42], pa.int32()),
                                                         "group_name": ["papers"]}), "r02-g")
    with pytest.raises(StoreError, match="group id 42 has two names \\('docs', 'papers'\\)"):
        group_names(store, run.run_id)


def test_a_run_without_groups_says_so(store):
    from conftest import write_synthetic_run

    p = np.tile(np.linspace(0.9, 0.1, 5)[:, None], (1, 2))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5)
    assert not has_groups(store, run_id)
    with pytest.raises(NoGroupsError, match=f"run '{run_id}' recorded no groups; a batch gives"):
        group_scores(store, run_id)
    summary = sample_summary(store, run_id)
    assert summary["group_id"].isna().all()
    assert with_group_names(store, run_id, summary) is summary
    assert group_step_loss(store, run_id).empty and group_epoch_metrics(store, run_id).empty


def test_a_summary_materialised_before_groups_reads_with_a_missing_group_id(store):
    from store.queries import SUMMARY

    run = write_grouped_run(store, finish=True)
    path = store.run_dir(run.run_id) / "summary.parquet"
    old = pq.read_table(path).drop(["group_id"])
    pq.write_table(old, path)
    summary = run_summary(store, run.run_id)
    assert list(summary.columns) == SUMMARY.names
    assert summary["group_id"].isna().all() and len(summary) == 15


def test_rank_groups_follows_the_registry_direction():
    frame = pd.DataFrame({"group": ["a", "b", "c", "d"], "loss": [0.5, np.nan, 2.0, 1.0],
                          "aum": [1.0, -1.0, 0.5, np.nan]})
    assert rank_groups(frame, "loss")["group"].tolist() == ["c", "d", "a", "b"]
    assert rank_groups(frame, "aum")["group"].tolist() == ["b", "c", "a", "d"]  # low AUM is hard
    with pytest.raises(ValueError, match="unknown score 'nope'"):
        rank_groups(frame, "nope")
