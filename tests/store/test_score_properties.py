"""Property tests (hypothesis) for the per-sample scores of ``store/sql/summary.sql``: for any
presentations of a synthetic run, each score lies in its range and each mean between the
smallest and largest value it averages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import write_synthetic_run
from store import Store, compact_run, run_summary

TOLERANCE = 1e-5  # float32 storage of the presentations


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return Store(tmp_path_factory.mktemp("score-properties") / "store", create=True)


@st.composite
def presentations(draw):
    samples = draw(st.integers(1, 5))
    epochs = draw(st.integers(1, 7))
    shape = (samples, epochs)
    correct = draw(arrays(np.bool_, shape))
    p_true = draw(arrays(np.float64, shape, elements=st.floats(0.0, 1.0)))
    margin = draw(arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)))
    loss = draw(arrays(np.float64, shape, elements=st.floats(0.0, 20.0)))
    el2n = draw(arrays(np.float64, shape, elements=st.floats(0.0, float(np.sqrt(2)))))
    return correct, p_true, margin, loss, el2n


def stored(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32).astype(np.float64)  # what the presentations table holds


@given(presentations(), st.booleans())
@settings(max_examples=20, deadline=None)
def test_summary_scores_stay_in_their_ranges_and_between_their_inputs(shared_store, data, compacted):
    correct, p_true, margin, loss, el2n = data
    samples, epochs = correct.shape
    run_id = write_synthetic_run(shared_store, correct, p_true, margin, loss=loss, el2n=el2n)
    if compacted:  # the materialised summary, as a finished run is read
        compact_run(shared_store, run_id)
    summary = run_summary(shared_store, run_id).set_index("sample_id").sort_index()
    assert summary.index.tolist() == list(range(samples))
    for sample in range(samples):
        row = summary.loc[sample]
        assert 0 <= row["forgetting_events"] <= epochs // 2  # an event needs a learned epoch before it
        assert 0 <= row["confidence"] <= 1 and 0 <= row["correctness"] <= 1
        assert 0 <= row["variability"] <= 0.5 + TOLERANCE  # the std of values in [0, 1]
        assert -1 - TOLERANCE <= row["aum"] <= 1 + TOLERANCE  # margins drawn in [-1, 1]
        for score, inputs in [("confidence", p_true), ("aum", margin), ("loss", loss), ("el2n", el2n)]:
            values = stored(inputs[sample])
            assert values.min() - TOLERANCE <= row[score] <= values.max() + TOLERANCE, score
        assert row["correctness"] == pytest.approx(correct[sample].mean())
        assert bool(row["never_learned"]) == (not correct[sample].any())
        if correct[sample].any():
            assert row["first_learned_epoch"] == int(np.argmax(correct[sample]))
        assert row["variability"] == pytest.approx(stored(p_true[sample]).std(), abs=TOLERANCE)
