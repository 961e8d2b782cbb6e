"""Property tests (hypothesis) for the per-presentation reductions of ``training/reduce.py``:
ranges and bounds that hold for any logits, checked against plain-PyTorch definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training.reduce import classification_stats, loss_stats, sequence_stats

SETTINGS = settings(max_examples=40, deadline=None)
FINITE = st.floats(-30.0, 30.0, allow_nan=False, width=32)


@st.composite
def logits_and_targets(draw):
    batch = draw(st.integers(1, 6))
    classes = draw(st.integers(2, 7))
    logits = draw(arrays(np.float32, (batch, classes), elements=FINITE))
    targets = draw(arrays(np.int64, (batch,), elements=st.integers(0, classes - 1)))
    return torch.from_numpy(logits), torch.from_numpy(targets)


@given(logits_and_targets())
@SETTINGS
def test_classification_statistics_stay_in_their_ranges(data):
    logits, targets = data
    stats = classification_stats(logits, targets)
    probs = torch.softmax(logits.double(), dim=1)
    p_y = probs[torch.arange(len(targets)), targets]
    tolerance = 1e-5
    assert ((stats.p_true >= 0) & (stats.p_true <= 1)).all()
    assert torch.allclose(stats.p_true.double(), p_y, atol=tolerance)
    assert ((stats.el2n >= -tolerance) & (stats.el2n <= math.sqrt(2) + tolerance)).all()
    assert (stats.loss >= -tolerance).all()
    # correct is the argmax rule; a positive margin means correct, correct means margin >= 0
    assert torch.equal(stats.correct, logits.argmax(1) == targets)
    assert torch.equal(stats.pred.long(), logits.argmax(1))
    assert not (stats.margin > 0)[~stats.correct].any()
    assert (stats.margin[stats.correct] >= 0).all()
    # the margin lies within the spread of the logits: |margin| <= max - min
    spread = logits.max(1).values - logits.min(1).values
    assert (stats.margin.abs() <= spread + tolerance).all()


@given(logits_and_targets())
@SETTINGS
def test_el2n_is_zero_only_for_a_certain_correct_prediction(data):
    logits, targets = data
    stats = classification_stats(logits, targets)
    onehot = torch.nn.functional.one_hot(targets, logits.shape[1]).double()
    reference = torch.linalg.vector_norm(torch.softmax(logits.double(), 1) - onehot, dim=1)
    assert torch.allclose(stats.el2n.double(), reference, atol=1e-5)
    # (1 - p_y) <= EL2N <= sqrt(2) (1 - p_y): the other classes share 1 - p_y, sum p_k^2 <= (1 - p_y)^2
    one_minus = 1 - stats.p_true.double()
    assert (stats.el2n.double() >= one_minus - 1e-5).all()
    assert (stats.el2n.double() <= math.sqrt(2) * one_minus + 1e-5).all()


@st.composite
def sequences(draw):
    batch = draw(st.integers(1, 4))
    length = draw(st.integers(1, 6))
    vocab = draw(st.integers(2, 6))
    logits = draw(arrays(np.float32, (batch, length, vocab), elements=FINITE))
    targets = draw(arrays(np.int64, (batch, length), elements=st.integers(-1, vocab - 1)))
    targets = np.where(targets < 0, -100, targets)  # -1 drawn: an ignored position
    return torch.from_numpy(logits), torch.from_numpy(targets)


@given(sequences(), st.floats(0.0, 1.0, width=32))
@SETTINGS
def test_sequence_means_count_only_the_tokens_not_ignored(data, threshold):
    logits, targets = data
    stats = sequence_stats(logits, targets, correct_threshold=threshold)
    for row in range(len(targets)):
        counted = targets[row] != -100
        assert int(stats.token_count[row]) == int(counted.sum())
        if not counted.any():
            assert math.isnan(float(stats.loss[row])) and not bool(stats.correct[row])
            continue
        tokens = classification_stats(logits[row][counted], targets[row][counted])
        for name in ("loss", "p_true", "el2n", "margin"):
            values = getattr(tokens, name).double()
            mean = float(getattr(stats, name)[row])
            assert mean == pytest.approx(float(values.mean()), abs=1e-4)
            assert float(values.min()) - 1e-4 <= mean <= float(values.max()) + 1e-4  # a mean is bounded
        accuracy = float(tokens.correct.double().mean())
        assert float(stats.token_accuracy[row]) == pytest.approx(accuracy, abs=1e-6)
        assert 0 <= float(stats.p_true[row]) <= 1 and 0 <= float(stats.el2n[row]) <= math.sqrt(2) + 1e-5
        assert bool(stats.correct[row]) == (float(stats.token_accuracy[row]) >= threshold)


@given(arrays(np.float32, st.integers(1, 8), elements=st.floats(0, 1e6, width=32)))
@SETTINGS
def test_loss_stats_passes_any_loss_through_as_float32(loss):
    stats = loss_stats(torch.from_numpy(loss).double())
    assert stats.loss.dtype == torch.float32
    assert torch.equal(stats.loss, torch.from_numpy(loss))
    assert stats.p_true is None and stats.correct is None and stats.margin is None
