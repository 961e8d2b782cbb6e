"""Each sample's loss scale c_i, read off the logits' gradient, and the check that the loss
is per-sample-weighted cross-entropy.

For a training loss Σ_i c_i·CE_i of the final ``nn.Linear``'s output z, the output
gradient is g_i = c_i·(softmax(z_i) − onehot(y_i)). Dividing a ghost norm by |c_i| gives
the gradient norm of CE_i itself. c_i is fitted (``weighted_mean``: any per-sample
weights, also computed inside ``training_step``) or known (``mean``: 1/N, ``sum``: 1),
and the check ``ok_i`` says whether g_i really has that form (it fails for label
smoothing, another loss, or logits transformed after the final Linear).

Sequences (logits [N, T, V], targets [N, T], ``IGNORE_INDEX`` not counted): each sample's
loss is its mean token cross-entropy over its n_i counted tokens, and a training loss that
weights tokens by s_i per sequence (the mean over all tokens: s_i = 1/Σn; per-sequence
means, weighted: s_i = w_i/(N·n_i)) has g_{i,t} = s_i·(softmax(z_{i,t}) − onehot(y_{i,t}))
on counted tokens and 0 on the others. s_i is always fitted and checked over the whole
sequence, and c_i = s_i·n_i.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from training.grand.rules import NeedFallback, compute_dtype
from training.recording_outputs import IGNORE_INDEX

LOSS_REDUCTIONS = ("weighted_mean", "mean", "sum")


def loss_form_message(loss_reduction: str) -> str:
    """Why a step failed the check, for the log."""
    return (
        f"the loss is not {loss_reduction} cross-entropy of the final Linear's output "
        "(label smoothing, another loss, or transformed logits?)"
    )


def loss_scale(
    z: Tensor | None, g: Tensor | None, y: Tensor, loss_reduction: str,
    n_per_step: Tensor | None = None, numpy_on_cpu: bool = True,
) -> tuple[Tensor, Tensor]:
    """(c, ok) with dLoss/dlogits_i = c_i·(softmax_i − onehot(y_i)).

    The final Linear's output z and output gradient g are read; for ``weighted_mean``
    c_i is fitted on the off-label entries (c·p_j, free of the cancellation in
    p_y − 1); ``ok_i`` requires ||g_i − c_i·r_i|| ≤ tol·||g_i|| + 10·tol·|c_i| (tol 1e-4
    in float32, 1e-9 in float64). ``n_per_step`` gives each row's batch size for
    ``mean`` when rows of several steps are checked together. ``numpy_on_cpu``: do this
    small arithmetic in NumPy when everything is on the CPU (same result, fewer
    microseconds per op than torch). Raises ``NeedFallback`` when z is not the logits.
    """
    n = y.shape[0]
    if z is not None and g is not None and z.dim() == 3 and y.dim() == 2:
        return sequence_loss_scale(z, g, y)
    if z is None or g is None or z.dim() != 2 or z.shape[0] != n or int(y.max()) >= z.shape[1]:
        raise NeedFallback("the final Linear's output is not the [N, classes] logits")
    dtype = compute_dtype(g)
    z = z.to(dtype)  # half / bfloat16 models: checked in float32
    g = g.to(dtype)
    if numpy_on_cpu and g.device.type == "cpu" and y.device.type == "cpu":
        return _loss_scale_numpy(z, g, y, loss_reduction, n_per_step)
    yy = y.reshape(n, 1).long()
    p = torch.softmax(z, dim=1)
    off = p.scatter(1, yy, 0.0)
    if loss_reduction == "weighted_mean":
        # No off-label mass (p_y == 1 exactly): the gradient is 0 and any c != 0 will do.
        c = torch.nan_to_num(torch.linalg.vecdot(g, off).div_(torch.linalg.vecdot(off, off)), nan=1.0)
    elif loss_reduction == "mean":
        c = (1.0 / n_per_step.to(dtype)) if n_per_step is not None else torch.full((n,), 1.0 / n, dtype=dtype, device=g.device)
    else:
        c = torch.ones(n, dtype=dtype, device=g.device)
    c1 = c.unsqueeze(1)
    # g − c·(p − e_y) = (g − c·off) + c·(1 − p_y)·e_y
    residual = torch.addcmul(g, c1, off, value=-1.0)
    residual.scatter_add_(1, yy, c1 * (1.0 - p.gather(1, yy)))
    tol2 = 1e-8 if dtype == torch.float32 else 1e-18
    limit = torch.addcmul(torch.linalg.vecdot(g, g).mul_(2 * tol2), c, c, value=200 * tol2)
    return c, torch.linalg.vecdot(residual, residual).le_(limit)


def sequence_loss_scale(z: Tensor, g: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(c, ok) for sequence logits z [N, T, V] and targets y [N, T] (module docstring):
    s_i fitted on the off-label entries of the counted tokens, ``ok_i`` requires
    ||g_i − s_i·r_i||² ≤ 2·tol²·||g_i||² + 200·tol²·s_i²·n_i over the whole sequence
    (tolerances as ``loss_scale``'s), c_i = s_i·n_i."""
    if z.shape[:2] != y.shape or int(y.max()) >= z.shape[2]:
        raise NeedFallback("the final Linear's output is not the [N, T, vocabulary] logits of the targets")
    dtype = compute_dtype(g)
    z, g = z.to(dtype), g.to(dtype)
    counted = y != IGNORE_INDEX
    yy = y.clamp_min(0).unsqueeze(2)
    p = torch.softmax(z, dim=2)
    off = p.scatter(2, yy, 0.0) * counted.unsqueeze(2).to(dtype)
    numerator = torch.linalg.vecdot(g.reshape(len(y), -1), off.reshape(len(y), -1))
    denominator = torch.linalg.vecdot(off.reshape(len(y), -1), off.reshape(len(y), -1))
    s = torch.where(denominator > 0, numerator / denominator.clamp_min(torch.finfo(dtype).tiny), torch.ones_like(numerator))
    residual = g - s.reshape(-1, 1, 1) * off
    missing = (1.0 - p.gather(2, yy).squeeze(2)) * counted.to(dtype)  # the label entry: s·(1 − p_y)
    residual.scatter_add_(2, yy, (s.unsqueeze(1) * missing).unsqueeze(2))
    tol2 = 1e-8 if dtype == torch.float32 else 1e-18
    tokens = counted.sum(1).to(dtype)
    flat = residual.reshape(len(y), -1)
    gflat = g.reshape(len(y), -1)
    limit = 2 * tol2 * torch.linalg.vecdot(gflat, gflat) + 200 * tol2 * s * s * tokens
    return s * tokens, torch.linalg.vecdot(flat, flat) <= limit


def _loss_scale_numpy(
    z: Tensor, g: Tensor, y: Tensor, loss_reduction: str, n_per_step: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``loss_scale`` on the CPU in NumPy."""
    n = y.shape[0]
    tol2 = 1e-8 if g.dtype != torch.float64 else 1e-18
    work = np.float64 if g.dtype == torch.float64 else np.float32  # float32: residuals ~1e-7 << tol
    zn = z.numpy().astype(work, copy=False)
    gn = g.numpy().astype(work, copy=False)
    yn = y.numpy().astype(np.int64)
    rows = np.arange(n)
    p = np.exp(zn - zn.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    off = p.copy()
    off[rows, yn] = 0.0
    if loss_reduction == "weighted_mean":
        den = np.einsum("ij,ij->i", off, off)
        c = np.divide(np.einsum("ij,ij->i", gn, off), den, out=np.ones(n, dtype=work), where=den > 0)
    elif loss_reduction == "mean":
        c = (1.0 / n_per_step.numpy()).astype(work) if n_per_step is not None else np.full(n, 1.0 / n, dtype=work)
    else:
        c = np.ones(n, dtype=work)
    residual = gn - c[:, None] * off
    residual[rows, yn] += c * (1.0 - p[rows, yn])
    limit = 2 * tol2 * np.einsum("ij,ij->i", gn, gn) + 200 * tol2 * c * c
    ok = np.einsum("ij,ij->i", residual, residual) <= limit
    return torch.from_numpy(c), torch.from_numpy(ok)
