"""The per-step reduction (training.reduce) against plain-PyTorch references written here:
classification rows, one row per sequence with ignore_index and loss masks, per-sample
losses, the documented bounds, reduced-precision logits, slicing of large batches, and
no host synchronisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.nn import functional as F

from training import reduce

SQRT2 = math.sqrt(2.0)
#: Profiler events that mean a host synchronisation (a tensor read into Python, or an op
#: whose output size depends on the values).
SYNC_EVENTS = {
    "aten::_local_scalar_dense",
    "aten::item",
    "aten::is_nonzero",
    "aten::nonzero",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique2",
}


def reference_rows(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """DESIGN.md's definitions, written the obvious way in float64 (with one-hot vectors and an
    explicit loop for the margin)."""
    x = logits.double()
    probs = torch.softmax(x, 1)
    onehot = F.one_hot(targets.long(), x.shape[1]).double()
    margin = torch.tensor([
        (row[y] - torch.cat([row[:y], row[y + 1 :]]).max()).item() for row, y in zip(x, targets.tolist())
    ], dtype=torch.float64)
    return {
        "loss": F.cross_entropy(x, targets.long(), reduction="none"),
        "p_true": (probs * onehot).sum(1),
        "el2n": (probs - onehot).norm(dim=1),
        "pred": x.argmax(1),
        "margin": margin,
    }


def float32_atol(logits: torch.Tensor) -> float:
    """Absolute rounding of float32 differences of logits of this size (a few ulps)."""
    return 2e-6 * max(1.0, float(logits.abs().max())) if logits.numel() else 2e-6


def assert_rows_match(stats: reduce.PresentationStats, logits: torch.Tensor, targets: torch.Tensor) -> None:
    expected = reference_rows(logits, targets)
    for name in ("loss", "p_true", "el2n", "margin"):
        value = getattr(stats, name)
        assert value.dtype == torch.float32, name
        np.testing.assert_allclose(
            value.numpy(), expected[name].numpy(), rtol=2e-5, atol=float32_atol(logits), err_msg=name
        )
    assert stats.pred.dtype == torch.int32
    assert stats.pred.tolist() == expected["pred"].tolist()
    assert stats.correct.dtype == torch.bool
    assert stats.correct.tolist() == (expected["pred"] == targets).tolist()
    assert stats.token_count is None and stats.token_accuracy is None


# --- classification ---------------------------------------------------------------------


def test_hand_computed_two_class_case():
    # logits (0, log 3): p = (1/4, 3/4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    stats = reduce.classification_stats(logits, torch.tensor([1, 0]))
    assert np.allclose(stats.p_true, [0.75, 0.25])
    assert np.allclose(stats.loss, [-math.log(0.75), -math.log(0.25)])
    # ||(1/4, 3/4) - (0, 1)|| = sqrt(2)/4; ||(1/4, 3/4) - (1, 0)|| = 3 sqrt(2)/4
    assert np.allclose(stats.el2n, [SQRT2 / 4, 3 * SQRT2 / 4])
    assert stats.correct.tolist() == [True, False]
    assert stats.pred.tolist() == [1, 1]
    assert np.allclose(stats.margin, [math.log(3.0), -math.log(3.0)])


def test_classification_matches_the_reference_on_a_real_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator) * 4
    targets = torch.randint(0, 10, (64,), generator=generator)
    assert_rows_match(reduce.classification_stats(logits, targets), logits, targets)


def test_margin_takes_the_largest_other_logit_exactly():
    logits = torch.tensor([[2.0, 5.0, 3.0, -1.0], [2.0, 5.0, 3.0, -1.0], [0.1, 0.3, 0.2, 0.0]])
    stats = reduce.classification_stats(logits, torch.tensor([2, 1, 1]))
    # float32 subtractions of the logits themselves, bit for bit
    assert stats.margin.tolist() == [-2.0, 2.0, (torch.tensor(0.3) - torch.tensor(0.2)).item()]


def test_ties_go_to_the_first_index_as_torch_argmax():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    targets = torch.tensor([1, 2, 3])
    stats = reduce.classification_stats(logits, targets)
    assert stats.pred.tolist() == logits.argmax(1).tolist() == [1, 1, 0]
    assert stats.correct.tolist() == [True, False, False]
    assert stats.margin.tolist() == [0.0, 0.0, 0.0]


def test_el2n_stays_precise_for_confident_samples():
    # p_y = 1 - 2e^-50 / (1 + 2e^-50): 1 - p_y rounds away in float32, yet
    # EL2N = sqrt(6) e^-50 / (1 + 2e^-50) is computed from the other classes without cancellation.
    logits = torch.tensor([[50.0, 0.0, 0.0], [50.0, 0.0, 0.0], [0.0, 20.0, 20.0]])
    stats = reduce.classification_stats(logits, torch.tensor([0, 1, 0]))
    tiny = math.exp(-50.0)
    assert stats.el2n[0].item() == pytest.approx(math.sqrt(6) * tiny / (1 + 2 * tiny), rel=1e-5)
    assert stats.el2n[1].item() == pytest.approx(SQRT2, rel=1e-6)
    assert stats.p_true[0].item() == 1.0 and stats.loss[0].item() >= 0.0
    assert_rows_match(stats, logits, torch.tensor([0, 1, 0]))
    # ten classes, logit 60 on the given one: each other p_k ~ e^-60, whose square underflows
    # float32, yet EL2N = sqrt(9 + 81) e^-60 / (1 + 9 e^-60) keeps float32 precision
    logits = torch.zeros(1, 10)
    logits[0, 3] = 60.0
    stats = reduce.classification_stats(logits, torch.tensor([3]))
    tiny = math.exp(-60.0)
    assert stats.el2n.item() == pytest.approx(math.sqrt(90.0) * tiny / (1 + 9 * tiny), rel=1e-5)
    assert stats.loss.item() == pytest.approx(9 * tiny, rel=1e-5)  # -log(1 - 9e^-60 + ...), not 0


def test_huge_margins_neither_overflow_nor_lose_the_loss():
    logits = torch.tensor([[200.0, 0.0, 0.0], [200.0, 0.0, 0.0]])
    stats = reduce.classification_stats(logits, torch.tensor([0, 1]))
    assert stats.margin.tolist() == [200.0, -200.0]
    assert stats.loss.tolist() == [0.0, 200.0]  # e^-200 is below float32's range
    assert stats.p_true.tolist() == [1.0, 0.0]
    assert stats.el2n[0].item() == 0.0 and stats.el2n[1].item() == pytest.approx(SQRT2, rel=1e-6)
    assert_rows_match(stats, logits, torch.tensor([0, 1]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_are_reduced_in_float32(dtype):
    generator = torch.Generator().manual_seed(1)
    logits = (torch.randn(32, 7, generator=generator) * 5).to(dtype)
    targets = torch.randint(0, 7, (32,), generator=generator)
    stats = reduce.classification_stats(logits, targets)
    # bf16/fp16 values are exact in float32: the reference sees the same numbers
    assert_rows_match(stats, logits.float(), targets)


def test_integer_targets_of_any_width_and_graph_free_results():
    logits = torch.randn(8, 5, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2], dtype=torch.int32)
    stats = reduce.classification_stats(logits, targets)
    assert all(not value.requires_grad for value in (stats.loss, stats.p_true, stats.el2n, stats.margin))
    assert_rows_match(stats, logits.detach(), targets.long())


def test_an_empty_batch_gives_empty_rows():
    stats = reduce.classification_stats(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert stats.loss.shape == stats.pred.shape == stats.correct.shape == (0,)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, (8, 5), elements=st.floats(-40, 40, width=32)),
    arrays(np.int64, (8,), elements=st.integers(0, 4)),
)
def test_classification_bounds_and_reference(logits, targets):
    logits, targets = torch.from_numpy(logits), torch.from_numpy(targets)
    stats = reduce.classification_stats(logits, targets)
    assert_rows_match(stats, logits, targets)
    assert (stats.loss >= 0).all()
    assert ((stats.p_true >= 0) & (stats.p_true <= 1)).all()
    assert ((stats.el2n >= 0) & (stats.el2n <= SQRT2 + 1e-6)).all()
    # (1 - p_y) <= EL2N <= sqrt(2) (1 - p_y), to float32 rounding of p_y
    assert (stats.el2n >= (1 - stats.p_true) - 1e-6).all()
    assert (stats.el2n <= SQRT2 * (1 - stats.p_true) + 1e-6).all()
    assert stats.correct.tolist() == (stats.pred == targets).tolist()
    # a positive margin means the given label is the unique argmax; a negative one that it is not
    assert stats.correct[stats.margin > 0].all()
    assert not stats.correct[stats.margin < 0].any()


@pytest.mark.parametrize(
    ("logits", "targets", "message"),
    [
        (torch.zeros(4, 3, 2), torch.zeros(4, dtype=torch.long), "got logits (4, 3, 2)"),
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), "targets (5,)"),
        (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), "at least 2 classes"),
        (torch.zeros(4, 3), torch.zeros(4), "integer targets"),
        (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), "floating logits"),
    ],
)
def test_classification_refuses_what_it_cannot_read(logits, targets, message):
    with pytest.raises(ValueError, match=r"classification_stats: .*expected logits \[B, C\]") as error:
        reduce.classification_stats(logits, targets)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# --- sequences --------------------------------------------------------------------------


def reference_sequences(logits, targets, loss_mask=None, ignore_index=-100, threshold=0.5):
    """One row per sequence from an explicit loop over its tokens (each token scored alone)."""
    rows = {name: [] for name in ("loss", "p_true", "el2n", "margin", "token_count", "token_accuracy", "correct")}
    for b in range(targets.shape[0]):
        token = {name: [] for name in ("loss", "p_true", "el2n", "margin", "hit")}
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y == ignore_index or (loss_mask is not None and not bool(loss_mask[b, t])):
                continue
            one = reference_rows(logits[b, t][None], torch.tensor([y]))
            for name in ("loss", "p_true", "el2n", "margin"):
                token[name].append(float(one[name][0]))
            token["hit"].append(int(logits[b, t].double().argmax()) == y)
        count = len(token["hit"])
        for name in ("loss", "p_true", "el2n", "margin"):
            rows[name].append(float(np.mean(token[name])) if count else math.nan)
        accuracy = sum(token["hit"]) / count if count else math.nan
        rows["token_count"].append(count)
        rows["token_accuracy"].append(accuracy)
        rows["correct"].append(bool(count) and accuracy >= threshold)
    return rows


def assert_sequences_match(stats, expected, atol=2e-6):
    for name in ("loss", "p_true", "el2n", "margin", "token_accuracy"):
        value = getattr(stats, name)
        assert value.dtype == torch.float32, name
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=2e-5, atol=atol, err_msg=name)
    assert stats.token_count.dtype == torch.int32
    assert stats.token_count.tolist() == expected["token_count"]
    assert stats.correct.dtype == torch.bool
    assert stats.correct.tolist() == expected["correct"]
    assert stats.pred is None


def sequence_batch(seed=0, batch=4, time=9, vocab=6):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, time, vocab, generator=generator) * 3
    targets = torch.randint(0, vocab, (batch, time), generator=generator)
    # make some tokens right so token accuracies are spread out
    right = torch.rand(batch, time, generator=generator) < 0.5
    targets = torch.where(right, logits.argmax(-1), targets)
    return logits, targets, generator


def test_sequences_with_ignore_index_match_the_token_loop():
    logits, targets, _ = sequence_batch()
    targets[0, :3] = -100
    targets[2, 5:] = -100
    stats = reduce.sequence_stats(logits, targets)
    assert_sequences_match(stats, reference_sequences(logits, targets))
    # the mean token loss is the mean of F.cross_entropy over the counted tokens
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    assert stats.loss[0].item() == pytest.approx(per_token[0, 3:].mean().item(), rel=1e-5)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32, torch.int64])
def test_a_loss_mask_excludes_tokens(mask_dtype):
    logits, targets, generator = sequence_batch(seed=1, batch=5, time=11)
    targets[1, ::2] = -100
    loss_mask = torch.rand(5, 11, generator=generator) < 0.7
    loss_mask[3] = False  # a sequence that the mask removes entirely
    stats = reduce.sequence_stats(logits, targets, loss_mask=loss_mask.to(mask_dtype))
    assert_sequences_match(stats, reference_sequences(logits, targets, loss_mask))


def test_a_sequence_with_no_counted_token_is_nan_and_not_correct():
    logits, targets, _ = sequence_batch(seed=2, batch=3, time=5)
    targets[1] = -100
    stats = reduce.sequence_stats(logits, targets)
    assert stats.token_count.tolist()[1] == 0
    for name in ("loss", "p_true", "el2n", "margin", "token_accuracy"):
        assert math.isnan(getattr(stats, name)[1].item()), name
        assert not torch.isnan(getattr(stats, name)[[0, 2]]).any(), name
    assert stats.correct[1].item() is False
    assert_sequences_match(stats, reference_sequences(logits, targets))


def test_correct_is_token_accuracy_at_least_the_threshold():
    # 4 counted tokens per sequence, of which 0..4 are predicted right (argmax = target)
    logits = torch.zeros(5, 4, 3)
    logits[..., 0] = 1.0
    targets = torch.ones(5, 4, dtype=torch.long)
    for row in range(5):
        targets[row, :row] = 0
    stats = reduce.sequence_stats(logits, targets)
    assert stats.token_accuracy.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert reduce.SEQUENCE_CORRECT_THRESHOLD == 0.5
    assert stats.correct.tolist() == [False, False, True, True, True]
    strict = reduce.sequence_stats(logits, targets, correct_threshold=1.0)
    assert strict.correct.tolist() == [False, False, False, False, True]


def test_one_counted_token_reads_like_classification():
    logits, targets, _ = sequence_batch(seed=3, batch=6, time=4, vocab=5)
    targets[:, 1:] = -100
    stats = reduce.sequence_stats(logits, targets)
    single = reduce.classification_stats(logits[:, 0], targets[:, 0])
    for name in ("loss", "p_true", "el2n", "margin", "correct"):
        assert getattr(stats, name).tolist() == getattr(single, name).tolist(), name


def test_another_ignore_index_and_bf16_logits():
    logits, targets, _ = sequence_batch(seed=4)
    targets[:, -2:] = 0
    stats = reduce.sequence_stats(logits.bfloat16(), targets, ignore_index=0)
    assert_sequences_match(stats, reference_sequences(logits.bfloat16().float(), targets, ignore_index=0))


def test_a_shifted_non_contiguous_view_is_read_as_is():
    logits, targets, _ = sequence_batch(seed=5, time=10)
    shifted_logits, shifted_targets = logits[:, :-1], targets[:, 1:]
    assert not shifted_logits.is_contiguous()
    stats = reduce.sequence_stats(shifted_logits, shifted_targets)
    assert_sequences_match(stats, reference_sequences(shifted_logits, shifted_targets))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, (3, 6, 4), elements=st.floats(-30, 30, width=32)),
    arrays(np.int64, (3, 6), elements=st.integers(-1, 3)),
)
def test_sequence_bounds_and_reference(logits, targets):
    logits, targets = torch.from_numpy(logits), torch.from_numpy(targets)
    stats = reduce.sequence_stats(logits, targets, ignore_index=-1)
    assert_sequences_match(stats, reference_sequences(logits, targets, ignore_index=-1), float32_atol(logits))
    counted = stats.token_count > 0
    assert (stats.loss[counted] >= 0).all()
    assert ((stats.el2n[counted] >= 0) & (stats.el2n[counted] <= SQRT2 + 1e-6)).all()
    assert ((stats.token_accuracy[counted] >= 0) & (stats.token_accuracy[counted] <= 1)).all()
    assert stats.correct.tolist() == (stats.token_accuracy >= 0.5).tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logits": torch.zeros(2, 3), "targets": torch.zeros(2, dtype=torch.long)}, "got logits (2, 3)"),
        ({"logits": torch.zeros(2, 3, 4), "targets": torch.zeros(2, 4, dtype=torch.long)}, "targets (2, 4)"),
        (
            {"logits": torch.zeros(2, 3, 4), "targets": torch.zeros(2, 3, dtype=torch.long),
             "loss_mask": torch.ones(2, 4, dtype=torch.bool)},
            "loss_mask has shape (2, 4)",
        ),
    ],
)
def test_sequences_refuse_what_they_cannot_read(kwargs, message):
    with pytest.raises(ValueError, match="sequence_stats: ") as error:
        reduce.sequence_stats(**kwargs)
    assert message in str(error.value)


# --- any loss ---------------------------------------------------------------------------


def test_loss_stats_keep_the_loss_and_nothing_else():
    per_sample = torch.tensor([0.5, 2.0, 0.0], dtype=torch.bfloat16, requires_grad=True)
    stats = reduce.loss_stats(per_sample)
    assert stats.loss.dtype == torch.float32 and not stats.loss.requires_grad
    assert stats.loss.tolist() == [0.5, 2.0, 0.0]
    assert all(
        getattr(stats, name) is None
        for name in ("p_true", "el2n", "correct", "pred", "margin", "token_count", "token_accuracy")
    )


@pytest.mark.parametrize("bad", [torch.zeros(4, 1), torch.zeros(()), torch.zeros(4, dtype=torch.long)])
def test_loss_stats_refuse_anything_but_a_floating_vector(bad):
    with pytest.raises(ValueError, match=r"loss_stats: got .* expected a floating per-sample loss of shape \[B\]"):
        reduce.loss_stats(bad)


# --- slicing, devices, synchronisation ---------------------------------------------------


@pytest.mark.parametrize("budget", [1, 12, 40, 100])
def test_slicing_large_batches_changes_no_value(monkeypatch, budget):
    logits, targets, generator = sequence_batch(seed=6, batch=5, time=7, vocab=6)
    targets[2, :4] = -100
    loss_mask = torch.rand(5, 7, generator=generator) < 0.8
    whole_sequences = reduce.sequence_stats(logits, targets, loss_mask=loss_mask)
    whole_rows = reduce.classification_stats(logits[:, 0], targets[:, 0].clamp(min=0))
    # 1, 12 and 40 slice one sequence along time (42 elements each), 100 two sequences at a time
    monkeypatch.setattr(reduce, "MAX_CHUNK_ELEMENTS", budget)
    sliced_sequences = reduce.sequence_stats(logits, targets, loss_mask=loss_mask)
    sliced_rows = reduce.classification_stats(logits[:, 0], targets[:, 0].clamp(min=0))
    for name in ("loss", "p_true", "el2n", "margin", "correct", "token_count", "token_accuracy"):
        torch.testing.assert_close(getattr(sliced_sequences, name), getattr(whole_sequences, name), equal_nan=True)
    for name in ("loss", "p_true", "el2n", "margin", "correct", "pred"):
        torch.testing.assert_close(getattr(sliced_rows, name), getattr(whole_rows, name))


def all_calls(device="cpu"):
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(16, 10, generator=generator).to(device).requires_grad_()
    targets = torch.randint(0, 10, (16,), generator=generator).to(device)
    sequence_logits = torch.randn(4, 12, 9, generator=generator).to(device)
    sequence_targets = torch.randint(0, 9, (4, 12), generator=generator).to(device)
    sequence_targets[:, :3] = -100
    loss_mask = (torch.rand(4, 12, generator=generator) < 0.8).to(device)
    return [
        lambda: reduce.classification_stats(logits, targets),
        lambda: reduce.classification_stats(logits.bfloat16(), targets.int()),
        lambda: reduce.sequence_stats(sequence_logits, sequence_targets),
        lambda: reduce.sequence_stats(sequence_logits, sequence_targets, loss_mask=loss_mask.float()),
        lambda: reduce.loss_stats(logits.sum(1)),
    ]


def test_no_function_synchronises_with_the_host(monkeypatch):
    monkeypatch.setattr(reduce, "MAX_CHUNK_ELEMENTS", 50)  # the sliced path too
    for call in all_calls():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            call()
        names = {event.name for event in profile.events()}
        assert names  # the profiler saw the ops
        assert not names & SYNC_EVENTS, names & SYNC_EVENTS


def test_the_sync_detector_sees_a_host_read():
    # the event names above are the ones a host read produces on this torch version
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        torch.ones(3).sum().item()
        bool(torch.ones(1) > 0)
        torch.ones(3).nonzero()
    assert {event.name for event in profile.events()} & SYNC_EVENTS >= {"aten::_local_scalar_dense", "aten::nonzero"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_sync_and_results_on_the_gpu():
    calls = all_calls("cuda")
    torch.cuda.set_sync_debug_mode("error")  # raises on any synchronising CUDA call
    try:
        results = [call() for call in calls]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for stats in results:
        assert stats.loss.device.type == "cuda"
    cpu = [call() for call in all_calls("cpu")]
    for on_gpu, on_cpu in zip(results, cpu):
        for name in ("loss", "p_true", "el2n", "margin", "token_accuracy"):
            if getattr(on_cpu, name) is not None:
                torch.testing.assert_close(
                    getattr(on_gpu, name).cpu(), getattr(on_cpu, name), rtol=1e-4, atol=1e-5, equal_nan=True
                )
