"""Ghost-norm rules: one per layer type, and ``REGISTRY``, the one place that lists them.

A rule turns what a layer saw during the ordinary backward, its input ``a`` and its output
gradient ``g``, into the per-sample squared norm ||∇_θ loss_i||² of the layer's own
parameters (weight and bias), without materialising per-sample gradients when a cheaper
form exists:

* ``Linear`` without a sequence dim: ||∇W_i||² = ||a_i||²·||g_i||², ||∇b_i||² = ||g_i||²;
  with sequence dims (``[N, T..., d]``) ∇W_i = Σ_t g_t a_tᵀ, whose squared norm is
  Σ_{t,t'} (a_t·a_t')(g_t·g_t') (Gram matrices, cost N·T²·(d_in+d_out)) or ||Σ_t g_t a_tᵀ||²
  (materialised, cost N·T·d_in·d_out), whichever is cheaper for the shapes;
* ``Conv1d`` / ``Conv2d`` (any stride, padding and padding mode, dilation, groups): the
  input is unfolded into patches, then the sequence-Linear rule per group;
* ``Embedding``: Σ_{t,t'} [idx_t = idx_t'](g_t·g_t'), padding_idx excluded;
* ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm*`` and eval-mode
  ``BatchNorm*`` (running statistics): the normalised input is recomputed and the
  per-sample affine gradients Σ g·x̂ and Σ g are materialised (they are small);
* ``MultiheadAttention``: its in- and out-projections are recorded as linear sites
  (``attention``) and each gets the sequence-Linear rule.

Parameters shared by several layers (tied weights) are combined in ``ties``.

``REGISTRY`` maps a layer type to its ``LayerRule``; a subclass uses the rule of its
nearest registered base class. Adding a layer rule means writing its function here and
adding one entry to ``REGISTRY``. ``rule_for`` reads the registry to say, for one module,
which rule applies or why the exact fallback is needed instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.grand.attention import AttentionTap, LinearSite, tap_attention

#: (module or recorded site, its input, its output gradient) -> per-sample squared norm [N].
SqNorm = Callable[[Any, Tensor, Tensor], Tensor]

#: Parameter names a rule covers; a module with other trainable parameters needs the fallback.
RULED_PARAMETERS = frozenset({"weight", "bias"})


class NeedFallback(Exception):
    """Ghost norms would be wrong for this step; the message says why."""


def compute_dtype(t: Tensor) -> torch.dtype:
    """float32 or float64 as the tensor has; half and bfloat16 are computed in float32."""
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def per_sample_sqnorm(t: Tensor) -> Tensor:
    """Per-sample squared norm of ``t`` [N, ...] -> [N]."""
    t = t.reshape(t.shape[0], -1)
    return torch.linalg.vecdot(t, t)


def _outer_sum_sqnorm(a: Tensor, g: Tensor) -> Tensor:
    """||Σ_t g_t a_tᵀ||_F² per batch row for a [M, T, da], g [M, T, dg] -> [M].

    Gram form Σ_{t,t'} (a_t·a_t')(g_t·g_t') or the materialised sum, whichever is cheaper.
    """
    m, t, da = a.shape
    dg = g.shape[2]
    if t == 1:
        return per_sample_sqnorm(a) * per_sample_sqnorm(g)
    if t * (da + dg) < da * dg:
        a, g = a.contiguous(), g.contiguous()  # bmm on strided views is much slower
        ga = torch.bmm(a, a.transpose(1, 2))
        gg = torch.bmm(g, g.transpose(1, 2))
        return torch.linalg.vecdot(ga.reshape(m, -1), gg.reshape(m, -1)).clamp_min_(0)
    # The product is the same either way round; MKL's batched GEMM is faster when the
    # output's last dim is the larger one.
    if dg >= da:
        return per_sample_sqnorm(torch.bmm(a.transpose(1, 2).contiguous(), g))
    return per_sample_sqnorm(torch.bmm(g.transpose(1, 2).contiguous(), a))


# -- Linear, Conv, Embedding ------------------------------------------------------------------


def outer_sqnorm(x: Tensor, g: Tensor, weight: bool, bias: bool) -> Tensor:
    """Per-sample squared norm of a linear map's gradient: input ``x`` [N, ..., d_in], output
    grad ``g`` [N, ..., d_out]; ``weight``/``bias``: which of the two are trainable."""
    n = g.shape[0]
    dtype = compute_dtype(g)
    g = g.to(dtype)
    if g.dim() == 2:
        g2 = torch.linalg.vecdot(g, g)
        if not weight:
            return g2 if bias else torch.zeros_like(g2)
        a = x.to(dtype)
        a2 = torch.linalg.vecdot(a, a)
        return torch.addcmul(g2, a2, g2) if bias else a2.mul_(g2)
    a = x.to(dtype).reshape(n, -1, x.shape[-1])
    g = g.reshape(n, -1, g.shape[-1])
    total = _outer_sum_sqnorm(a, g) if weight else torch.zeros(n, dtype=dtype, device=g.device)
    if bias:
        total = total + per_sample_sqnorm(g.sum(1))
    return total


def linear_sqnorm(module: nn.Linear, x: Tensor, g: Tensor) -> Tensor:
    bias = module.bias is not None and module.bias.requires_grad
    return outer_sqnorm(x, g, module.weight.requires_grad, bias)


def linear_site_sqnorm(site: LinearSite, x: Tensor, g: Tensor) -> Tensor:
    """A projection recorded inside a layer's forward (``attention.LinearSite``)."""
    return outer_sqnorm(x, g, site.weight, site.bias)


def _conv1d_weight_sqnorm(
    module: nn.Conv1d, x: Tensor, gflat: Tensor, left: int = 0, right: int = 0, with_bias: bool = False
) -> Tensor:
    """||∇W_i||² of a Conv1d from its input x [N, C, L] (zero padding ``left``/``right``
    still to apply) and output grad [N, C_out, T].

    Gram form without unfolding: with R = XᵀX per sample and group ([L, L], summed over
    the group's input channels; zero padding pads R, which is smaller than X), the patch
    Gram is Ga[t, t'] = Σ_j R[t·s + j·d, t'·s + j·d] (k strided views of R, one
    as_strided), and ||∇W||² = Σ Ga ∘ Gg with Gg = gᵀg. When the per-sample gradient is
    smaller than those Gram matrices, it is materialised instead (unfolded patches).
    """
    n, c_in, length = x.shape
    groups, c_out = module.groups, module.out_channels
    (k,), (s,), (d,) = module.kernel_size, module.stride, module.dilation
    t = gflat.shape[2]
    da, dg = (c_in // groups) * k, c_out // groups
    gram_cost = length * length * (c_in // groups) + t * t * (dg + k)
    if gram_cost <= t * da * dg + t * da:
        xg = x.reshape(n * groups, c_in // groups, length)
        r = torch.bmm(xg.transpose(1, 2), xg)  # [N*G, L, L]
        if left or right:
            r = F.pad(r, [left, right, left, right])
        st = r.stride()
        views = r.as_strided((n * groups, k, t, t), (st[0], d * (st[1] + st[2]), s * st[1], s * st[2]))
        ga = views.sum(1)
        gg = gflat.reshape(n * groups, dg, t)
        gg = torch.bmm(gg.transpose(1, 2), gg)
        total = torch.linalg.vecdot(ga.reshape(n * groups, -1), gg.reshape(n * groups, -1)).clamp_min_(0)
        if with_bias:  # ||Σ_t g_t||² = Σ_{t,t'} g_t·g_t': the entries of Gg again
            total = total + gg.sum((1, 2))
        return total.reshape(n, groups).sum(1)
    if with_bias:
        bias = per_sample_sqnorm(gflat.sum(2))
    if left or right:
        x = F.pad(x, [left, right])
    patches = x.unfold(2, d * (k - 1) + 1, s)  # [N, C, T, span]
    if d > 1:
        patches = patches[..., ::d]
    a = patches.reshape(n, groups, c_in // groups, t, k).permute(0, 1, 3, 2, 4).reshape(n * groups, t, da)
    gg = gflat.reshape(n * groups, dg, t).transpose(1, 2)
    total = _outer_sum_sqnorm(a, gg).reshape(n, groups).sum(1)
    return total + bias if with_bias else total


def conv_sqnorm(module: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor) -> Tensor:
    n = g.shape[0]
    dtype = compute_dtype(g)
    groups = module.groups
    c_out = module.out_channels
    g = g.to(dtype)
    gflat = g.reshape(n, c_out, -1)  # [N, C_out, T]
    total = torch.zeros(n, dtype=dtype, device=g.device)
    if module.weight.requires_grad:
        x = x.to(dtype)
        pads = list(module._reversed_padding_repeated_twice)
        if any(pads) and (module.padding_mode != "zeros" or not isinstance(module, nn.Conv1d)):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            x = F.pad(x, pads, mode=mode)
            pads = [0, 0]
        if isinstance(module, nn.Conv1d):
            with_bias = module.bias is not None and module.bias.requires_grad
            return _conv1d_weight_sqnorm(module, x, gflat, pads[0], pads[1], with_bias)
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, stride=module.stride)
        a = cols.reshape(n * groups, cols.shape[1] // groups, cols.shape[2]).transpose(1, 2)
        gg = gflat.reshape(n * groups, c_out // groups, -1).transpose(1, 2)  # [N*G, T, dg]
        total = total + _outer_sum_sqnorm(a, gg).reshape(n, groups).sum(1)
    if module.bias is not None and module.bias.requires_grad:
        total = total + per_sample_sqnorm(gflat.sum(2))
    return total


def embedding_rows(module: nn.Embedding, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's looked-up indices ``[n, L]`` and their output gradients ``[n, L, d]`` (in
    the compute dtype), zero at ``padding_idx``, which gets no gradient."""
    n = g.shape[0]
    dtype = compute_dtype(g)
    idx = x.reshape(n, -1)
    g = g.to(dtype).reshape(n, idx.shape[1], -1)
    if module.padding_idx is not None:
        g = g * (idx != module.padding_idx).unsqueeze(2).to(dtype)
    return idx, g


def embedding_sqnorm(module: nn.Embedding, x: Tensor, g: Tensor) -> Tensor:
    idx, g = embedding_rows(module, x, g)
    n, dtype = g.shape[0], g.dtype
    if idx.shape[1] == 1:
        return per_sample_sqnorm(g)
    same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(dtype)
    gram = torch.bmm(g, g.transpose(1, 2))
    return torch.linalg.vecdot(gram.reshape(n, -1), same.reshape(n, -1)).clamp_min_(0)


# -- normalisation layers ---------------------------------------------------------------------


def _affine_total(module: nn.Module, xhat: Tensor, g: Tensor, reduce_dims: tuple[int, ...]) -> Tensor:
    """Per-sample ||Σ g·x̂||² (weight) + ||Σ g||² (bias), summing over ``reduce_dims``."""
    n = g.shape[0]
    total = torch.zeros(n, dtype=g.dtype, device=g.device)
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if weight is not None and weight.requires_grad:
        gw = g * xhat
        total = total + per_sample_sqnorm(gw.sum(reduce_dims) if reduce_dims else gw)
    if bias is not None and bias.requires_grad:
        total = total + per_sample_sqnorm(g.sum(reduce_dims) if reduce_dims else g)
    return total


def _channel_view(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def layer_norm_sqnorm(module: nn.LayerNorm, x: Tensor, g: Tensor) -> Tensor:
    dtype = compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    shape = tuple(module.normalized_shape)
    xhat = F.layer_norm(x, shape, None, None, module.eps)
    return _affine_total(module, xhat, g, tuple(range(1, x.dim() - len(shape))))


def rms_norm_sqnorm(module: nn.Module, x: Tensor, g: Tensor) -> Tensor:
    dtype = compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    shape = tuple(module.normalized_shape)
    xhat = F.rms_norm(x, shape, None, module.eps)
    return _affine_total(module, xhat, g, tuple(range(1, x.dim() - len(shape))))


def group_norm_sqnorm(module: nn.GroupNorm, x: Tensor, g: Tensor) -> Tensor:
    dtype = compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    xhat = F.group_norm(x, module.num_groups, None, None, module.eps)
    return _affine_total(module, _channel_view(xhat), _channel_view(g), (2,))


def instance_norm_sqnorm(module: nn.modules.instancenorm._InstanceNorm, x: Tensor, g: Tensor) -> Tensor:
    dtype = compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    use_input_stats = module.training or not module.track_running_stats
    xhat = F.instance_norm(
        x,
        None if use_input_stats else module.running_mean.to(dtype),
        None if use_input_stats else module.running_var.to(dtype),
        use_input_stats=use_input_stats,
        eps=module.eps,
    )
    if x.dim() == module._get_no_batch_dim():  # unbatched input is not supported
        raise NeedFallback("InstanceNorm without a batch dimension")
    return _affine_total(module, _channel_view(xhat), _channel_view(g), (2,))


def batch_norm_eval_sqnorm(module: nn.modules.batchnorm._BatchNorm, x: Tensor, g: Tensor) -> Tensor:
    dtype = compute_dtype(g)
    x, g = _channel_view(x.to(dtype)), _channel_view(g.to(dtype))
    mean = module.running_mean.to(dtype).reshape(1, -1, 1)
    var = module.running_var.to(dtype).reshape(1, -1, 1)
    xhat = (x - mean) / torch.sqrt(var + module.eps)
    return _affine_total(module, xhat, g, (2,))


# -- the registry -----------------------------------------------------------------------------


def _no_objection(module: nn.Module) -> str | None:
    return None


def _embedding_objection(module: nn.Embedding) -> str | None:
    if module.scale_grad_by_freq:
        return "Embedding(scale_grad_by_freq=True) scales by batch frequencies"
    return None


def _batch_statistics(module: nn.modules.batchnorm._BatchNorm) -> str | None:
    if module.training or not module.track_running_stats:
        return f"{type(module).__name__} uses batch statistics (samples are coupled)"
    return None


#: nn.MultiheadAttention's own parameters that its rule covers (``out_proj`` is a child).
ATTENTION_PARAMETERS = frozenset({"in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight"})


@dataclass(frozen=True)
class LayerRule:
    """How a layer type gets its per-sample squared gradient norm.

    ``sqnorm``: the rule itself. ``objection``: why a particular instance's settings make
    the rule wrong (None when it applies). ``coupling``: why the layer couples the
    samples of a batch (None when it does not); then no ghost norm in the whole model is
    exact, and the fallback differentiates each sample's loss as computed in its batch.
    ``parameters``: the names of the layer's own parameters the rule covers.
    ``any_leading``: the layer acts on the last dim only, so its input may be
    sequence first ([T, N, ...], as inside ``nn.TransformerEncoderLayer(batch_first=False)``).
    ``tap``: for a layer that applies its parameters by functional calls inside its
    forward (``nn.MultiheadAttention``), how its forward is recorded as ``LinearSite``s
    instead of by a forward hook; ``sqnorm`` then applies to each site, and ``covers``
    names the child modules whose parameters the sites include.
    """

    sqnorm: SqNorm
    objection: Callable[[nn.Module], str | None] = _no_objection
    coupling: Callable[[nn.Module], str | None] = _no_objection
    parameters: frozenset[str] = RULED_PARAMETERS
    any_leading: bool = False
    tap: Callable[[nn.Module, AttentionTap], Any] | None = None
    covers: tuple[str, ...] = ()


def _attention_objection(module: nn.MultiheadAttention) -> str | None:
    if module.bias_k is not None:
        return "MultiheadAttention(add_bias_kv=True) has no ghost-norm rule for bias_k / bias_v"
    return None


#: Layer type -> its rule. The torch base classes ``_BatchNorm`` and ``_InstanceNorm``
#: cover BatchNorm1d/2d/3d, SyncBatchNorm and InstanceNorm1d/2d/3d (and their lazy forms).
REGISTRY: dict[type[nn.Module], LayerRule] = {
    nn.Linear: LayerRule(linear_sqnorm, any_leading=True),
    nn.Conv1d: LayerRule(conv_sqnorm),
    nn.Conv2d: LayerRule(conv_sqnorm),
    nn.Embedding: LayerRule(embedding_sqnorm, objection=_embedding_objection, any_leading=True),
    nn.LayerNorm: LayerRule(layer_norm_sqnorm, any_leading=True),
    nn.GroupNorm: LayerRule(group_norm_sqnorm),
    nn.modules.instancenorm._InstanceNorm: LayerRule(instance_norm_sqnorm),
    nn.modules.batchnorm._BatchNorm: LayerRule(batch_norm_eval_sqnorm, coupling=_batch_statistics),
    nn.MultiheadAttention: LayerRule(
        linear_site_sqnorm, objection=_attention_objection, parameters=ATTENTION_PARAMETERS,
        tap=tap_attention, covers=("out_proj",),
    ),
}
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    REGISTRY[nn.RMSNorm] = LayerRule(rms_norm_sqnorm, any_leading=True)


def registered_rule(layer_type: type[nn.Module]) -> LayerRule | None:
    """The rule of ``layer_type`` or of its nearest registered base class, or None."""
    for cls in layer_type.__mro__:
        rule = REGISTRY.get(cls)
        if rule is not None:
            return rule
    return None


@dataclass(frozen=True)
class RuleChoice:
    """What ``rule_for`` decided for one module.

    ``sqnorm``: the rule to apply, or None (no trainable parameters, or no exact rule).
    ``why_not``: why ghost norms would be wrong for this module (None when they are fine).
    ``coupled``: the module couples the samples of a batch (batch statistics).
    """

    sqnorm: SqNorm | None
    why_not: str | None = None
    coupled: bool = False
    rule: LayerRule | None = None


def rule_for(module: nn.Module) -> RuleChoice:
    """Which rule gives ``module``'s ghost norms, or why the exact fallback is needed."""
    rule = registered_rule(type(module))
    if rule is not None:
        coupling = rule.coupling(module)
        if coupling is not None:
            return RuleChoice(None, coupling, coupled=True)
    trainable = {name for name, p in module.named_parameters(recurse=False) if p.requires_grad}
    covered = rule is not None and any(
        p.requires_grad for child in rule.covers for p in getattr(module, child).parameters()
    )
    if not trainable and not covered:
        return RuleChoice(None)
    name = type(module).__name__
    objection = None if rule is None else rule.objection(module)
    if objection is not None:
        return RuleChoice(None, objection)
    ruled = RULED_PARAMETERS if rule is None else rule.parameters
    if not trainable <= ruled:
        return RuleChoice(None, f"{name} has parameters {sorted(trainable - ruled)} without a ghost-norm rule")
    if rule is None:
        return RuleChoice(None, f"{name} has no ghost-norm rule")
    return RuleChoice(rule.sqnorm, rule=rule)
