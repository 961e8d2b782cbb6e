"""Hooks that keep each ruled layer's input and output gradient during the ordinary backward.

While armed, a forward hook on every module of a ``Plan`` keeps the module's input and
puts a tensor hook on its output that receives the output gradient. The hooks only read:
``.grad`` and the optimizer step are the same as without them. ``take`` also does the
checks that need this step's forward: a module run more than once (reuse, activation
checkpointing), a module with gradients but no forward call (called functionally), and
inputs without the batch's leading dimension.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from training.grand.plan import Plan, apply_rules
from training.grand.rules import NeedFallback


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
        after the checks that need this step's state; raises NeedFallback if not exact."""
        if self.reused is not None:
            raise NeedFallback(f"module {self.reused} ran more than once in one forward (reuse or checkpointing)")
        items = []
        for index, (name, module, _) in enumerate(self.plan.modules):
            g = self.grads[index]
            x = self.inputs[index]
            if self.calls[index] == 0:
                for p in module.parameters(recurse=False):
                    if p.requires_grad and p.grad is not None and bool(p.grad.any()):
                        raise NeedFallback(
                            f"module {name} got gradients without its forward hook running (called functionally?)"
                        )
                continue
            if g is None:
                continue  # ran, but its output did not reach the loss: zero gradient
            if x is None or g.shape[0] != n or x.shape[0] != n:
                raise NeedFallback(f"module {name} has no leading batch dimension of size {n}")
            items.append((index, x.detach(), g.detach()))
        return items

    def layer_sqnorms(self, n: int) -> dict[str, Tensor]:
        """Per-module squared per-sample norms [n]; raises NeedFallback if not exact."""
        return apply_rules(self.plan, self.take(n))

    def head(self) -> tuple[Tensor | None, Tensor | None]:
        """(output, output grad) of the final Linear in this step."""
        index = self.plan.head_index
        if index is None or self.outputs[index] is None or self.grads[index] is None:
            return None, None
        return self.outputs[index].detach(), self.grads[index].detach()

    def release(self) -> None:
        self.reset()
