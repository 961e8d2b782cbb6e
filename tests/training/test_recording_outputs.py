"""Reading a training step's outputs (training.recording_outputs): which kind they are, the
one-line refusals, and the per-batch statistics of each kind."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.recording_outputs import batch_stats, describe, first_batch_problem, output_kind, validation_sums
from training.reduce import PresentationStats

B = 4


def test_each_kind_is_recognised():
    logits, labels = torch.randn(B, 3), torch.tensor([0, 2, 1, 2])
    assert output_kind({"loss": 1, "logits": logits}, labels, B) == "classification"
    tokens = torch.tensor([[1, 2, -100], [0, -100, -100], [4, 4, 4], [-100, -100, -100]])
    assert output_kind({"logits": torch.randn(B, 3, 5), "loss_mask": tokens > 0}, tokens, B) == "sequence"
    # per_sample_loss is what is recorded when given, whatever else is returned
    assert output_kind({"logits": logits, "per_sample_loss": torch.rand(B)}, labels.float(), B) == "loss"


@pytest.mark.parametrize(
    "outputs, targets, message",
    [
        (torch.tensor(1.0), torch.zeros(B), r"training_step returned float32 \[\]; expected training_step to return"),
        ({"loss": 1, "logits": torch.randn(B, 3)}, torch.rand(B, 3),
         r"targets are float32 \[4, 3\] in \[.*\]: for regression, multi-label or soft-target losses return "
         r"'per_sample_loss' \[4\]"),
        ({"logits": torch.randn(B, 1)}, torch.zeros(B, dtype=torch.long),
         r"classification needs at least 2 classes; for a one-logit loss return 'per_sample_loss' \[4\]"),
        ({"logits": torch.randn(B, 3, 5)}, torch.full((B, 3), 5),
         r"targets are int64 \[4, 3\] in \[5, 5\]; sequence targets must be in \[0, 5\) or -100 \(ignored\)"),
        ({"logits": torch.randn(B, 3, 5), "loss_mask": torch.ones(B, 2)}, torch.zeros(B, 3, dtype=torch.long),
         r"loss_mask is float32 \[4, 2\]; expected \[B, T\] = \[4, 3\]"),
        ({"logits": torch.randn(B, 3)}, torch.zeros(B + 1, dtype=torch.long),
         r"classification targets must have shape \[4\]"),
        ({"logits": torch.randn(B, 3)}, torch.zeros(B, dtype=torch.long).tolist(), r"the batch's targets are list"),
        ({"logits": torch.randn(B, 2, 3, 4)}, torch.zeros(B, dtype=torch.long), r"logits are float32 \[4, 2, 3, 4\]"),
        ({"logits": torch.randn(B, 3)}, torch.zeros(B, dtype=torch.long).bool(),
         r"targets are bool \[4\] in \[0, 0\]: classification targets must be integer"),
        ({"per_sample_loss": torch.rand(B, 1)}, None, r"per_sample_loss is float32 \[4, 1\] for a batch of 4 samples"),
        ({"per_sample_loss": torch.arange(B)}, None, r"per_sample_loss is int64 \[4\]"),
    ],
    ids=["not a dict", "multi-label", "one logit", "tokens out of range", "mask shape", "target shape",
         "targets not a tensor", "4-d logits", "bool targets", "per-sample loss [B, 1]", "integer loss"],
)
def test_what_cannot_be_read_is_refused_in_one_line(outputs, targets, message):
    with pytest.raises(ValueError, match=message) as refused:
        output_kind(outputs, targets, B)
    assert str(refused.value).startswith("DynamicsRecorder: ") and "\n" not in str(refused.value)


def test_later_batches_are_checked_by_shape_only():
    logits = torch.randn(B, 3)
    stats = batch_stats("classification", {"logits": logits}, torch.tensor([0, 1, 2, 0]), B)
    assert torch.allclose(stats.loss, F.cross_entropy(logits, torch.tensor([0, 1, 2, 0]), reduction="none"))
    with pytest.raises(ValueError, match=r"but the first batch was classification; every batch must return"):
        batch_stats("classification", {"logits": torch.randn(B, 2, 3)}, torch.zeros(B, 2, dtype=torch.long), B)
    with pytest.raises(ValueError, match=r"per_sample_loss is float32 \[3\] for a batch of 4 samples; expected \[4\]"):
        batch_stats("loss", {"per_sample_loss": torch.rand(3)}, None, B)
    with pytest.raises(ValueError, match=r"training_step returned NoneType, but the first batch returned a dict"):
        batch_stats("loss", None, None, B)


def test_a_sequence_batch_passes_its_loss_mask_on():
    logits, tokens = torch.randn(2, 3, 5), torch.tensor([[1, 2, 3], [4, 0, -100]])
    mask = torch.tensor([[False, True, True], [True, True, True]])
    stats = batch_stats("sequence", {"logits": logits, "loss_mask": mask}, tokens, 2)
    assert stats.token_count.tolist() == [2, 2]
    token_loss = F.cross_entropy(logits[0, 1:], tokens[0, 1:], reduction="none")
    assert torch.allclose(stats.loss[0], token_loss.mean())


def test_a_first_batch_with_a_loss_that_is_not_finite_is_a_problem():
    assert first_batch_problem(PresentationStats(loss=torch.tensor([0.5, 1.0]))) is None
    problem = first_batch_problem(PresentationStats(loss=torch.tensor([0.5, float("inf"), float("nan")])))
    assert problem.startswith("the per-sample loss is not finite (NaN or inf) for 2 of 3 samples")
    # a sequence without counted tokens has a NaN loss by definition: not a problem
    empty = PresentationStats(loss=torch.tensor([float("nan"), 1.0]), token_count=torch.tensor([0, 3]))
    assert first_batch_problem(empty) is None


def test_describe_names_dtype_and_shape():
    assert describe(torch.zeros(2, 3, dtype=torch.int32)) == "int32 [2, 3]"
    assert describe(None) == "NoneType" and describe([1]) == "list"


def test_validation_sums_of_a_batch():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1]]))
    targets = torch.tensor([0, 2, 0])
    totals, per_class = validation_sums(logits, targets)
    assert totals.dtype == torch.float64 and per_class.dtype == torch.float64
    assert totals[0].item() == pytest.approx(-math.log(0.5) - math.log(0.2) - math.log(0.7), rel=1e-6)
    assert totals[1:].tolist() == [2.0, 3.0]
    assert per_class.tolist() == [[2.0, 0.0, 0.0], [2.0, 0.0, 1.0]]  # correct, count per label


def test_validation_sums_of_sequences_are_per_counted_token():
    """A language model's validation loss is the token-mean cross-entropy and its accuracy the
    token accuracy, over the tokens that count (-100 and the loss mask excluded)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    targets[0, 3:] = -100
    targets[2] = -100  # a sequence with no counted token adds nothing
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 0] = False
    totals, per_class = validation_sums(logits, targets, mask)
    counted = (targets != -100) & mask
    token_loss = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    assert per_class is None
    assert totals[2].item() == counted.sum().item() == 7
    assert totals[0].item() == pytest.approx(token_loss[counted].double().sum().item(), rel=1e-5)
    assert totals[1].item() == pytest.approx((logits.argmax(-1) == targets)[counted].sum().item(), abs=1e-4)

