"""Suggested labels (store.views.relabel): the most-predicted class over a window of epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from store.views.relabel import SUGGESTED_COLUMNS, default_relabel_epochs, recorded_epochs, suggested_labels

#: pred[sample, epoch] for 4 samples over 4 epochs; sample 3 is never presented in epoch 3.
PREDS = np.array([
    [0, 0, 0, 0],   # always its label
    [1, 2, 2, 2],   # label 1, later predicted 2 three times
    [0, 1, 2, 1],   # label 2: epochs 2..3 tie 2 vs 1 -> its label 2 wins
    [2, 0, 1, -1],  # label 1; not presented at epoch 3
])
LABELS = np.array([0, 1, 2, 1])


def write_run(store) -> str:
    run_id = store.create_run(name="votes", task="t", model="m", seed=0, max_epochs=4)
    store.write_samples(run_id, pa.table({
        "sample_id": np.arange(4, dtype=np.int64), "label": LABELS.astype(np.int64),
        "original_label": np.array([0, 2, 2, 1], dtype=np.int64),
        "label_noisy": np.array([False, True, False, False]),
    }))
    for epoch in range(4):
        presented = PREDS[:, epoch] >= 0
        ids = np.arange(4)[presented]
        store.write_segment(run_id, "presentations", pa.table({
            "epoch": np.full(len(ids), epoch, dtype=np.int32),
            "step": np.full(len(ids), epoch, dtype=np.int64),
            "sample_id": ids.astype(np.int64),
            "label": LABELS[ids].astype(np.int32),
            "pred": PREDS[ids, epoch].astype(np.int32),
            "rank": np.zeros(len(ids), dtype=np.int16),
        }), f"r00-e{epoch:06d}")
    return run_id


def reference(epochs: tuple[int, int]) -> dict[int, tuple[int, float]]:
    """The vote counted in plain Python."""
    answer = {}
    for sample_id in range(4):
        votes = [int(PREDS[sample_id, e]) for e in range(epochs[0], epochs[1] + 1) if PREDS[sample_id, e] >= 0]
        if not votes:
            continue
        counts = {c: votes.count(c) for c in set(votes)}
        best = max(counts.values())
        tied = sorted(c for c, n in counts.items() if n == best)
        winner = LABELS[sample_id] if LABELS[sample_id] in tied else tied[0]
        answer[sample_id] = (int(winner), best / len(votes))
    return answer


def test_default_window_is_the_first_half_of_the_recorded_epochs(store):
    run_id = write_run(store)
    assert recorded_epochs(store, run_id) == (0, 3)
    assert default_relabel_epochs(store, run_id) == (0, 1)


@pytest.mark.parametrize("epochs", [(0, 3), (2, 3), (1, 1), (3, 3), (0, 0)])
def test_suggestions_match_a_plain_vote(store, epochs):
    run_id = write_run(store)
    frame = suggested_labels(store, run_id, epochs)
    assert tuple(frame.columns) == SUGGESTED_COLUMNS
    assert frame["sample_id"].tolist() == [0, 1, 2, 3]
    expected = reference(epochs)
    for row in frame.itertuples():
        if row.sample_id in expected:
            assert (row.suggested_label, row.suggested_confidence) == pytest.approx(expected[row.sample_id])
        else:
            assert pd.isna(row.suggested_label) and np.isnan(row.suggested_confidence)
            assert row.window_presentations == 0


def test_default_call_uses_the_first_half(store):
    run_id = write_run(store)
    frame = suggested_labels(store, run_id)
    assert frame.equals(suggested_labels(store, run_id, (0, 1)))
    expected = reference((0, 1))
    for row in frame.itertuples():
        if row.sample_id in expected:
            assert (row.suggested_label, row.suggested_confidence) == pytest.approx(expected[row.sample_id])


def test_a_run_without_presentations_and_a_bad_window(store):
    run_id = store.create_run(name="empty", task="t", model="m", seed=0, max_epochs=1)
    assert recorded_epochs(store, run_id) is None
    assert suggested_labels(store, run_id).empty
    with pytest.raises(ValueError, match="first <= last"):
        suggested_labels(store, write_run(store), (3, 1))


def test_sample_runs_flipped_labels_get_back_their_clean_label_in_early_epochs(sample_store):
    from conftest import sample_run_ids

    run_id = sample_run_ids()["cnn-noise20-s0"]
    frame = suggested_labels(sample_store, run_id, (5, 9))
    flipped = frame[frame["label_noisy"]]
    assert len(flipped) == 800
    # Counted independently with pandas over the raw presentations file.
    raw = pd.read_parquet(sample_store.run_dir(run_id) / "presentations.parquet",
                          columns=["sample_id", "epoch", "pred"])
    raw = raw[raw["epoch"].between(5, 9)]
    top = raw.groupby("sample_id")["pred"].agg(lambda p: p.value_counts().max() / len(p))
    assert np.allclose(frame.set_index("sample_id")["suggested_confidence"], top.sort_index())
    fixed = int((flipped["suggested_label"] == flipped["original_label"]).sum())
    assert fixed > 400


# -- the relabel strategy and the file's label column -------------------------------------

from store.curriculum import CurriculumError, build_curriculum, load_curriculum, save_curriculum  # noqa: E402
from store.curriculum.relabel import combine_suggestions, with_suggestions  # noqa: E402


def relabel_summary() -> pd.DataFrame:
    """6 samples, loss rising with the id; the two hardest (4, 5) are suspected at fraction 1/3."""
    return pd.DataFrame({
        "sample_id": np.arange(6), "label": [0, 1, 2, 0, 1, 2], "loss": np.arange(6) / 10,
        "suggested_label": pd.array([0, 1, 1, 0, 0, 2], dtype="Int64"),
        "suggested_confidence": [1.0, 1.0, 0.9, 1.0, 0.6, 0.8],
    })


def test_relabel_replaces_only_suspected_samples_with_a_different_suggestion():
    curriculum = build_curriculum(relabel_summary(), "relabel", "loss", fraction=1 / 3)
    # 4 is suspected and suggested 0 -> relabelled; 5 is suspected but its suggestion is its label;
    # 2 has a different suggestion but is not suspected
    assert curriculum.table["label"].tolist() == [0, 1, 2, 0, 0, 2]
    assert (curriculum.table["weight"] == 1).all()
    confident = build_curriculum(relabel_summary(), "relabel", "loss", fraction=1 / 3, min_confidence=0.7)
    assert confident.table["label"].tolist() == [0, 1, 2, 0, 1, 2]


def test_relabel_needs_suggestions():
    with pytest.raises(CurriculumError, match="relabel needs the columns suggested_label"):
        build_curriculum(relabel_summary().drop(columns="suggested_label"), "relabel", "loss", fraction=0.5)


def test_the_label_column_round_trips_and_is_validated(tmp_path):
    curriculum = build_curriculum(relabel_summary(), "relabel", "loss", fraction=1 / 3)
    for suffix in (".parquet", ".csv"):
        path = save_curriculum(curriculum, tmp_path / f"relabel{suffix}")
        loaded = load_curriculum(path, num_classes=3)
        assert loaded.table["label"].tolist() == [0, 1, 2, 0, 0, 2]
        assert loaded.labels_for(np.array([4, 5, 9]), np.array([7, 7, 7])).tolist() == [0, 2, 7]
    with pytest.raises(CurriculumError, match=r"label 2 of sample_id 2 is not a class of the task; expected an "
                                              r"integer in \[0, 2\)"):
        load_curriculum(tmp_path / "relabel.parquet", num_classes=2)
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,weight,label\n0,1,1.5\n")
    with pytest.raises(CurriculumError, match="column label must hold integers"):
        load_curriculum(bad)


def test_suggestions_of_several_runs_add_their_votes():
    run_a = pd.DataFrame({"sample_id": [0, 1], "suggested_label": pd.array([1, 2], dtype="Int64"),
                          "suggested_confidence": [1.0, 0.5], "window_presentations": [4, 4]})
    run_b = pd.DataFrame({"sample_id": [0, 1], "suggested_label": pd.array([3, 0], dtype="Int64"),
                          "suggested_confidence": [0.5, 0.75], "window_presentations": [4, 4]})
    combined = combine_suggestions([run_a, run_b]).set_index("sample_id")
    # sample 0: label 1 has 4 votes, label 3 has 2 -> 1 with 4/8; sample 1: 2 has 2 votes, 0 has 3 -> 0 with 3/8
    assert combined["suggested_label"].tolist() == [1, 0]
    assert combined["suggested_confidence"].tolist() == pytest.approx([0.5, 0.375])
    joined = with_suggestions(pd.DataFrame({"sample_id": [1, 0, 5]}), combined.reset_index())
    assert joined["suggested_label"].tolist()[:2] == [0, 1] and pd.isna(joined["suggested_label"].iloc[2])
