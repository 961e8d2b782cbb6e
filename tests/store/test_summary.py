"""The SQL per-sample summary against plain-Python / NumPy references."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_synthetic_run
from store import compact_run, rank_hardest, run_summary, sample_summary
from store.scores import SCORES, hardness


def forgetting_reference(history: list[bool]) -> tuple[int, int | None, bool]:
    """Toneva et al.: events = correct at t and incorrect at t+1; never learned flagged."""
    events = sum(1 for before, after in zip(history, history[1:]) if before and not after)
    first = next((epoch for epoch, c in enumerate(history) if c), None)
    return events, first, first is None


def test_forgetting_hand_cases(store):
    correct = np.array([
        [True, False, True, False, True],    # 2 events
        [False, False, False, False, False],  # never learned
        [False, True, True, True, True],     # learned at 1, unforgettable
        [True, True, True, True, False],     # 1 event at the very end
    ])
    p = np.where(correct, 0.9, 0.1)
    run_id = write_synthetic_run(store, correct, p, np.where(correct, 1.0, -1.0))
    summary = run_summary(store, run_id).set_index("sample_id")
    assert summary["forgetting_events"].tolist() == [2, 0, 0, 1]
    assert summary["never_learned"].tolist() == [False, True, False, False]
    assert pd.isna(summary.loc[1, "first_learned_epoch"])  # NULL, never a sentinel
    assert summary.loc[[0, 2, 3], "first_learned_epoch"].tolist() == [0, 1, 0]
    ranked = rank_hardest(summary.reset_index(), "forgetting_events")
    assert ranked["sample_id"].iloc[0] == 1  # never learned ranks as most forgettable
    assert ranked["sample_id"].iloc[1] == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_forgetting_matches_python_reference(tmp_path_factory, data):
    from store import Store

    store = Store(tmp_path_factory.mktemp("s"), create=True)
    num_samples = data.draw(st.integers(1, 12))
    num_epochs = data.draw(st.integers(1, 8))
    rows = data.draw(st.lists(st.lists(st.booleans(), min_size=num_epochs, max_size=num_epochs),
                              min_size=num_samples, max_size=num_samples))
    correct = np.array(rows, dtype=bool).reshape(num_samples, num_epochs)
    run_id = write_synthetic_run(store, correct, np.where(correct, 0.8, 0.2), np.zeros(correct.shape))
    summary = run_summary(store, run_id).set_index("sample_id")
    for sample_id, history in enumerate(correct.tolist()):
        events, first, never = forgetting_reference(history)
        assert summary.loc[sample_id, "forgetting_events"] == events
        assert bool(summary.loc[sample_id, "never_learned"]) == never
        if first is None:
            assert pd.isna(summary.loc[sample_id, "first_learned_epoch"])
        else:
            assert summary.loc[sample_id, "first_learned_epoch"] == first


def test_cartography_and_aum_against_numpy(store):
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=(30, 7))
    correct = p > 0.5
    margin = rng.normal(size=(30, 7))
    run_id = write_synthetic_run(store, correct, p, margin)
    summary = run_summary(store, run_id).set_index("sample_id")
    p32 = p.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(summary["confidence"], p32.mean(1), rtol=1e-6)
    np.testing.assert_allclose(summary["variability"], p32.std(1), rtol=1e-5, atol=1e-7)  # population std
    np.testing.assert_allclose(summary["correctness"], correct.mean(1), rtol=1e-12)
    np.testing.assert_allclose(summary["aum"], margin.astype(np.float32).mean(1), rtol=1e-5, atol=1e-6)


def test_epoch_window_and_compaction_give_same_scores(store):
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, size=(10, 6))
    el2n = rng.uniform(0, 1.4, size=(10, 6))
    run_id = write_synthetic_run(store, p > 0.5, p, np.zeros((10, 6)), el2n=el2n)
    window = run_summary(store, run_id, epochs=(1, 2)).set_index("sample_id")
    np.testing.assert_allclose(window["el2n"], el2n[:, 1:3].astype(np.float32).mean(1), rtol=1e-6)
    before = run_summary(store, run_id)
    compact_run(store, run_id)
    assert store.run_info(run_id)["compacted"] is True
    after = run_summary(store, run_id)
    np.testing.assert_allclose(after["el2n"], before["el2n"], rtol=1e-6)
    assert after["forgetting_events"].tolist() == before["forgetting_events"].tolist()


def test_averaging_over_seeds(store):
    rng = np.random.default_rng(2)
    p1, p2 = rng.uniform(size=(5, 4)), rng.uniform(size=(5, 4))
    never = np.zeros((5, 4), dtype=bool)
    c1 = p1 > 0.5
    c1[0] = False
    c2 = p2 > 0.5
    c2[0] = never[0]
    run_a = write_synthetic_run(store, c1, p1, np.ones((5, 4)))
    run_b = write_synthetic_run(store, c2, p2, np.zeros((5, 4)))
    both = sample_summary(store, [run_a, run_b]).set_index("sample_id")
    assert both["num_runs"].tolist() == [2] * 5
    np.testing.assert_allclose(
        both["confidence"], (p1.astype(np.float32).mean(1) + p2.astype(np.float32).mean(1)) / 2, rtol=1e-6
    )
    np.testing.assert_allclose(both["aum"], 0.5)
    assert bool(both.loc[0, "never_learned"]) is True


def test_every_score_declares_a_direction():
    frame = __import__("pandas").DataFrame({"sample_id": [0, 1], "aum": [-2.0, 3.0], "el2n": [0.1, 0.9],
                                             "never_learned": [False, False]})
    assert hardness(frame, "aum").tolist()[0] > hardness(frame, "aum").tolist()[1]
    assert hardness(frame, "el2n").tolist()[1] > hardness(frame, "el2n").tolist()[0]
    for spec in SCORES.values():
        assert isinstance(spec.higher_is_harder, bool)
    with pytest.raises(ValueError, match="unknown score"):
        hardness(frame, "nope")


def test_ddp_padding_is_dropped_but_repeats_within_a_rank_are_kept(store):
    """Rank 1 re-presents sample 0 (DistributedSampler padding): dropped. Rank 0 presents
    sample 1 twice in one epoch (sampling with replacement, --keep-steps): both kept."""
    from store import compact_run, dynamics
    from store.schema import PRESENTATIONS

    run_id = store.create_run(name="pad", task="synthetic", model="none", max_epochs=1, world_size=2)
    store.write_samples(run_id, pa.table({"sample_id": [0, 1, 2], "label": [0, 0, 0],
                                          "original_label": [0, 0, 0], "label_noisy": [False] * 3}))

    def segment(rank, steps, ids, correct):
        n = len(ids)
        return pa.table({
            "epoch": np.zeros(n, np.int32), "step": np.asarray(steps, np.int64), "sample_id": np.asarray(ids),
            "label": np.zeros(n, np.int32), "loss": np.ones(n, np.float32), "p_true": np.full(n, 0.5, np.float32),
            "el2n": np.full(n, 0.7, np.float32), "correct": np.asarray(correct), "pred": np.zeros(n, np.int32),
            "margin": np.zeros(n, np.float32), "weight": np.ones(n, np.float32),
            "grand_last": np.full(n, np.nan, np.float32), "rank": np.full(n, rank, np.int16),
        })

    store.write_segment(run_id, "presentations", segment(0, [0, 0, 1], [0, 1, 1], [True, True, False]), "r00-e000000")
    store.write_segment(run_id, "presentations", segment(1, [0, 1], [2, 0], [True, False]), "r01-e000000")
    for read in ("live", "compacted"):
        if read == "compacted":
            compact_run(store, run_id)
        rows = dynamics(store, run_id)
        assert sorted(rows["sample_id"].tolist()) == [0, 1, 1, 2], read
        summary = sample_summary(store, run_id).set_index("sample_id")
        assert summary["presentations"].tolist() == [1, 2, 1], read
        # sample 1: correct at step 0, incorrect at step 1 -> one forgetting event
        assert summary["forgetting_events"].tolist() == [0, 1, 0], read


# -- the other output kinds: per-sample losses and sequences ---------------------------

#: Summary columns a per-sample-loss run cannot fill: NULL there, never 0 or false.
NEEDS_CORRECT_OR_P = ("el2n", "grand_last", "forgetting_events", "first_learned_epoch", "never_learned",
                      "confidence", "variability", "correctness", "aum", "final_correct",
                      "token_accuracy", "token_count")


def loss_only_reference(loss: np.ndarray, epochs: slice = slice(None)) -> pd.DataFrame:
    """pandas: one row per sample, the mean float32 loss over ``epochs``, presentations counted."""
    loss32 = pd.DataFrame(loss.astype(np.float32).astype(np.float64))
    return pd.DataFrame({"sample_id": np.arange(len(loss)), "loss": loss32.iloc[:, epochs].mean(axis=1),
                         "presentations": np.full(len(loss), loss.shape[1])})


@pytest.mark.parametrize("finish", [False, True], ids=["live", "compacted"])
def test_loss_only_summary_has_loss_and_nulls_elsewhere(store, finish):
    from conftest import write_loss_run

    rng = np.random.default_rng(3)
    loss = rng.gamma(2.0, 0.5, size=(13, 5))
    run_id = write_loss_run(store, loss, finish=finish)
    summary = run_summary(store, run_id)
    expected = loss_only_reference(loss)
    assert summary["sample_id"].tolist() == list(range(13))
    np.testing.assert_allclose(summary["loss"], expected["loss"], rtol=1e-12)
    assert summary["presentations"].tolist() == expected["presentations"].tolist()
    for column in NEEDS_CORRECT_OR_P:
        assert summary[column].isna().all(), column  # NULL: not 0 events, not "never learned"
    assert summary["label"].isna().all() and not summary["label_noisy"].any()  # no class labels
    assert summary["grand"].isna().all()
    window = run_summary(store, run_id, epochs=(1, 3))
    np.testing.assert_allclose(window["loss"], loss_only_reference(loss, slice(1, 4))["loss"], rtol=1e-12)
    assert window["forgetting_events"].isna().all()
    from store import recorded_scores

    assert recorded_scores(store, run_id) == ["loss"]


def test_loss_only_runs_average_without_inventing_correctness(store):
    from conftest import write_loss_run

    rng = np.random.default_rng(4)
    loss_a, loss_b = rng.gamma(2.0, 0.5, size=(6, 3)), rng.gamma(2.0, 0.5, size=(6, 3))
    run_a, run_b = write_loss_run(store, loss_a), write_loss_run(store, loss_b, finish=True)
    both = sample_summary(store, [run_a, run_b])
    expected = (loss_only_reference(loss_a)["loss"] + loss_only_reference(loss_b)["loss"]) / 2
    np.testing.assert_allclose(both["loss"], expected, rtol=1e-12)
    assert both["num_runs"].tolist() == [2] * 6 and both["presentations"].tolist() == [6] * 6
    assert both["never_learned"].isna().all()  # no run recorded correctness: not "never learned"
    assert both["forgetting_events"].isna().all() and both["correctness"].isna().all()


def sequence_arrays(seed: int = 5, sequences: int = 11, epochs: int = 6):
    rng = np.random.default_rng(seed)
    token_count = rng.integers(1, 40, size=sequences)
    # token accuracy as whole tokens right out of token_count, as a recorder would compute it
    right = rng.integers(0, token_count[:, None] + 1, size=(sequences, epochs))
    right[0] = 0  # sequence 0: never reaches the threshold (never learned)
    right[1] = token_count[1]  # sequence 1: always all right (learned at epoch 0, unforgettable)
    token_accuracy = right / token_count[:, None]
    p_true = rng.uniform(0.01, 0.99, size=(sequences, epochs))
    return token_accuracy, token_count, -np.log(p_true), p_true, rng.normal(size=(sequences, epochs))


@pytest.mark.parametrize("finish", [False, True], ids=["live", "compacted"])
def test_sequence_summary_against_pandas(store, finish):
    from conftest import write_sequence_run
    from store import recorded_scores

    threshold = 0.6
    token_accuracy, token_count, loss, p_true, margin = sequence_arrays()
    run_id = write_sequence_run(store, token_accuracy, token_count, loss, p_true, margin,
                                threshold=threshold, finish=finish)
    summary = run_summary(store, run_id).set_index("sample_id")
    f32 = lambda values: values.astype(np.float32).astype(np.float64)  # noqa: E731 - as stored
    correct = f32(token_accuracy) >= threshold  # the rule the recorder applies per sequence
    np.testing.assert_allclose(summary["loss"], f32(loss).mean(1), rtol=1e-12)
    np.testing.assert_allclose(summary["el2n"], f32(np.sqrt(2) * (1 - p_true)).mean(1), rtol=1e-12)
    np.testing.assert_allclose(summary["confidence"], f32(p_true).mean(1), rtol=1e-12)
    np.testing.assert_allclose(summary["variability"], f32(p_true).std(1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(summary["aum"], f32(margin).mean(1), rtol=1e-12)
    np.testing.assert_allclose(summary["correctness"], correct.mean(1), rtol=1e-12)
    np.testing.assert_allclose(summary["token_accuracy"], f32(token_accuracy).mean(1), rtol=1e-12)
    assert summary["token_count"].tolist() == token_count.astype(float).tolist()  # exact
    for sample_id, history in enumerate(correct.tolist()):
        events, first, never = forgetting_reference(history)
        assert summary.loc[sample_id, "forgetting_events"] == events
        assert bool(summary.loc[sample_id, "never_learned"]) == never
        assert bool(summary.loc[sample_id, "final_correct"]) == history[-1]
        if first is None:
            assert pd.isna(summary.loc[sample_id, "first_learned_epoch"])
        else:
            assert summary.loc[sample_id, "first_learned_epoch"] == first
    assert bool(summary.loc[0, "never_learned"]) and summary.loc[1, "forgetting_events"] == 0
    assert summary["presentations"].tolist() == [6] * 11
    assert summary["grand"].isna().all() and summary["grand_last"].isna().all()
    assert recorded_scores(store, run_id) == ["loss", "el2n", "forgetting_events", "first_learned_epoch",
                                              "confidence", "variability", "correctness", "aum",
                                              "token_accuracy"]
    window = run_summary(store, run_id, epochs=(2, 3)).set_index("sample_id")
    np.testing.assert_allclose(window["token_accuracy"], f32(token_accuracy)[:, 2:4].mean(1), rtol=1e-12)
    assert window["forgetting_events"].tolist() == summary["forgetting_events"].tolist()  # all epochs


def test_classification_summaries_have_no_sequence_columns(store):
    from store import dynamics, recorded_scores
    from store.queries import SUMMARY

    p = np.array([[0.2, 0.9, 0.8]])
    run_id = write_synthetic_run(store, p > 0.5, p, np.zeros(p.shape))
    summary = run_summary(store, run_id)
    assert list(summary.columns) == SUMMARY.names  # the schema that old materialised summaries are read by
    assert list(summary.columns[-2:]) == ["token_accuracy", "token_count"]
    assert summary["token_accuracy"].isna().all() and summary["token_count"].isna().all()
    assert summary.loc[0, "forgetting_events"] == 0 and summary.loc[0, "first_learned_epoch"] == 1
    assert "token_accuracy" not in recorded_scores(store, run_id)
    rows = dynamics(store, run_id)
    assert list(rows.columns[-3:]) == ["token_count", "token_accuracy", "group_id"]
    assert rows["token_count"].isna().all() and rows["group_id"].isna().all()


def test_token_accuracy_ranks_low_as_hard():
    from store.scores import OUTPUT_KINDS, output_kind, scores_of_kind

    frame = pd.DataFrame({"sample_id": [0, 1, 2], "token_accuracy": [0.9, 0.2, 0.5]})
    assert SCORES["token_accuracy"].higher_is_harder is False
    assert rank_hardest(frame, "token_accuracy")["sample_id"].tolist() == [1, 2, 0]
    assert scores_of_kind("loss") == ["loss", "grand"]
    assert "token_accuracy" in scores_of_kind("sequence") and "token_accuracy" not in scores_of_kind("classification")
    assert set(scores_of_kind("sequence")) == set(SCORES)
    assert output_kind({}) == "classification" and output_kind({"output_kind": "loss"}) == "loss"
    assert OUTPUT_KINDS == ("classification", "sequence", "loss")
    with pytest.raises(ValueError, match="unknown output_kind 'image'"):
        output_kind({"output_kind": "image"})


# -- curricula from a per-sample-loss run ---------------------------------------------


def test_a_loss_curriculum_from_a_loss_only_run_prunes_exactly_the_highest_losses(store):
    from conftest import write_loss_run
    from store import build_curriculum
    from store.curriculum import CurriculumError

    rng = np.random.default_rng(6)
    loss = rng.gamma(2.0, 0.5, size=(40, 4))
    run_id = write_loss_run(store, loss, finish=True)
    summary = sample_summary(store, run_id)
    reference = loss_only_reference(loss)
    top = set(reference.nlargest(10, "loss")["sample_id"])  # the highest quarter by mean loss
    for strategy, params in (("downweight-noise", {"fraction": 0.25}), ("keep-easy", {"keep": 0.75})):
        curriculum = build_curriculum(summary, strategy, "loss", **params)
        table = curriculum.table
        assert set(table.loc[table["weight"] == 0, "sample_id"]) == top, strategy
        assert (table.loc[table["weight"] > 0, "weight"] == 1).all() and len(table) == 40
    for score in ("aum", "cartography", "forgetting_events", "el2n"):
        with pytest.raises(CurriculumError, match="needs the probability of the label per presentation"):
            build_curriculum(summary, "downweight-noise", score, fraction=0.25)
    with pytest.raises(CurriculumError, match="class-balance needs the class label of every sample; 40 of 40"):
        build_curriculum(summary, "class-balance")
    random = build_curriculum(summary, "random", keep=0.5, seed=1)
    assert int((random.table["weight"] > 0).sum()) == 20
