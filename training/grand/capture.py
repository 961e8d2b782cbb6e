"""Hooks that keep each ruled layer's input and output gradient during the ordinary backward.

While armed, a forward hook on every module of a ``Plan`` keeps the module's input and
puts a tensor hook on its output that receives the output gradient; a layer whose rule has
a ``tap`` (``nn.MultiheadAttention``) records its projections instead. The hooks only read:
``.grad`` and the optimizer step are the same as without them. ``take`` also does the
checks that need this step's forward: a module run more than once (reuse, activation
checkpointing), a module with gradients but no forward call (called functionally), and
inputs without the batch's dimension. Inputs are batch first ([N, ...]) or, for layers
that act on the last dim only, sequence first ([T, N, ...], torch's transformer layers
without ``batch_first``): the batch dim is the one of size N, and the plan's layout says
which when both are (sequence length = batch size).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from training.grand.attention import AttentionTap
from training.grand.plan import Captured, Plan, apply_rules
from training.grand.rules import NeedFallback


def _batch_dim(sequence_first: bool | None, g: Tensor, n: int) -> int | None:
    """0 or 1, the dim of ``g`` that is the batch; None when neither is of size n."""
    first = g.shape[0] == n
    second = sequence_first is not False and g.dim() == 3 and g.shape[1] == n  # [T, N, d]
    if first and second:
        return 1 if sequence_first else 0
    return 0 if first else (1 if second else None)


class Capture:
    """Forward hooks keep each ruled module's input; tensor hooks keep its output grad."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._handles: list[Any] = []
        self.reset()

    def reset(self) -> None:
        n = len(self.plan.modules)
        self.inputs: list[Tensor | None] = [None] * n
        self.outputs: list[Tensor | None] = [None] * n
        self.grads: list[Tensor | None] = [None] * n
        self.calls = [0] * n
        self.taps: list[AttentionTap | None] = [None] * n
        self.reused: str | None = None

    def arm(self) -> None:
        self.reset()
        if not hasattr(self, "_hook_functions"):
            self._hook_functions = [self._forward_hook(i) for i in range(len(self.plan.modules))]
        for index, ((name, module, rule), hook) in enumerate(zip(self.plan.modules, self._hook_functions)):
            if rule.tap is not None:
                tap = AttentionTap(name)
                self.taps[index] = tap
                self._handles.append(rule.tap(module, tap))
            else:
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

    def take(self, n: int) -> list[Captured]:
        """What every ruled module that reached the loss captured, batch first, after the
        checks that need this step's state; raises NeedFallback if not exact."""
        if self.reused is not None:
            raise NeedFallback(f"module {self.reused} ran more than once in one forward (reuse or checkpointing)")
        items = []
        for index, (name, module, rule) in enumerate(self.plan.modules):
            tap = self.taps[index]
            calls = self.calls[index] if tap is None else tap.calls
            if calls == 0:
                parameters = module.parameters(recurse=tap is not None)  # a tap covers children
                if any(p.requires_grad and p.grad is not None and bool(p.grad.any()) for p in parameters):
                    raise NeedFallback(
                        f"module {name} got gradients without its forward hook running (called functionally?)"
                    )
                continue
            if tap is not None:
                items += self._sites(tap, rule.sqnorm, n)
                continue
            g = self.grads[index]
            x = self.inputs[index]
            if g is None:
                continue  # ran, but its output did not reach the loss: zero gradient
            dim = _batch_dim(self.plan.sequence_first[index], g, n)
            if x is None or dim is None or x.dim() <= dim or x.shape[dim] != n:
                raise NeedFallback(f"module {name} has no batch dimension of size {n}")
            if dim == 1:
                x, g = x.movedim(1, 0), g.movedim(1, 0)
            items.append(Captured(name, rule.sqnorm, module, x.detach(), g.detach()))
        return items

    @staticmethod
    def _sites(tap: AttentionTap, sqnorm: Any, n: int) -> list[Captured]:
        if tap.calls > 1:
            raise NeedFallback(f"module {tap.path} ran more than once in one forward (reuse or checkpointing)")
        if tap.unsupported is not None:
            raise NeedFallback(tap.unsupported)
        items = []
        for site in tap.sites:
            if site.grad is None:
                continue
            if site.grad.shape[0] != n or site.inputs.shape[0] != n:
                raise NeedFallback(f"module {tap.path} has no batch dimension of size {n}")
            items.append(Captured(site.path, sqnorm, site, site.inputs, site.grad.detach()))
        return items

    def layer_sqnorms(self, n: int) -> dict[str, Tensor]:
        """Per-layer squared per-sample norms [n]; raises NeedFallback if not exact."""
        return apply_rules(self.plan, self.take(n))

    def head(self) -> tuple[Tensor | None, Tensor | None]:
        """(output, output grad) of the final Linear in this step."""
        index = self.plan.head_index
        if index is None or self.outputs[index] is None or self.grads[index] is None:
            return None, None
        return self.outputs[index].detach(), self.grads[index].detach()

    def release(self) -> None:
        self.reset()
