"""``nn.MultiheadAttention`` for ghost norms: its projections recorded as linear sites.

``nn.MultiheadAttention`` applies its in-projection (``in_proj_weight``/``in_proj_bias``, or
``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when ``kdim``/``vdim`` differ) and its
out-projection (``out_proj``) by ``F.linear`` calls inside ``F.multi_head_attention_forward``,
so forward hooks never see their inputs or output gradients. While GraNd's hooks are armed,
``tap_attention`` makes a ``ProjectionRecorder`` (a ``torch.overrides.TorchFunctionMode``)
active for the duration of the module's forward. Torch's own forward runs unchanged; the
mode steps into ``F.multi_head_attention_forward`` (``torch.overrides.redispatch_function``
runs its body with the mode still active) and records each ``F.linear`` call whose weight
is the module's projection weight, or a block of its rows, as a ``LinearSite``: its input
and, from a tensor hook, its output gradient, both batch first.

A projection y = x Wᵀ + b applied to [N, T, d] gives ∇W_i = Σ_t g_t x_tᵀ and ∇b_i = Σ_t g_t,
the sequence-``Linear`` rule. The packed weight's q, k and v rows are disjoint, so when they
are applied to different inputs (cross-attention) the per-sample squared norms of the sites
add up exactly. Dropout on the attention weights is part of the recorded step, so the norms
are those of the gradient the step actually took.

The recorder checks what it saw: every row of every projection weight applied exactly once,
each with its own block of the bias, to an input whose batch dim it can name (torch's
internal layout is sequence first, [T, N, d]; the out-projection's [T·N, d] rows are
accepted when the attention output is their [T, N, d] view), and no other differentiable
use of those parameters. Anything else (unbatched or nested inputs, a subclass with its own
forward, a torch version that computes the projections another way) leaves
``AttentionTap.unsupported`` set with the reason, and the step is scored by the exact
fallback.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode, redispatch_function


class LinearSite:
    """One projection applied inside a layer's forward: ``output = input·weightᵀ + bias``.

    ``path``: the module path its parameters belong to (per-layer norms use it);
    ``weight``/``bias``: whether they are trainable; ``inputs``/``grad``: batch first
    ``[N, T, d]`` (``grad`` is set by a tensor hook during the backward, or stays None
    when the output did not reach the loss).
    """

    __slots__ = ("path", "weight", "bias", "inputs", "grad")

    def __init__(self, path: str, weight: bool, bias: bool, inputs: Tensor) -> None:
        self.path = path
        self.weight = weight
        self.bias = bias
        self.inputs = inputs
        self.grad: Tensor | None = None


class AttentionTap:
    """What one armed ``nn.MultiheadAttention`` recorded in a step: its sites, how often it
    ran, and why its forward could not be recorded (None when it could)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.out_path = f"{path}.out_proj" if path else "out_proj"
        self.sites: list[LinearSite] = []
        self.calls = 0
        self.unsupported: str | None = None

    def fail(self, reason: str) -> None:
        """Note why this step's forward cannot be scored by ghost norms (the first reason)."""
        if self.unsupported is None:
            self.unsupported = f"MultiheadAttention {self.path or 'model'}: {reason}; expected torch's batched forward"


class Projection(NamedTuple):
    """A projection weight of the module: the layer path it is reported under, its bias
    (or None) and where its rows start in that bias (q/k/v weights share ``in_proj_bias``)."""

    weight: Tensor
    path: str
    bias: Tensor | None
    bias_offset: int


def _projections(module: nn.MultiheadAttention, tap: AttentionTap) -> list[Projection]:
    bias = module.in_proj_bias
    if module.in_proj_weight is not None:
        inner = [Projection(module.in_proj_weight, tap.path, bias, 0)]
    else:
        e = module.embed_dim
        weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        inner = [Projection(w, tap.path, bias, i * e) for i, w in enumerate(weights)]
    return inner + [Projection(module.out_proj.weight, tap.out_path, module.out_proj.bias, 0)]


def _root(t: Tensor) -> Tensor:
    return t if t._base is None else t._base


def _argument(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _tensors(values: Any) -> list[Tensor]:
    """The tensors among ``values`` and inside its lists and tuples (one level deep)."""
    found = []
    for value in values:
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found += [item for item in value if isinstance(item, Tensor)]
    return found


#: The parameters of ``nn.MultiheadAttention`` that only its projections may use.
WATCHED = frozenset(
    {"in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight", "out_proj.bias"}
)


class ProjectionRecorder(TorchFunctionMode):
    """Active during one ``nn.MultiheadAttention`` forward: records its projections in
    ``tap`` (see the module docstring); ``finish()`` checks that all of them were seen."""

    def __init__(self, module: nn.MultiheadAttention, tap: AttentionTap) -> None:
        super().__init__()
        self.tap = tap
        projections = _projections(module, tap)
        self.projections = {id(p.weight): p for p in projections}
        self.watched = {id(t): name for name, t in module.named_parameters() if name in WATCHED and t.requires_grad}
        self.rows: dict[int, list[tuple[int, int]]] = {key: [] for key in self.projections}
        self.batch_size: int | None = None
        self.flat: list[tuple[LinearSite, Tensor, Tensor]] = []  # [T·N, d] sites to check
        self.attended = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            return self._attention(func, types, args, kwargs)
        result = func(*args, **kwargs)
        if func is F.linear:
            self._linear(args, kwargs, result)
        elif self.tap.unsupported is None:
            self._other_use(func, args, kwargs, result)
        return result

    def _other_use(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        """A projection parameter in a differentiable call other than ``F.linear`` (or a view
        of it): gradient the sites would miss."""
        for t in _tensors(args) + _tensors(kwargs.values()):
            name = self.watched.get(id(_root(t)))
            if name is None:
                continue
            outputs = _tensors(result if isinstance(result, (tuple, list)) else (result,))
            if any(r.requires_grad and _root(r) is not _root(t) for r in outputs):
                self.tap.fail(f"{name} used by {getattr(func, '__name__', func)}, not by F.linear")
                return

    def _attention(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        inputs = [_argument(args, kwargs, i, name) for i, name in enumerate(("query", "key", "value"))]
        batched = all(isinstance(t, Tensor) and not t.is_nested and t.dim() == 3 for t in inputs)
        if not batched or self.attended:
            self.tap.fail("unbatched or nested inputs" if not batched else "attention computed twice in one forward")
            return func(*args, **kwargs)
        self.attended = True
        length, self.batch_size = inputs[0].shape[0], inputs[0].shape[1]
        try:
            with self:
                result = redispatch_function(func, types, args, kwargs)
        finally:
            self.batch_size = None
        self._check_flat(result[0], length)
        return result

    def _linear(self, args: tuple, kwargs: dict, output: Tensor) -> None:
        inputs = _argument(args, kwargs, 0, "input")
        weight = _argument(args, kwargs, 1, "weight")
        bias = _argument(args, kwargs, 2, "bias")
        projection = self.projections.get(id(_root(weight)))
        if projection is None:
            return  # not one of this module's weights
        if self.batch_size is None:
            self.tap.fail(f"{projection.path} weight applied outside F.multi_head_attention_forward")
            return
        whole = projection.weight
        offset = weight.storage_offset() - whole.storage_offset()
        row = whole.stride(0)
        if weight.dim() != 2 or weight.stride() != whole.stride() or weight.shape[1] != whole.shape[1] or offset % row:
            self.tap.fail(f"{projection.path} weight applied as a view this recorder does not know")
            return
        start = offset // row
        stop = start + weight.shape[0]
        self.rows[id(whole)].append((start, stop))
        if not self._bias_matches(projection, bias, start, stop):
            self.tap.fail(f"{projection.path} bias not applied with its weight rows")
            return
        site = LinearSite(
            projection.path,
            weight.requires_grad,
            bias is not None and bias.requires_grad,
            inputs.detach(),
        )
        n = self.batch_size
        if inputs.dim() == 3 and inputs.shape[1] == n:  # torch's layout, [T, N, d]
            site.inputs = site.inputs.transpose(0, 1)
            transpose = True
        elif inputs.dim() == 2 and inputs.shape[0] % n == 0:  # [T·N, d], checked in _check_flat
            self.flat.append((site, inputs, output))
            transpose = False
        else:
            self.tap.fail(f"{projection.path} input of shape {tuple(inputs.shape)} has no batch dim of size {n}")
            return
        if not output.requires_grad:
            return

        def keep(grad: Tensor) -> None:
            site.grad = grad.transpose(0, 1) if transpose else grad.reshape(-1, n, grad.shape[-1]).transpose(0, 1)

        output.register_hook(keep)
        self.tap.sites.append(site)

    @staticmethod
    def _bias_matches(projection: Projection, bias: Tensor | None, start: int, stop: int) -> bool:
        if projection.bias is None or bias is None:
            return projection.bias is None and bias is None
        return (
            _root(bias) is projection.bias
            and bias.dim() == 1
            and bias.stride() == (1,)
            and bias.storage_offset() - projection.bias.storage_offset() == projection.bias_offset + start
            and bias.shape[0] == stop - start
        )

    def _check_flat(self, attended: Tensor, length: int) -> None:
        """A [T·N, d] projection's rows are in [T, N] order when the attention output is
        their [T, N, d] view."""
        for site, inputs, output in self.flat:
            view = (
                isinstance(attended, Tensor)
                and attended.dim() == 3
                and attended.shape[0] * attended.shape[1] == inputs.shape[0] == output.shape[0]
                and attended.shape[0] == length
                and attended.data_ptr() == output.data_ptr()
                and attended.is_contiguous()
                and output.is_contiguous()
            )
            if not view:
                self.tap.fail(f"{site.path} input of shape {tuple(inputs.shape)} in an unknown row order")
                return
            site.inputs = site.inputs.view(length, -1, inputs.shape[-1]).transpose(0, 1)
        self.flat = []

    def finish(self) -> None:
        """After the forward: when gradients flow, every projection row was applied once."""
        if not torch.is_grad_enabled() or self.tap.unsupported is not None:
            return
        if not self.attended:
            self.tap.fail("its forward did not call F.multi_head_attention_forward")
            return
        for key, projection in self.projections.items():
            bounds = [0] + [edge for block in sorted(self.rows[key]) for edge in block] + [projection.weight.shape[0]]
            if len(bounds) == 2 or bounds[0::2] != bounds[1::2]:  # blocks must tile the rows
                self.tap.fail(f"{projection.path} weight's rows not each applied once by F.linear")
                return


class _Handle:
    """Undoes ``tap_attention``: removes its two hooks."""

    def __init__(self, *handles: Any) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def tap_attention(module: nn.MultiheadAttention, tap: AttentionTap) -> _Handle:
    """Record ``module``'s projections into ``tap`` on each forward until the returned
    handle's ``remove()``."""
    active: list[ProjectionRecorder] = []

    def enter(module: nn.Module, args: Any) -> None:
        tap.calls += 1
        recorder = ProjectionRecorder(module, tap)
        active.append(recorder)
        recorder.__enter__()

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if active:
            recorder = active.pop()
            recorder.__exit__(None, None, None)
            if any(p.requires_grad for p in module.parameters()):
                recorder.finish()

    return _Handle(module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True))
