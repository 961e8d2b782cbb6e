"""Exact per-sample gradient norms (GraNd) at close to the cost of one training step.

GraNd (Paul et al. 2021, DESIGN.md "Definitions") = ||∇_θ loss_i||₂ over all trainable
parameters, where loss_i is the cross-entropy of sample i itself (not the batch mean).

How it is computed ("ghost norms", no per-sample gradient is materialised when a cheaper
form exists): for every layer with trainable parameters a forward hook keeps the layer's
input ``a`` and a tensor hook on its output receives the output gradient ``g`` during the
ordinary ``loss.backward()``. The per-sample squared norm of the layer's parameter
gradient follows from ``a`` and ``g`` alone:

* ``Linear`` without a sequence dim: ||∇W_i||² = ||a_i||²·||g_i||², ||∇b_i||² = ||g_i||²;
  with sequence dims (``[N, T..., d]``) ∇W_i = Σ_t g_t a_tᵀ, whose squared norm is
  Σ_{t,t'} (a_t·a_t')(g_t·g_t') (Gram matrices, cost N·T²·(d_in+d_out)) or ||Σ_t g_t a_tᵀ||²
  (materialised, cost N·T·d_in·d_out), whichever is cheaper for the shapes;
* ``Conv1d`` / ``Conv2d`` (any stride, padding and padding mode, dilation, groups): the
  input is unfolded into patches, then the sequence-Linear rule per group;
* ``Embedding``: Σ_{t,t'} [idx_t = idx_t'](g_t·g_t'), padding_idx excluded;
* ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm*`` and eval-mode
  ``BatchNorm*`` (running statistics): the normalised input is recomputed and the
  per-sample affine gradients Σ g·x̂ and Σ g are materialised (they are small).

Ghost norms are wrong when a parameter is shared by several modules (tied weights), a
module runs more than once in one forward (reuse, activation checkpointing), a module
with trainable parameters has no rule here (or is called functionally, e.g.
``nn.MultiheadAttention``), or samples are coupled (``BatchNorm`` with batch statistics).
These cases are detected automatically and an exact fallback is used instead, logged
once per reason: ``torch.func`` (``functional_call`` + ``vmap(grad)``) over the samples,
or, where samples are coupled through batch statistics, the rows of the Jacobian of the
batch's per-sample losses (the gradient of sample i's loss as computed in its batch).
Both are slower but exact.

``per_sample_grad_norms`` works on any classifier outside Lightning; ``GrandRecording``
is what ``DynamicsRecorder`` drives during training: on the steps its ``GrandSchedule``
picks it arms the hooks, the training step's own backward provides the output gradients,
and ``.grad`` / the optimizer step stay bit-identical to a plain step (hooks only read).
Unscheduled steps have no hooks and cost nothing (except the one forward hook on the
final ``Linear`` that gives the last-layer approximation's ||h||²). Each scored step's
layer norms are computed right after its backward; the per-sample loss-scale check and
the final sqrt/divide are batched over the epoch (see ``GrandRecording``).

Cost (benchmarks/results/grand.md, 2-core CPU, ratio to a plain training step): MNIST-1D
MLP ~1.25-1.3x, 1-D CNN ~1.25-1.4x, small transformer ~1.35-1.4x; torch.func vmap, a
per-sample loop, Opacus and BackPACK were all slower.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SCHEDULE",
    "GrandRecording",
    "GrandSchedule",
    "per_sample_grad_norms",
    "per_sample_grad_norms_by_layer",
]

#: What ``--grand on`` / ``--grand default`` means: every 5th epoch (0, 5, 10, ...).
#: A scored step costs ~1.2-1.5x a plain step (benchmarks/results/grand.md), so scoring
#: one epoch in five keeps a whole run within ~10 % of an unscored one, and gives
#: several scorings "a few epochs in" to average (Paul et al. 2021; Kirsch 2023).
DEFAULT_SCHEDULE = "every:5"

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message, *args)


class _NeedFallback(Exception):
    """Ghost norms would be wrong for this step; the message says why."""


# --------------------------------------------------------------------------------------
# Ghost-norm rules: (module, input, output, output grad) -> per-sample squared norm [N]
# --------------------------------------------------------------------------------------


def _compute_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def _sq(t: Tensor) -> Tensor:
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
        return _sq(a) * _sq(g)
    if t * (da + dg) < da * dg:
        a, g = a.contiguous(), g.contiguous()  # bmm on strided views is many times slower
        ga = torch.bmm(a, a.transpose(1, 2))
        gg = torch.bmm(g, g.transpose(1, 2))
        return torch.linalg.vecdot(ga.reshape(m, -1), gg.reshape(m, -1)).clamp_min_(0)
    # The product is the same either way round; MKL's batched GEMM is several times faster
    # when the output's last dim is the larger one (measured: 26 vs 129 µs for 5 x 64).
    if dg >= da:
        return _sq(torch.bmm(a.transpose(1, 2).contiguous(), g))
    return _sq(torch.bmm(g.transpose(1, 2).contiguous(), a))


def _linear_rule(module: nn.Linear, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    n = g.shape[0]
    dtype = _compute_dtype(g)
    g = g.to(dtype)
    w = module.weight.requires_grad
    b = module.bias is not None and module.bias.requires_grad
    if g.dim() == 2:
        g2 = torch.linalg.vecdot(g, g)
        if not w:
            return g2
        a = x.to(dtype)
        a2 = torch.linalg.vecdot(a, a)
        return torch.addcmul(g2, a2, g2) if b else a2.mul_(g2)
    a = x.to(dtype).reshape(n, -1, x.shape[-1])
    g = g.reshape(n, -1, g.shape[-1])
    total = _outer_sum_sqnorm(a, g) if w else torch.zeros(n, dtype=dtype, device=g.device)
    if b:
        total = total + _sq(g.sum(1))
    return total


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
    lp = length + left + right
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
        bias = _sq(gflat.sum(2))
    if left or right:
        x = F.pad(x, [left, right])
    patches = x.unfold(2, d * (k - 1) + 1, s)  # [N, C, T, span]
    if d > 1:
        patches = patches[..., ::d]
    a = patches.reshape(n, groups, c_in // groups, t, k).permute(0, 1, 3, 2, 4).reshape(n * groups, t, da)
    gg = gflat.reshape(n * groups, dg, t).transpose(1, 2)
    total = _outer_sum_sqnorm(a, gg).reshape(n, groups).sum(1)
    return total + bias if with_bias else total


def _conv_rule(module: nn.Conv1d | nn.Conv2d, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    n = g.shape[0]
    dtype = _compute_dtype(g)
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
        else:
            cols = F.unfold(x, module.kernel_size, dilation=module.dilation, stride=module.stride)
            a = cols.reshape(n * groups, cols.shape[1] // groups, cols.shape[2]).transpose(1, 2)
        gg = gflat.reshape(n * groups, c_out // groups, -1).transpose(1, 2)  # [N*G, T, dg]
        total = total + _outer_sum_sqnorm(a, gg).reshape(n, groups).sum(1)
    if module.bias is not None and module.bias.requires_grad:
        total = total + _sq(gflat.sum(2))
    return total


def _embedding_rule(module: nn.Embedding, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    n = g.shape[0]
    dtype = _compute_dtype(g)
    idx = x.reshape(n, -1)
    g = g.to(dtype).reshape(n, idx.shape[1], -1)
    if module.padding_idx is not None:
        g = g * (idx != module.padding_idx).unsqueeze(2).to(dtype)
    if idx.shape[1] == 1:
        return _sq(g)
    same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(dtype)
    gram = torch.bmm(g, g.transpose(1, 2))
    return torch.linalg.vecdot(gram.reshape(n, -1), same.reshape(n, -1)).clamp_min_(0)


def _affine_total(module: nn.Module, xhat: Tensor, g: Tensor, reduce_dims: tuple[int, ...]) -> Tensor:
    """Per-sample ||Σ g·x̂||² (weight) + ||Σ g||² (bias), summing over ``reduce_dims``."""
    n = g.shape[0]
    total = torch.zeros(n, dtype=g.dtype, device=g.device)
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if weight is not None and weight.requires_grad:
        gw = g * xhat
        total = total + _sq(gw.sum(reduce_dims) if reduce_dims else gw)
    if bias is not None and bias.requires_grad:
        total = total + _sq(g.sum(reduce_dims) if reduce_dims else g)
    return total


def _layer_norm_rule(module: nn.LayerNorm, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    dtype = _compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    shape = tuple(module.normalized_shape)
    xhat = F.layer_norm(x, shape, None, None, module.eps)
    return _affine_total(module, xhat, g, tuple(range(1, x.dim() - len(shape))))


def _rms_norm_rule(module: nn.Module, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    dtype = _compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    shape = tuple(module.normalized_shape)
    xhat = F.rms_norm(x, shape, None, module.eps)
    return _affine_total(module, xhat, g, tuple(range(1, x.dim() - len(shape))))


def _channel_view(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], t.shape[1], -1)


def _group_norm_rule(module: nn.GroupNorm, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    dtype = _compute_dtype(g)
    x, g = x.to(dtype), g.to(dtype)
    xhat = F.group_norm(x, module.num_groups, None, None, module.eps)
    return _affine_total(module, _channel_view(xhat), _channel_view(g), (2,))


def _instance_norm_rule(module: nn.modules.instancenorm._InstanceNorm, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    dtype = _compute_dtype(g)
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
        raise _NeedFallback("InstanceNorm without a batch dimension")
    return _affine_total(module, _channel_view(xhat), _channel_view(g), (2,))


def _batch_norm_eval_rule(module: nn.modules.batchnorm._BatchNorm, x: Tensor, out: Tensor, g: Tensor) -> Tensor:
    dtype = _compute_dtype(g)
    x, g = _channel_view(x.to(dtype)), _channel_view(g.to(dtype))
    mean = module.running_mean.to(dtype).reshape(1, -1, 1)
    var = module.running_var.to(dtype).reshape(1, -1, 1)
    xhat = (x - mean) / torch.sqrt(var + module.eps)
    return _affine_total(module, xhat, g, (2,))


Rule = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


def _rule_for(module: nn.Module) -> tuple[Rule | None, str | None, bool]:
    """(rule, why not, couples samples) for a module with trainable direct parameters."""
    trainable = {name for name, p in module.named_parameters(recurse=False) if p.requires_grad}
    known = {"weight", "bias"}
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or not module.track_running_stats:
            return None, f"{type(module).__name__} uses batch statistics (samples are coupled)", True
        return (_batch_norm_eval_rule if trainable <= known else None), None, False
    if not trainable:
        return None, None, False
    if not trainable <= known:
        return None, f"{type(module).__name__} has parameters {sorted(trainable - known)} without a ghost-norm rule", False
    if type(module) in (nn.Linear,) or isinstance(module, nn.Linear):
        return _linear_rule, None, False
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _conv_rule, None, False
    if isinstance(module, nn.Embedding):
        if module.scale_grad_by_freq:
            return None, "Embedding(scale_grad_by_freq=True) scales by batch frequencies", False
        return _embedding_rule, None, False
    if isinstance(module, nn.LayerNorm):
        return _layer_norm_rule, None, False
    if hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm):
        return _rms_norm_rule, None, False
    if isinstance(module, nn.GroupNorm):
        return _group_norm_rule, None, False
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return _instance_norm_rule, None, False
    return None, f"{type(module).__name__} has no ghost-norm rule", False


@dataclass
class _Plan:
    """Which modules get ghost norms, and why the whole model needs the fallback (if so)."""

    modules: list[tuple[str, nn.Module, Rule]] = field(default_factory=list)
    fallback_reason: str | None = None
    coupled: bool = False
    head: nn.Module | None = None
    head_index: int | None = None


def _make_plan(model: nn.Module) -> _Plan:
    plan = _Plan()
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), []).append(name or type(module).__name__)
    for name, module in model.named_modules():
        rule, why, coupled = _rule_for(module)
        if coupled:
            plan.coupled = True
            plan.fallback_reason = why
        elif why is not None and plan.fallback_reason is None:
            plan.fallback_reason = f"{name or 'model'}: {why}"
        if rule is not None:
            plan.modules.append((name, module, rule))
            if isinstance(module, nn.Linear):
                plan.head = module
                plan.head_index = len(plan.modules) - 1
    shared = [names for names in owners.values() if len(names) > 1]
    if shared and plan.fallback_reason is None:
        plan.fallback_reason = f"parameters shared by modules {', '.join(shared[0])} (tied weights)"
    if not plan.modules and plan.fallback_reason is None:
        plan.fallback_reason = "no module with a ghost-norm rule"
    return plan


class _Capture:
    """Forward hooks keep each ruled module's input; tensor hooks keep its output grad."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self._handles: list[Any] = []
        self.reset()

    def reset(self) -> None:
        n = len(self.plan.modules)
        self.inputs: list[Tensor | None] = [None] * n
        self.outputs: list[Tensor | None] = [None] * n
        self.grads: list[Tensor | None] = [None] * n
        self.calls = [0] * n
        self.reused: str | None = None

    def arm(self) -> None:
        self.reset()
        if not hasattr(self, "_hook_functions"):
            self._hook_functions = [self._forward_hook(i) for i in range(len(self.plan.modules))]
        for (_, module, _), hook in zip(self.plan.modules, self._hook_functions):
            self._handles.append(module.register_forward_hook(hook))

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def _forward_hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self.calls[index] += 1
            if self.calls[index] > 1:
                self.reused = self.plan.modules[index][0] or type(module).__name__
                return
            if not torch.is_grad_enabled() or not isinstance(output, Tensor) or not output.requires_grad:
                return
            self.inputs[index] = args[0] if args else None
            self.outputs[index] = output

            def grad_hook(grad: Tensor) -> None:
                self.grads[index] = grad

            output.register_hook(grad_hook)

        return hook

    def take(self, n: int) -> list[tuple[int, Tensor, Tensor]]:
        """(module index, input, output grad) of every ruled module that reached the loss,
        after the checks that need this step's state; raises _NeedFallback if not exact."""
        if self.reused is not None:
            raise _NeedFallback(f"module {self.reused} ran more than once in one forward (reuse or checkpointing)")
        items = []
        for index, (name, module, rule) in enumerate(self.plan.modules):
            g = self.grads[index]
            x = self.inputs[index]
            if self.calls[index] == 0:
                for p in module.parameters(recurse=False):
                    if p.requires_grad and p.grad is not None and bool(p.grad.any()):
                        raise _NeedFallback(
                            f"module {name} got gradients without its forward hook running (called functionally?)"
                        )
                continue
            if g is None:
                continue  # ran, but its output did not reach the loss: zero gradient
            if x is None or g.shape[0] != n or x.shape[0] != n:
                raise _NeedFallback(f"module {name} has no leading batch dimension of size {n}")
            items.append((index, x.detach(), g.detach()))
        return items

    def layer_sqnorms(self, n: int) -> dict[str, Tensor]:
        """Per-module squared per-sample norms [n]; raises _NeedFallback if not exact."""
        return _apply_rules(self.plan, self.take(n))

    def head(self) -> tuple[Tensor | None, Tensor | None]:
        """(output, output grad) of the final Linear in this step."""
        index = self.plan.head_index
        if index is None or self.outputs[index] is None or self.grads[index] is None:
            return None, None
        return self.outputs[index].detach(), self.grads[index].detach()

    def release(self) -> None:
        self.reset()


def _apply_rules(plan: _Plan, items: list[tuple[int, Tensor, Tensor]]) -> dict[str, Tensor]:
    result: dict[str, Tensor] = {}
    for index, x, g in items:
        name, module, rule = plan.modules[index]
        result[name] = rule(module, x, None, g)
    return result


# --------------------------------------------------------------------------------------
# Exact fallback (torch.func)
# --------------------------------------------------------------------------------------


def _layer_of(parameter_name: str) -> str:
    return parameter_name.rsplit(".", 1)[0] if "." in parameter_name else parameter_name


def _fallback_layer_sqnorms(
    model: nn.Module, inputs: Tensor, targets: Tensor, coupled: bool, chunk: int = 64
) -> dict[str, Tensor]:
    """Exact per-sample squared norms per layer via torch.func (no side effects).

    Independent samples: ``vmap(grad)`` of each sample's cross-entropy alone. Coupled
    samples (batch statistics): rows of the Jacobian of the batch's per-sample losses.
    Buffers are cloned so running statistics are not updated twice.
    """
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    n = targets.shape[0]
    layers: dict[str, Tensor] = {}

    def add(grads: dict[str, Tensor], sl: slice) -> None:
        for name, value in grads.items():
            layer = _layer_of(name)
            sq = _sq(value.detach())
            if layer not in layers:
                layers[layer] = torch.zeros(n, dtype=sq.dtype, device=sq.device)
            layers[layer][sl] += sq

    with torch.enable_grad():
        if not coupled:
            def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
                out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
                return F.cross_entropy(out, y.unsqueeze(0))

            per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")
            for start in range(0, n, chunk):
                sl = slice(start, min(start + chunk, n))
                add(per_sample(params, inputs[sl], targets[sl]), sl)
        else:
            # Plain autograd on a functional forward (buffer clones absorb the running-stat
            # updates), then one backward per sample, batched with vmap where possible.
            leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
            out = functional_call(model, (leaves, buffers), (inputs,))
            values = F.cross_entropy(out, targets, reduction="none")
            names = list(leaves)
            eye = torch.eye(n, dtype=values.dtype, device=values.device)
            for start in range(0, n, chunk):
                sl = slice(start, min(start + chunk, n))
                try:
                    rows = torch.autograd.grad(
                        values, [leaves[k] for k in names], eye[sl], retain_graph=True,
                        is_grads_batched=True, allow_unused=True,
                    )
                except RuntimeError:  # no batching rule for some op: one backward per sample
                    per_row = [
                        torch.autograd.grad(values, [leaves[k] for k in names], row, retain_graph=True, allow_unused=True)
                        for row in eye[sl]
                    ]
                    rows = [
                        None if per_row[0][j] is None else torch.stack([r[j] for r in per_row])
                        for j in range(len(names))
                    ]
                add({k: g for k, g in zip(names, rows) if g is not None}, sl)
    return layers


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def _layer_sqnorms(model: nn.Module, inputs: Any, targets: Tensor) -> dict[str, Tensor]:
    plan = _make_plan(model)
    n = targets.shape[0]
    if plan.fallback_reason is None:
        capture = _Capture(plan)
        params = [p for p in model.parameters() if p.requires_grad]
        capture.arm()
        try:
            with torch.enable_grad():
                out = model(inputs)
                loss = F.cross_entropy(out, targets, reduction="sum")
                torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            capture.disarm()
        try:
            return capture.layer_sqnorms(n)
        except _NeedFallback as reason:
            why = str(reason)
        finally:
            capture.release()
    else:
        why = plan.fallback_reason
    _warn_once(
        f"{type(model).__name__}:{why}",
        "GraNd: ghost norms would not be exact for %s (%s); using the exact torch.func fallback (slower)",
        type(model).__name__, why,
    )
    return _fallback_layer_sqnorms(model, inputs, targets, plan.coupled)


def per_sample_grad_norms_by_layer(model: nn.Module, inputs: Any, targets: Tensor) -> dict[str, Tensor]:
    """Exact per-sample gradient norms of each layer (module path -> Tensor[N]).

    The gradient is that of each sample's own cross-entropy ``CE(model(inputs)_i, y_i)``
    w.r.t. the trainable parameters owned directly by the module at that path (the names
    ``DynamicsRecorder`` uses for per-layer gradient norms). Layers whose gradient is zero
    for every sample may be missing. Leaves ``.grad`` and buffers untouched; uses the
    model in its current mode (dropout in train mode draws new masks).
    """
    return {name: sq.sqrt() for name, sq in _layer_sqnorms(model, inputs, targets).items()}


def per_sample_grad_norms(model: nn.Module, inputs: Any, targets: Tensor) -> Tensor:
    """GraNd (Paul et al. 2021): exact ||∇_θ CE(model(inputs)_i, y_i)||₂ per sample -> [N].

    Over all trainable parameters; per-sample loss, not the batch mean. Works on any
    ``nn.Module`` classifier (no trainer needed); ghost norms where they are exact, the
    ``torch.func`` fallback elsewhere (see the module docstring). ``.grad`` is untouched.
    """
    layers = _layer_sqnorms(model, inputs, targets)
    if not layers:
        return torch.zeros(targets.shape[0])
    return torch.stack(list(layers.values())).sum(0).sqrt()


# --------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------

_SCHEDULE_HELP = (
    "expected off, on/default (= " + DEFAULT_SCHEDULE + "), every:K (epochs 0, K, 2K, ...), "
    "first:E (epochs 0..E-1), epochs:0,5,10, steps/all (every step), init (only before "
    "training), each optionally prefixed with init+ (also once at initialisation)"
)


@dataclass(frozen=True)
class GrandSchedule:
    """On which epochs GraNd is recorded; every step of a scheduled epoch is scored, so
    each training sample gets one exact GraNd per scheduled epoch.

    ``init``: also score every training sample once before the first update (stored as
    epoch -1, step -1; summaries average epochs ≥ 0 only, since GraNd at initialisation
    does not beat random, Kirsch 2023).
    """

    kind: str  # "every", "first", "epochs", "all", "none"
    k: int = 1
    epochs: tuple[int, ...] = ()
    init: bool = False
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> GrandSchedule:
        original = text
        if not isinstance(text, str):
            raise ValueError(f"bad GraNd schedule {original!r}: {_SCHEDULE_HELP}")
        text = text.strip().lower()
        if text in ("on", "default"):
            text = DEFAULT_SCHEDULE
        init = False
        if text.startswith("init+"):
            init, text = True, text[len("init+"):].strip()
            if text in ("on", "default"):
                text = DEFAULT_SCHEDULE
        if text in ("off", "none", "never") and not init:
            return cls("none", text=original)
        if text == "init" and not init:
            return cls("none", init=True, text=original)
        if text in ("steps", "all"):
            return cls("all", init=init, text=original)

        def integer(value: str, what: str, minimum: int) -> int:
            if not re.fullmatch(r"\d+", value.strip()):
                raise ValueError(f"bad GraNd schedule {original!r}: {what} must be an integer >= {minimum}; {_SCHEDULE_HELP}")
            number = int(value)
            if number < minimum:
                raise ValueError(f"bad GraNd schedule {original!r}: {what} must be >= {minimum}; {_SCHEDULE_HELP}")
            return number

        kind, sep, arg = text.partition(":")
        if sep and kind == "every":
            return cls("every", k=integer(arg, "K", 1), init=init, text=original)
        if sep and kind == "first":
            return cls("first", k=integer(arg, "E", 1), init=init, text=original)
        if sep and kind == "epochs":
            parts = [part for part in arg.split(",")]
            if not arg.strip() or any(not part.strip() for part in parts):
                raise ValueError(f"bad GraNd schedule {original!r}: epochs needs a comma-separated list; {_SCHEDULE_HELP}")
            epochs = tuple(sorted({integer(part, "an epoch", 0) for part in parts}))
            return cls("epochs", epochs=epochs, init=init, text=original)
        raise ValueError(f"bad GraNd schedule {original!r}: {_SCHEDULE_HELP}")

    def scores_epoch(self, epoch: int) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "every":
            return epoch % self.k == 0
        if self.kind == "first":
            return epoch < self.k
        if self.kind == "epochs":
            return epoch in self.epochs
        return False


# --------------------------------------------------------------------------------------
# Recording during training
# --------------------------------------------------------------------------------------

_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "features")
_TARGET_KEYS = ("y", "target", "targets", "label", "labels")


def _batch_parts(batch: Any) -> tuple[Any, Tensor | None, Tensor | None]:
    """(inputs, targets, sample_ids) of a training batch (DynamicsRecorder's contract)."""
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in _INPUT_KEYS if k in batch), None)
        y = next((batch[k] for k in _TARGET_KEYS if k in batch), None)
        return x, y, batch.get("sample_id")
    if isinstance(batch, Sequence) and len(batch) >= 2:
        return batch[0], batch[1], batch[2] if len(batch) >= 3 else None
    return None, None, None


class GrandRecording:
    """Exact GraNd fused with the training step, driven by ``DynamicsRecorder``.

    Args:
        schedule: a ``GrandSchedule`` (or its text).
        loss_reduction: how the training loss combines the per-sample cross-entropies
            CE_i of the model's logits (the output of its final ``nn.Linear``):
            ``"weighted_mean"`` (default; ``mean_i(w_i·CE_i)`` with any per-sample weights,
            including weights computed inside ``training_step``), ``"mean"`` or ``"sum"``.
            The output gradient of the final layer is c_i·(p_i − onehot(y_i)); c_i is read
            off it (weighted_mean) or known (1/N, 1), checked, and every ghost norm is
            divided by |c_i|, so the recorded value is the norm of the gradient of CE_i
            itself. If the check fails (another loss, label smoothing, logits transformed
            after the final Linear) the step is scored with the exact fallback, logged once.
            Samples with weight 0 (c_i = 0) contributed no gradient; they are scored by
            one extra exact pass over just those samples (same weights, RNG state
            restored), never reported as 0.

    ``numpy_on_cpu``: do the small [N, classes] arithmetic of that check in NumPy on the
    CPU (same result as the torch path, ~4x fewer microseconds).

    The fallback passes call ``pl_module(x)`` on the batch inputs (batch[0] or a dict
    key ``x``/``input``/``inputs``/``image``/``images``/``features``).
    """

    numpy_on_cpu = True

    def __init__(self, schedule: GrandSchedule | str, loss_reduction: str = "weighted_mean") -> None:
        if isinstance(schedule, str):
            schedule = GrandSchedule.parse(schedule)
        if loss_reduction not in ("weighted_mean", "mean", "sum"):
            raise ValueError(f"loss_reduction must be weighted_mean, mean or sum, got {loss_reduction!r}")
        self.schedule = schedule
        self.loss_reduction = loss_reduction
        self._module: nn.Module | None = None
        self._plan: _Plan | None = None
        self._capture: _Capture | None = None
        self._head_handle: Any = None
        self._head_input: Tensor | None = None
        self._rows: list[tuple[int, int, Tensor, Tensor]] = []
        self._pending: dict[str, Any] | None = None
        self._rank = 0
        self._permanent_fallback: str | None = None
        self._own_pass = False  # our extra forwards must not touch the head's ||h||²
        self._deferred: list[dict[str, Any]] = []
        self._deferred_bytes = 0
        self._defer_ok = True
        self._verified = 0
        self._batch_size: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_module=None, _plan=None, _capture=None, _head_handle=None, _head_input=None, _pending=None,
                     _deferred=[], _deferred_bytes=0)
        return state

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage != "fit":
            return
        self._module = pl_module
        self._rank = int(getattr(trainer, "global_rank", 0))
        self._plan = None
        head = None
        for module in pl_module.modules():
            if isinstance(module, nn.Linear):
                head = module
        if self._head_handle is not None:
            self._head_handle.remove()
        self._head_handle = None if head is None else head.register_forward_hook(self._head_hook)

    def _head_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._own_pass or not (torch.is_grad_enabled() and module.training):
            return
        if args and isinstance(args[0], Tensor):
            self._head_input = args[0]

    def last_layer_sqnorm(self) -> Tensor | None:
        """||h||² per sample of the final Linear's input for the current batch, or None
        (then the recorder leaves ``grand_last`` NaN): EL2N·sqrt(||h||²+1) is the exact
        gradient norm of that layer when its output is the logits."""
        h, self._head_input = self._head_input, None
        if h is None or h.dim() != 2 or (self._batch_size is not None and h.shape[0] != self._batch_size):
            return None
        with torch.no_grad():
            h = h.detach().float()
            return torch.linalg.vecdot(h, h)

    def _get_plan(self) -> _Plan:
        if self._plan is None:
            assert self._module is not None
            self._plan = _make_plan(self._module)
            self._capture = _Capture(self._plan)
        return self._plan

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if not self.schedule.init:
            return
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            _warn_once("init-no-dataset", "GraNd init+: the training dataloader has no dataset; skipped")
            return
        world, rank = int(getattr(trainer, "world_size", 1)), self._rank
        indices = list(range(rank, len(dataset), world))
        subset = torch.utils.data.Subset(dataset, indices)
        batch_size = getattr(loader, "batch_size", None) or 64
        plain = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=loader.collate_fn)
        device = next(pl_module.parameters()).device
        self._own_pass = True
        try:
            self._score_dataset(plain, pl_module, device)
        finally:
            self._own_pass = False
            self._head_input = None

    def _score_dataset(self, plain: Any, pl_module: nn.Module, device: torch.device) -> None:
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            for batch in plain:
                x, y, ids = _batch_parts(batch)
                if x is None or y is None or ids is None:
                    _warn_once("init-batch", "GraNd init+: batches need inputs, targets and sample ids; skipped")
                    return
                x, y = _to(x, device), y.to(device)
                norms = per_sample_grad_norms(pl_module, x, y)
                self._rows.append((-1, -1, ids.detach().cpu(), norms.detach().float().cpu()))

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        self._pending = None
        self._head_input = None
        x, y, ids = _batch_parts(batch)
        self._batch_size = None if y is None else int(y.shape[0])
        if not self.schedule.scores_epoch(int(trainer.current_epoch)):
            return
        if y is None or ids is None:
            _warn_once("batch", "GraNd: training batches need targets and sample ids; not recorded")
            return
        plan = self._get_plan()
        self._pending = {
            "epoch": int(trainer.current_epoch), "step": int(trainer.global_step),
            "x": x, "y": y, "ids": ids, "w": _batch_weights(batch),
        }
        if plan.fallback_reason is None and self._permanent_fallback is None:
            self._capture.arm()

    def on_after_backward(self, trainer: Any, pl_module: nn.Module) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        capture = self._capture
        armed = capture is not None and capture.armed
        if capture is not None:
            capture.disarm()
        try:
            if armed and self._can_defer() and self._defer(pending):
                return
            norms = self._score(pending, armed)
        finally:
            if capture is not None:
                capture.release()
        if norms is not None:
            self._rows.append((pending["epoch"], pending["step"], pending["ids"].detach().cpu(), norms))

    # -- deferred arithmetic -----------------------------------------------------------------
    #
    # Each step's ghost norms are computed right after its backward (holding the layers'
    # inputs and output gradients longer makes the allocator hand out fresh memory every
    # step, which costs more than it saves), but the per-sample loss-scale check and the
    # final sqrt/divide, dozens of tiny ops, run once for many steps in ``_flush`` (at
    # ``take_rows``, i.e. once per epoch, or when ``max_deferred_bytes`` is reached). What
    # needs this step's weights stays immediate: the first ``verify_steps`` scored steps
    # (the loss-form check with the exact fallback behind it) and steps whose batch carries
    # a weight of 0 (the extra exact pass). If a deferred step later fails the loss-form
    # check or shows a weight of 0 computed inside ``training_step``, its rows are dropped
    # (logged, never written wrong) and recording goes back to checking every step.

    deferred = True
    verify_steps = 2
    max_deferred_bytes = 16 * 2**20

    def _can_defer(self) -> bool:
        return (
            self.deferred and self._defer_ok and self._verified >= self.verify_steps
            and self._plan is not None and self._plan.fallback_reason is None and self._permanent_fallback is None
        )

    def _defer(self, pending: dict[str, Any]) -> bool:
        y: Tensor = pending["y"]
        n = y.shape[0]
        w = pending.get("w")
        if isinstance(w, Tensor) and not bool(w.all()):
            return False
        try:
            items = self._capture.take(n)
        except _NeedFallback:
            return False  # the immediate path detects it again and falls back
        z, g = self._capture.head()
        if z is None or g is None or z.dim() != 2 or z.shape[0] != n:
            return False
        total = None  # inputs and grads are detached: no autograd bookkeeping here
        for value in _apply_rules(self._plan, items).values():  # fresh tensors
            total = value if total is None else total.add_(value)
        # A zero total means a zero head gradient: a weight of 0 set inside training_step
        # (or p_y == 1 exactly). The immediate path scores it (extra exact pass if needed).
        if total is None or not bool(total.all()):
            return False
        self._deferred.append(
            {"epoch": pending["epoch"], "step": pending["step"], "ids": pending["ids"].detach(), "y": y.detach(),
             "total": total, "z": z, "g": g}
        )
        self._deferred_bytes += 3 * z.numel() * z.element_size()
        if self._deferred_bytes > self.max_deferred_bytes:
            self._flush()
        return True

    def _flush(self) -> None:
        entries, self._deferred, self._deferred_bytes = self._deferred, [], 0
        if not entries:
            return
        sizes = [int(e["y"].shape[0]) for e in entries]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        with torch.no_grad():
            z = torch.cat([e["z"] for e in entries])
            g = torch.cat([e["g"] for e in entries])
            y = torch.cat([e["y"] for e in entries])
            n_per_step = torch.repeat_interleave(torch.tensor(sizes), torch.tensor(sizes))
            try:
                c, ok = self._scale_and_check(z, g, y, n_per_step)
            except _NeedFallback as reason:
                self._defer_ok = False
                _warn_once("deferred-head", "GraNd: %s; %d deferred steps not recorded", reason, len(entries))
                return
            total = torch.cat([e["total"] for e in entries]).to(c.dtype)
            norms = (total.clamp_min_(0).sqrt_() / c.abs()).float().cpu()
            ok = ok.cpu()
            zero = (c == 0).cpu()
        if bool(ok.all()) and not bool(zero.any()):  # the usual case: one split, no per-step checks
            for entry, part in zip(entries, torch.split(norms, sizes)):
                self._rows.append((entry["epoch"], entry["step"], entry["ids"].cpu(), part))
            return
        for k, entry in enumerate(entries):
            sl = slice(offsets[k], offsets[k + 1])
            if not bool(ok[sl].all()):
                self._defer_ok = False
                _warn_once("deferred-loss", "GraNd: %s; a deferred step was not recorded, back to checking every step", self._loss_message())
                continue
            keep = ~zero[sl]
            if not bool(keep.all()):
                self._defer_ok = False
                _warn_once(
                    "deferred-zero",
                    "GraNd: samples with weight 0 set inside training_step were not recorded on a deferred step; "
                    "back to immediate scoring (with an exact pass for such samples)",
                )
            ids = entry["ids"].cpu()
            self._rows.append((entry["epoch"], entry["step"], ids[keep], norms[sl][keep]))

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:  # no on_after_backward (e.g. a skipped step)
            _warn_once("no-backward", "GraNd: a scheduled step ended without on_after_backward; not recorded")
            self._pending = None
        if self._capture is not None:
            self._capture.disarm()
            self._capture.release()

    def take_rows(self) -> dict[str, np.ndarray] | None:
        """Rows recorded since the last call (table ``grand``), or None."""
        self._flush()
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        counts = [len(ids) for _, _, ids, _ in rows]
        return {
            "epoch": np.repeat(np.asarray([r[0] for r in rows], dtype=np.int32), counts),
            "step": np.repeat(np.asarray([r[1] for r in rows], dtype=np.int64), counts),
            "sample_id": torch.cat([r[2] for r in rows]).long().numpy(),
            "grand": torch.cat([r[3] for r in rows]).float().numpy(),
            "rank": np.full(sum(counts), self._rank, dtype=np.int16),
        }

    # -- scoring ---------------------------------------------------------------------------

    def _score(self, pending: dict[str, Any], armed: bool) -> Tensor | None:
        y: Tensor = pending["y"]
        n = y.shape[0]
        plan = self._plan
        why = self._permanent_fallback or plan.fallback_reason
        if why is None and armed:
            try:
                with torch.no_grad():
                    layers = self._capture.layer_sqnorms(n)
                    scale = self._loss_scale(y)
                    if scale.device.type == "cpu" and all(v.device.type == "cpu" for v in layers.values()):
                        # tiny [N] arithmetic: NumPy costs ~1 µs per op where torch costs ~4
                        c = scale.numpy()
                        total = np.add.reduce([v.numpy() for v in layers.values()]) if layers else np.zeros(n)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            norms = torch.from_numpy(np.sqrt(total) / np.abs(c))
                    else:
                        total = None
                        for value in layers.values():  # fresh tensors: accumulate in place
                            total = value if total is None else total.add_(value)
                        if total is None:
                            total = torch.zeros(n, dtype=scale.dtype, device=scale.device)
                        norms = total.sqrt_().div_(scale.abs())
                    if not bool(scale.all()):  # weight-0 samples: no gradient to read
                        index = (scale == 0).nonzero().flatten()
                        extra = self._exact(pending, index)
                        if extra is None:
                            return None
                        norms[index] = extra.to(norms.dtype)
                self._verified += 1
                return norms.float().cpu()
            except _NeedFallback as reason:
                why = str(reason)
                if "ran more than once" in why or "functionally" in why:
                    self._permanent_fallback = why
        _warn_once(
            f"recording:{why}",
            "GraNd: ghost norms would not be exact (%s); scoring with the exact torch.func fallback (slower)",
            why,
        )
        norms = self._exact(pending, None)
        return None if norms is None else norms.float().cpu()

    def _exact(self, pending: dict[str, Any], index: Tensor | None) -> Tensor | None:
        """Exact norms via pl_module(x) on (a subset of) the batch; RNG state restored."""
        x, y = pending["x"], pending["y"]
        if x is None:
            _warn_once("no-inputs", "GraNd: cannot find the inputs in the batch for the exact pass; step not recorded")
            return None
        if index is not None:
            x = _index(x, index)
            y = y[index]
        module = self._module
        device = y.device
        self._own_pass = True
        try:
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                return per_sample_grad_norms(module, x, y).detach()
        finally:
            self._own_pass = False

    def _loss_scale(self, y: Tensor) -> Tensor:
        """c_i of this step (see ``_scale_and_check``); raises _NeedFallback if unchecked."""
        z, g = self._capture.head()
        c, ok = self._scale_and_check(z, g, y)
        if not bool(ok.all()):
            raise _NeedFallback(self._loss_message())
        return c

    def _loss_message(self) -> str:
        return (
            f"the loss is not {self.loss_reduction} cross-entropy of the final Linear's output "
            "(label smoothing, another loss, or transformed logits?)"
        )

    def _scale_and_check(self, z: Tensor | None, g: Tensor | None, y: Tensor, n_per_step: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(c, ok) with dLoss/dlogits_i = c_i·(softmax_i − onehot(y_i)).

        The final Linear's output z and output gradient g are read; for ``weighted_mean``
        c_i is fitted on the off-label entries (c·p_j, free of the cancellation in
        p_y − 1); ``ok_i`` requires ||g_i − c_i·r_i|| ≤ tol·||g_i|| + 10·tol·|c_i| (tol 1e-4
        in float32, 1e-9 in float64). ``n_per_step`` gives each row's batch size for
        ``mean`` when rows of several steps are checked together.
        """
        n = y.shape[0]
        if z is None or g is None or z.dim() != 2 or z.shape[0] != n or int(y.max()) >= z.shape[1]:
            raise _NeedFallback("the final Linear's output is not the [N, classes] logits")
        dtype = _compute_dtype(g)
        z = z.to(dtype)  # half / bfloat16 models: checked in float32
        g = g.to(dtype)
        if self.numpy_on_cpu and g.device.type == "cpu" and y.device.type == "cpu":
            return self._scale_and_check_numpy(z, g, y, n_per_step)
        yy = y.reshape(n, 1).long()
        p = torch.softmax(z, dim=1)
        off = p.scatter(1, yy, 0.0)
        if self.loss_reduction == "weighted_mean":
            # No off-label mass (p_y == 1 exactly): the gradient is 0 and any c != 0 will do.
            c = torch.nan_to_num(torch.linalg.vecdot(g, off).div_(torch.linalg.vecdot(off, off)), nan=1.0)
        elif self.loss_reduction == "mean":
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

    def _scale_and_check_numpy(self, z: Tensor, g: Tensor, y: Tensor, n_per_step: Tensor | None) -> tuple[Tensor, Tensor]:
        """``_scale_and_check`` on the CPU in NumPy (tiny ops cost ~1 µs instead of ~5)."""
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
        if self.loss_reduction == "weighted_mean":
            den = np.einsum("ij,ij->i", off, off)
            c = np.divide(np.einsum("ij,ij->i", gn, off), den, out=np.ones(n, dtype=work), where=den > 0)
        elif self.loss_reduction == "mean":
            c = (1.0 / n_per_step.numpy()).astype(work) if n_per_step is not None else np.full(n, 1.0 / n, dtype=work)
        else:
            c = np.ones(n, dtype=work)
        residual = gn - c[:, None] * off
        residual[rows, yn] += c * (1.0 - p[rows, yn])
        limit = 2 * tol2 * np.einsum("ij,ij->i", gn, gn) + 200 * tol2 * c * c
        ok = np.einsum("ij,ij->i", residual, residual) <= limit
        return torch.from_numpy(c), torch.from_numpy(ok)


def _batch_weights(batch: Any) -> Tensor | None:
    if isinstance(batch, Mapping):
        return batch.get("weight")
    if isinstance(batch, Sequence) and len(batch) >= 4 and isinstance(batch[3], Tensor):
        return batch[3]
    return None


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


def _index(x: Any, index: Tensor) -> Any:
    if isinstance(x, Tensor):
        return x[index.to(x.device)]
    if isinstance(x, (tuple, list)):
        return type(x)(_index(v, index) for v in x)
    raise _NeedFallback("unsupported input type")
