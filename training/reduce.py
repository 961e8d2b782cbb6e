"""Per-step reduction of a training batch's outputs to per-presentation statistics, on the
batch's device and without host synchronisation.

The recorder calls one of these on every training batch, or on a group of batches'
classification logits at once (``training.recording_chunk``): a handful of kernels turn the
logits (or a per-sample loss) into a few numbers per sample, and only those travel on to
the writer (DESIGN.md, "Reduce on the device, stream in chunks"). Nothing here calls
``.item()``, ``.cpu()`` or ``bool()`` on a tensor, or branches on tensor values: the
results stay on the device until the recorder copies a whole chunk.

Definitions (DESIGN.md, "Definitions"), with p = softmax(logits) and y the given label,
computed in float32 for any logits' dtype (in float64 for float64 logits) and returned
as float32:

- loss = -log p_y (cross-entropy of the given label); p_true = p_y;
- correct = argmax p == y, the argmax taken on the logits (ties go to the first index,
  as ``torch.argmax``);
- EL2N = ||p - onehot(y)||_2 (Paul et al. 2021), from the other classes' probabilities
  (``training.scores.el2n`` says why);
- margin = logit_y - max_{k != y} logit_k; its mean over presentations is AUM
  (Pleiss et al. 2020).

The single-score functions in ``training.scores`` are the readable definitions; the
functions here compute the same values with fewer passes over the logits, and
``tests/training/test_reduce.py`` checks them against plain-PyTorch references.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# What a training step's outputs can be (logits [B, C] with labels, logits [B, T, V] with
# token targets, or a per-sample loss [B]): one home, store.settings.
from store.settings import OUTPUT_KINDS

__all__ = [
    "MAX_CHUNK_ELEMENTS",
    "OUTPUT_KINDS",
    "SEQUENCE_CORRECT_THRESHOLD",
    "PresentationStats",
    "classification_stats",
    "loss_stats",
    "sequence_stats",
]


#: The token accuracy from which a sequence counts as ``correct`` (learned) for forgetting
#: events: ``correct = token_accuracy >= SEQUENCE_CORRECT_THRESHOLD``, over the tokens that
#: count (``sequence_stats``). A forgetting event (Toneva et al. 2019) is then a sequence's
#: token accuracy falling from at least the threshold to below it between two presentations.
#:
#: 0.5, a majority rule, because:
#: - with one counted token it is exactly the classification definition (argmax == target),
#:   as is any threshold in (0, 1], so the forgetting statistics mean the same on both;
#: - it sits between the two extremes, both unusable: near 0 a sequence is "learned" once
#:   any single token is right, and at 1 (exact match) long sequences of natural text are
#:   almost never learned, so nearly all would read "never learned" with no events;
#: - it reads as "more of its tokens right than wrong", the plain sense of a sequence the
#:   model has learned.
#: Pass ``correct_threshold`` to ``sequence_stats`` for another rule (1.0 = exact match).
SEQUENCE_CORRECT_THRESHOLD: float = 0.5

#: The most float32 elements one temporary over the classes may hold; larger batches are
#: reduced in slices along the batch (and, for long sequences, the time) dimension, so the
#: extra device memory stays bounded for large vocabularies.
MAX_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class PresentationStats:
    """Per-presentation statistics of one training batch, each a [B] tensor on the batch's device."""

    loss: Tensor                      # float32
    p_true: Tensor | None = None      # float32
    el2n: Tensor | None = None        # float32
    correct: Tensor | None = None     # bool
    pred: Tensor | None = None        # int32; None for sequences
    margin: Tensor | None = None      # float32
    token_count: Tensor | None = None     # int32, sequences only
    token_accuracy: Tensor | None = None  # float32, sequences only


def classification_stats(logits: Tensor, targets: Tensor, *, overwrite: bool = False) -> PresentationStats:
    """loss, p_true, EL2N, correct, pred and margin of each sample (module docstring) for
    ``logits [B, C]`` (any floating dtype, C >= 2) and integer ``targets [B]`` in [0, C).

    Targets outside [0, C) are not checked here (that needs a host sync): the recorder
    refuses them at the first batch. ``overwrite=True`` lets the reduction use float32
    (or float64) ``logits`` as its scratch memory, leaving them overwritten: the
    recorder's stage of logits, which is not read again, saves a copy of it that way.
    """
    logits = logits.detach()
    _check_logits(logits, targets, 2, "classification_stats", "logits [B, C] and targets [B]")
    loss, p_true, el2n, margin, pred = _over_rows(logits, targets.long(), overwrite)
    return PresentationStats(
        loss=loss, p_true=p_true, el2n=el2n, correct=pred == targets, pred=pred.int(), margin=margin
    )


def sequence_stats(
    logits: Tensor,
    targets: Tensor,
    *,
    loss_mask: Tensor | None = None,
    ignore_index: int = -100,
    correct_threshold: float = SEQUENCE_CORRECT_THRESHOLD,
) -> PresentationStats:
    """One row per sequence for ``logits [B, T, V]`` and integer ``targets [B, T]``.

    The tokens that count are those whose target is not ``ignore_index`` and, when
    ``loss_mask [B, T]`` (bool or 0/1) is given, where it is true. Over them:
    loss = mean token cross-entropy; p_true, EL2N and margin = means of the token values
    (module docstring); token_count = their number; token_accuracy = the fraction whose
    argmax is the target; correct = token_accuracy >= ``correct_threshold``
    (``SEQUENCE_CORRECT_THRESHOLD``, which says why 0.5). ``pred`` is None.

    A sequence with no counted token has token_count 0, NaN loss, p_true, EL2N, margin and
    token_accuracy, and correct False; the writer stores the NaNs as null and nulls
    ``correct`` where token_accuracy is NaN, so such a presentation is neither learned nor
    forgotten.
    """
    logits = logits.detach()
    _check_logits(logits, targets, 3, "sequence_stats", "logits [B, T, V] and targets [B, T]")
    counted = targets != ignore_index
    if loss_mask is not None:
        if tuple(loss_mask.shape) != tuple(targets.shape):
            raise ValueError(
                f"sequence_stats: loss_mask has shape {tuple(loss_mask.shape)}, expected the targets' "
                f"shape {tuple(targets.shape)} (bool or 0/1 per token)"
            )
        counted = counted & loss_mask.detach().bool()
    # Ignored positions read label 0 so that gather stays in range; they are left out below.
    safe_targets = torch.where(counted, targets, 0).long()
    loss, p_true, el2n, margin, pred = _over_rows(logits, safe_targets)
    token_values = torch.stack([loss, p_true, el2n, margin, (pred == safe_targets).float()])  # [5, B, T]
    sums = torch.where(counted, token_values, 0.0).sum(-1)  # [5, B]
    token_count = counted.sum(-1)
    means = sums / token_count  # 0 / 0 = NaN where no token counts
    token_accuracy = means[4]
    return PresentationStats(
        loss=means[0],
        p_true=means[1],
        el2n=means[2],
        correct=token_accuracy >= correct_threshold,  # NaN compares False
        margin=means[3],
        token_count=token_count.int(),
        token_accuracy=token_accuracy,
    )


def loss_stats(per_sample_loss: Tensor) -> PresentationStats:
    """The loss of each sample as given (``[B]``, any loss: regression, multi-label, one-logit
    binary), as float32; the classification-only statistics are None."""
    if per_sample_loss.ndim != 1 or not per_sample_loss.is_floating_point():
        raise ValueError(
            f"loss_stats: got a {per_sample_loss.dtype} tensor of shape {tuple(per_sample_loss.shape)}, "
            "expected a floating per-sample loss of shape [B] (reduction='none')"
        )
    return PresentationStats(loss=per_sample_loss.detach().float())


def _check_logits(logits: Tensor, targets: Tensor, ndim: int, function: str, expected: str) -> None:
    """Raise one clear ValueError unless shapes, dtypes and devices fit (no host sync)."""
    problem = None
    if logits.ndim != ndim or targets.ndim != ndim - 1:
        problem = "shapes"
    elif tuple(logits.shape[:-1]) != tuple(targets.shape):
        problem = "shapes"
    elif logits.shape[-1] < 2:
        problem = "at least 2 classes"
    elif not logits.is_floating_point():
        problem = "floating logits"
    elif targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        problem = "integer targets"
    elif logits.device != targets.device:
        problem = "one device"
    if problem is not None:
        raise ValueError(
            f"{function}: got logits {tuple(logits.shape)} {logits.dtype} on {logits.device} and targets "
            f"{tuple(targets.shape)} {targets.dtype} on {targets.device}; expected {expected}, floating "
            f"logits with at least 2 classes, integer targets, on one device ({problem})"
        )


def _over_rows(
    logits: Tensor, targets: Tensor, overwrite: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``_positions`` over the last dimension, in slices of at most ``MAX_CHUNK_ELEMENTS``
    along the batch dimension (and along time when one sequence alone is larger); one
    slice for most batches. The slicing follows the shapes only, never the values."""
    if logits.numel() <= MAX_CHUNK_ELEMENTS:
        return _positions(logits, targets, overwrite)
    per_sample = logits[0].numel()
    if logits.ndim == 2 or per_sample <= MAX_CHUNK_ELEMENTS:
        size = max(1, MAX_CHUNK_ELEMENTS // per_sample)
        parts = [_positions(x, y, overwrite) for x, y in zip(logits.split(size), targets.split(size))]
        return tuple(torch.cat(values) for values in zip(*parts))  # type: ignore[return-value]
    size = max(1, MAX_CHUNK_ELEMENTS // logits.shape[-1])
    sequences = []
    for sequence_logits, sequence_targets in zip(logits.split(1), targets.split(1)):
        parts = [
            _positions(x, y) for x, y in zip(sequence_logits.split(size, 1), sequence_targets.split(size, 1))
        ]
        sequences.append([torch.cat(values, 1) for values in zip(*parts)])
    return tuple(torch.cat(values) for values in zip(*sequences))  # type: ignore[return-value]


def _positions(logits: Tensor, targets: Tensor, overwrite: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """loss, p_true, EL2N, margin (float32) and pred (int64) at every position of ``logits
    [..., C]`` with ``targets [...]`` (int64, in range); ``overwrite``: ``logits`` may serve
    as the temporary (when already float32 or float64).

    One float32 temporary over the classes serves everything. With m the largest other
    logit, margin = logit_y - m (the definition's own subtraction), q_k = exp(logit_k - m)
    for k != y (so the largest q is 1 and nothing that matters underflows), S = sum q_k,
    N = ||q||_2 and t = log S - margin = log((1 - p_y) / p_y):

        loss = softplus(t),  p_y = sigmoid(-t),
        EL2N = sqrt(N^2 + S^2) / (S + exp(margin)) = sigmoid(t) * sqrt(N^2 + S^2) / S,

    none of which cancels near p_y = 1 or overflows for large margins.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for float64
    owned = overwrite and logits.dtype == dtype
    if logits.device.type == "cpu" and logits.dtype in (torch.bfloat16, torch.float16):
        logits, owned = logits.float(), True  # CPU kernels run several times slower on these
    _, pred = logits.max(-1)  # ties: first index, as torch.argmax
    index = targets.unsqueeze(-1)
    given = logits.gather(-1, index).squeeze(-1).to(dtype)
    others = logits if owned else logits.to(dtype, copy=True)
    others.scatter_(-1, index, float("-inf"))
    largest_other = others.amax(-1)
    margin = given - largest_other
    others.sub_(largest_other.unsqueeze(-1)).exp_()  # q_k, 0 at y
    total = others.sum(-1)
    norm = torch.linalg.vector_norm(others, dim=-1)
    log_odds = total.log() - margin
    loss = torch.nn.functional.softplus(log_odds)
    p_true = torch.sigmoid(-log_odds)
    el2n = torch.sigmoid(log_odds) * torch.hypot(norm, total) / total
    return loss.float(), p_true.float(), el2n.float(), margin.float(), pred
