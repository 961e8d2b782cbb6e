"""Per-presentation scores: small pure functions of logits and the given labels.

Definitions follow DESIGN.md: p = softmax(logits), y the given label, measured on the
training batch's forward pass before the update.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """loss_i = -log p_y (per sample, no reduction). ``[N]``."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def p_true(probs: Tensor, targets: Tensor) -> Tensor:
    """Probability of the given label, p_y. ``[N]``."""
    return probs.gather(1, targets[:, None]).squeeze(1)


def el2n(probs: Tensor, targets: Tensor) -> Tensor:
    """EL2N = ||p - onehot(y)||_2 (Paul et al. 2021, *Deep Learning on a Data Diet*).

    Always in [0, sqrt(2)], and (1 - p_y) <= EL2N <= sqrt(2) (1 - p_y).
    Computed from the other classes' probabilities q = p with p_y set to 0, as
    sqrt(sum q_k^2 + (sum q_k)^2): 1 - p_y = sum q_k has no cancellation, so confident
    samples keep a precise EL2N (sqrt(||p||^2 - 2 p_y + 1) loses it in float32).
    """
    others = probs.scatter(1, targets[:, None], 0.0)
    return ((others * others).sum(1) + others.sum(1).square()).sqrt()


def margin(logits: Tensor, targets: Tensor) -> Tensor:
    """logit_y - max_{k != y} logit_k; its mean over presentations is AUM (Pleiss et al. 2020)."""
    logits = logits.float()
    assigned = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return assigned - others.max(1).values


def correct(logits: Tensor, targets: Tensor) -> Tensor:
    """argmax p == y. ``[N]`` bool."""
    return logits.argmax(1) == targets


def epoch_scores(logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """All per-presentation scores of an epoch at once, in NumPy: loss, p_true, EL2N,
    correct, pred and margin, the same values as the functions above (tested to float32
    rounding) for ``logits [N, C]`` and ``targets [N]``.

    The recorder runs this on its writer thread: NumPy starts no thread pool (torch ops
    there start a second OpenMP team that competes with training) and releases the GIL in
    its loops. It works on one class-major copy ``[C, N]``, so every reduction over classes
    runs across N contiguous lanes; with 10 classes that is 3x faster than row-wise (4,000
    presentations: ~0.2 ms).
    """
    x = np.ascontiguousarray(logits.T, dtype=np.float32)  # [C, N]
    columns = np.arange(x.shape[1])
    rows = np.asarray(targets, dtype=np.intp)
    assigned = x[rows, columns]
    top = x.max(axis=0)
    exp = np.exp(x - top)
    total = exp.sum(axis=0)  # softmax denominator / exp(top), in [1, C]
    given = exp[rows, columns]
    exp[rows, columns] = 0.0  # the other classes' unnormalised probabilities
    # EL2N from the other classes, as ``el2n`` explains (no cancellation near p_y = 1).
    el2n = np.sqrt(np.einsum("cn,cn->n", exp, exp) + np.square(exp.sum(axis=0))) / total
    pred = np.asarray(logits).argmax(axis=1)  # row-wise: ties go to the first class, as torch's
    x[rows, columns] = -np.inf
    return {
        "loss": np.log(total) - (assigned - top),
        "p_true": given / total,
        "el2n": el2n,
        "correct": pred == rows,
        "pred": pred.astype(np.int32),
        "margin": assigned - x.max(axis=0),
    }
