"""Ruled parameters used outside their own layer: the check that the hooks see every use.

Ghost norms see a parameter only where its layer runs (forward hooks, or a rule's tap). A
parameter of a ruled layer that is also used by a functional call elsewhere contributes
gradient the hooks never see, and the norms would be silently too small: an output layer
written ``F.linear(h, self.embedding.weight)`` (a tied embedding without an ``nn.Linear``), a
loss term on the weights. ``ParameterUses`` is a ``TorchFunctionMode`` that, while active,
notes the first differentiable torch call taking a ruled parameter while the innermost
running ruled layer is not that parameter's own (or the one whose rule covers it, e.g.
``nn.MultiheadAttention`` for its ``out_proj``). It adds Python work to every torch call, so
it watches one scored step per plan (``GrandRecording``) and each ``per_sample_grad_norms``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from training.grand.plan import Plan


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _differentiable(result: Any) -> bool:
    return any(t.requires_grad for t in _tensors(result))


class ParameterUses(TorchFunctionMode):
    """Watches ruled parameters while active (``with ParameterUses(plan) as uses:``, or
    ``start()``/``stop()`` around a training step); ``outside`` then says the first use
    outside the parameter's layer, or is None."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.allowed: dict[int, set[int]] = {}
        self.names: dict[int, str] = {}
        for name, module, rule in plan.modules:
            for attribute, p in module.named_parameters(recurse=bool(rule.covers)):
                self.allowed.setdefault(id(p), set()).add(id(module))
                self.names.setdefault(id(p), f"{name}.{attribute}" if name else attribute)
        self.modules = [module for _, module, _ in plan.modules]
        self.running: list[int] = []
        self.outside: str | None = None
        self._handles: list[Any] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.outside is None and _differentiable(result):
            inner = self.running[-1] if self.running else None
            for t in _tensors(args) + _tensors(kwargs):
                users = self.allowed.get(id(t))
                if users is not None and inner not in users:
                    self.outside = (
                        f"parameter {self.names[id(t)]} is also used outside its layer "
                        f"({getattr(func, '__name__', func)}: a functional call, e.g. a weight tied with F.linear)"
                    )
                    break
        return result

    def _enter(self, module: nn.Module, args: Any) -> None:
        self.running.append(id(module))

    def _leave(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.running and self.running[-1] == id(module):
            self.running.pop()

    def start(self) -> ParameterUses:
        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))
        self.__enter__()
        return self

    def stop(self) -> None:
        self.__exit__(None, None, None)
        for handle in self._handles:
            handle.remove()
        self._handles = []
