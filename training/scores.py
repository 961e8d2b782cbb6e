"""Per-presentation scores: small pure functions of logits and the given labels.

Definitions follow DESIGN.md: p = softmax(logits), y the given label, measured on the
training batch's forward pass before the update.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["correct", "cross_entropy", "el2n", "margin", "p_true"]


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
