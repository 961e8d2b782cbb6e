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
