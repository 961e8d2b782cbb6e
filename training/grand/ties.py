"""Weights shared by several layers (tied weights): the exact per-sample norm of their sum.

When one weight W is used by several layers (GPT-2's token embedding and output layer,
Press & Wolf 2017), sample i's gradient is the sum of the layers' contributions,
∇W_i = Σ_l G_{l,i}, so ||∇W_i||² = Σ_l Σ_m ⟨G_{l,i}, G_{m,i}⟩: the cross terms count, and
the norm is not the sum of the layers' norms. Every contribution is a sum of outer products
G = Σ_t u_t v_tᵀ over the sample's positions t:

* ``nn.Linear`` (W: [out, in]): u_t = output gradient g_t, v_t = input a_t;
* ``nn.Embedding`` (W: [vocabulary, dim]): u_t = one-hot of token idx_t (positions at
  ``padding_idx`` get no gradient), v_t = output gradient g_t.

Then ⟨G, G'⟩ = Σ_{t,s} (u_t·u'_s)(v_t·v'_s), from two Gram matrices (u_t·u'_s of one-hots is
a comparison of indices, of a one-hot and a dense vector a gather), or from the
materialised sums when they are smaller than the Gram matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from training.grand.rules import compute_dtype, embedding_rows, per_sample_sqnorm


@dataclass(frozen=True)
class OuterSum:
    """One layer's per-sample gradient of a shared weight, Σ_t u_t v_tᵀ per sample.

    ``rows``: u as dense vectors [N, T, R], or as row indices [N, T] (one-hots);
    ``cols``: v [N, T, C].
    """

    rows: Tensor
    cols: Tensor

    @property
    def one_hot(self) -> bool:
        return self.rows.dim() == 2


def linear_weight_sum(module: nn.Linear, x: Tensor, g: Tensor) -> OuterSum:
    n = g.shape[0]
    dtype = compute_dtype(g)
    return OuterSum(g.to(dtype).reshape(n, -1, g.shape[-1]), x.to(dtype).reshape(n, -1, x.shape[-1]))


def embedding_weight_sum(module: nn.Embedding, x: Tensor, g: Tensor) -> OuterSum:
    return OuterSum(*embedding_rows(module, x, g))


#: Layer type -> its contribution to a shared ``weight``.
WEIGHT_SUMS: dict[type[nn.Module], Callable[[nn.Module, Tensor, Tensor], OuterSum]] = {
    nn.Linear: linear_weight_sum,
    nn.Embedding: embedding_weight_sum,
}


def weight_sum_for(module: nn.Module) -> Callable[[nn.Module, Tensor, Tensor], OuterSum] | None:
    """How ``module``'s contribution to its shared ``weight`` is formed, or None."""
    for cls in type(module).__mro__:
        if cls in WEIGHT_SUMS:
            return WEIGHT_SUMS[cls]
    return None


def untied_sqnorm(module: nn.Module, x: Tensor, g: Tensor) -> Tensor | None:
    """Per-sample squared norm of a tied layer's other parameters (a Linear's bias), or None."""
    bias = getattr(module, "bias", None)
    if not isinstance(module, nn.Linear) or bias is None or not bias.requires_grad:
        return None
    n = g.shape[0]
    return per_sample_sqnorm(g.to(compute_dtype(g)).reshape(n, -1, g.shape[-1]).sum(1))


def _row_gram(a: OuterSum, b: OuterSum) -> Tensor:
    """u_t·u'_s per sample, [N, T_a, T_b]."""
    if a.one_hot and b.one_hot:
        return (a.rows.unsqueeze(2) == b.rows.unsqueeze(1)).to(b.cols.dtype)
    if a.one_hot:
        return _row_gram(b, a).transpose(1, 2)
    if b.one_hot:  # u_t[idx_s]
        n, t_a, _ = a.rows.shape
        return a.rows.gather(2, b.rows.unsqueeze(1).expand(n, t_a, b.rows.shape[1]))
    return torch.bmm(a.rows, b.rows.transpose(1, 2))


def inner(a: OuterSum, b: OuterSum) -> Tensor:
    """⟨Σ_t u_t v_tᵀ, Σ_s u'_s v'_sᵀ⟩ per sample -> [N]."""
    n, t_a = a.cols.shape[:2]
    t_b = b.cols.shape[1]
    dense = not a.one_hot and not b.one_hot
    r, c = a.cols.shape[2], (a.rows.shape[2] if dense else 0)
    if dense and (t_a + t_b) * r * c < t_a * t_b * (r + c):  # the sums are smaller than the Grams
        left = torch.bmm(a.rows.transpose(1, 2), a.cols)
        right = torch.bmm(b.rows.transpose(1, 2), b.cols)
        return torch.linalg.vecdot(left.reshape(n, -1), right.reshape(n, -1))
    cols = torch.bmm(a.cols, b.cols.transpose(1, 2))
    return torch.linalg.vecdot(_row_gram(a, b).reshape(n, -1), cols.reshape(n, -1))


def tied_sqnorm(sums: list[OuterSum]) -> Tensor:
    """||Σ_l G_l||² per sample: every layer's own term and twice every cross term."""
    total = None
    for index, a in enumerate(sums):
        own = inner(a, a)
        total = own if total is None else total + own
        for b in sums[index + 1:]:
            total = total + 2 * inner(a, b)
    return total.clamp_min_(0)
