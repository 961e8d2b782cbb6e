"""The single-score definitions (training.scores) against hand-computed values, their
documented bounds, and the fused per-step reduction (training.reduce) that the recorder uses."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training import reduce, scores


def test_hand_computed_two_class_case():
    # logits (0, log 3): p = (1/4, 3/4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    targets = torch.tensor([1, 0])
    probs = torch.softmax(logits, 1)
    assert np.allclose(scores.p_true(probs, targets), [0.75, 0.25])
    assert np.allclose(scores.cross_entropy(logits, targets), [-math.log(0.75), -math.log(0.25)])
    # ||(1/4, 3/4) - (0, 1)|| = sqrt(1/16 + 1/16); ||(1/4, 3/4) - (1, 0)|| = sqrt(9/16 + 9/16)
    assert np.allclose(scores.el2n(probs, targets), [math.sqrt(2) / 4, 3 * math.sqrt(2) / 4])
    assert scores.correct(logits, targets).tolist() == [True, False]
    assert np.allclose(scores.margin(logits, targets), [math.log(3.0), -math.log(3.0)])


def test_margin_takes_the_largest_other_logit():
    logits = torch.tensor([[2.0, 5.0, 3.0, -1.0]])
    assert scores.margin(logits, torch.tensor([2])).item() == -2.0
    assert scores.margin(logits, torch.tensor([1])).item() == 2.0


def test_el2n_of_confident_correct_and_wrong_predictions():
    logits = torch.tensor([[50.0, 0.0, 0.0], [50.0, 0.0, 0.0]])
    values = scores.el2n(torch.softmax(logits, 1), torch.tensor([0, 1]))
    assert values[0].item() < 1e-6
    assert abs(values[1].item() - math.sqrt(2)) < 1e-6


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, (8, 5), elements=st.floats(-30, 30, width=32)),
    arrays(np.int64, (8,), elements=st.integers(0, 4)),
)
def test_el2n_range_and_bounds_from_p_true(logits, targets):
    logits, targets = torch.from_numpy(logits), torch.from_numpy(targets)
    probs = torch.softmax(logits.double(), 1)
    el2n = scores.el2n(probs, targets)
    p_y = scores.p_true(probs, targets)
    assert (el2n >= 0).all() and (el2n <= math.sqrt(2) + 1e-9).all()
    assert (el2n >= (1 - p_y) - 1e-9).all()
    assert (el2n <= math.sqrt(2) * (1 - p_y) + 1e-9).all()
    onehot = torch.nn.functional.one_hot(targets, 5).double()
    assert torch.allclose(el2n, (probs - onehot).norm(dim=1), atol=1e-7)


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.float32, (12, 7), elements=st.floats(-40, 40, width=32)),
    arrays(np.int64, (12,), elements=st.integers(0, 6)),
)
def test_the_per_step_reduction_matches_the_single_score_functions(logits, targets):
    # classification_stats computes all scores from one temporary; each must equal the
    # single-score definition (float32 rounding), ties and extreme logits included.
    logits, targets = torch.from_numpy(logits), torch.from_numpy(targets)
    stats = reduce.classification_stats(logits, targets)
    probs = torch.softmax(logits, 1)
    expected = {
        "loss": scores.cross_entropy(logits, targets),
        "p_true": scores.p_true(probs, targets),
        "el2n": scores.el2n(probs, targets),
        "margin": scores.margin(logits, targets),
    }
    atol = 2e-6 * max(1.0, float(logits.abs().max()))
    for name, reference in expected.items():
        np.testing.assert_allclose(getattr(stats, name).numpy(), reference.numpy(), rtol=1e-5, atol=atol, err_msg=name)
    assert stats.margin.tolist() == expected["margin"].tolist()  # the same float32 subtraction
    assert stats.correct.tolist() == scores.correct(logits, targets).tolist()
    assert stats.pred.tolist() == logits.argmax(1).tolist()
