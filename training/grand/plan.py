"""Which modules of a model get ghost norms, and why a model needs the exact fallback.

``make_plan`` asks ``rules.rule_for`` about every module and adds the checks that need
the whole model: parameters shared by several modules (tied weights: exact through
``ties`` when every user is a ``Linear`` or ``Embedding`` sharing its ``weight``, the
fallback otherwise), modules whose parameters a parent's rule already covers
(``nn.MultiheadAttention.out_proj``), the layout of inputs inside torch's transformer
layers (sequence first unless ``batch_first``), and a model with no ruled module at all.
The checks that need one step's forward (reuse, functional calls, batch dimension) are
``capture.Capture``'s; ``apply_rules`` turns what it captured into per-layer norms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import Tensor, nn

from training.grand.rules import LayerRule, SqNorm, rule_for
from training.grand.ties import OuterSum, tied_sqnorm, untied_sqnorm, weight_sum_for


class Captured(NamedTuple):
    """One ruled thing of one step: the layer path its norm is reported under, its rule,
    the module (or recorded site) the rule reads, its input and output grad (batch first)."""

    path: str
    sqnorm: SqNorm
    layer: Any
    inputs: Tensor
    grad: Tensor


@dataclass
class Plan:
    """The ruled modules ``(path, module, rule)`` in ``named_modules`` order and, per module,
    whether its input is sequence first (True), batch first (False) or unknown (None); the
    final ``nn.Linear`` among them (the head that produces the logits); the modules that
    share a weight (``id(module) -> id(weight)``) and the layer path each shared weight is
    reported under; why the whole model needs the fallback, if so, and whether that is
    because samples are coupled."""

    modules: list[tuple[str, nn.Module, LayerRule]] = field(default_factory=list)
    sequence_first: list[bool | None] = field(default_factory=list)
    tied: dict[int, int] = field(default_factory=dict)
    tie_paths: dict[int, str] = field(default_factory=dict)
    fallback_reason: str | None = None
    coupled: bool = False
    head: nn.Module | None = None
    head_index: int | None = None


def _attention_layout(module: nn.Module) -> bool | None:
    """Sequence first (True) or batch first (False) when ``module`` is a transformer layer
    (a ``self_attn`` attention) or a stack of them (``layers``); None otherwise."""
    attention = getattr(module, "self_attn", None)
    if attention is None:
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            attention = getattr(layers[0], "self_attn", None)
    if isinstance(attention, nn.MultiheadAttention):
        return not attention.batch_first
    return None


def _layouts(model: nn.Module) -> dict[str, bool | None]:
    """Each module path -> the layout of its nearest transformer-layer ancestor (or itself)."""
    layouts: dict[str, bool | None] = {}
    for name, module in model.named_modules():
        own = _attention_layout(module)
        parent = name.rpartition(".")[0] if name else None
        layouts[name] = own if own is not None else (layouts.get(parent) if parent is not None else None)
    return layouts


def make_plan(model: nn.Module) -> Plan:
    plan = Plan()
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for name, module in model.named_modules():
        for attribute, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), []).append((name or type(module).__name__, module, attribute))
    layouts = _layouts(model)
    covered: set[str] = set()
    for name, module in model.named_modules():
        if name in covered:
            continue
        choice = rule_for(module)
        if choice.coupled:
            plan.coupled = True
            plan.fallback_reason = choice.why_not
        elif choice.why_not is not None and plan.fallback_reason is None:
            plan.fallback_reason = f"{name or 'model'}: {choice.why_not}"
        if choice.rule is not None:
            covered.update(f"{name}.{child}" if name else child for child in choice.rule.covers)
            plan.modules.append((name, module, choice.rule))
            plan.sequence_first.append(layouts.get(name) if choice.rule.any_leading else False)
            if isinstance(module, nn.Linear):
                plan.head = module
                plan.head_index = len(plan.modules) - 1
    ruled = {id(module) for _, module, _ in plan.modules}
    for weight_id, users in owners.items():
        if len(users) < 2 or plan.fallback_reason is not None:
            continue
        if all(attribute == "weight" and id(module) in ruled and weight_sum_for(module) is not None for _, module, attribute in users):
            for _, module, _ in users:
                plan.tied[id(module)] = weight_id
            plan.tie_paths[weight_id] = users[0][0]
        else:
            plan.fallback_reason = f"parameters shared by modules {', '.join(user[0] for user in users)} (tied weights)"
    if not plan.modules and plan.fallback_reason is None:
        plan.fallback_reason = "no module with a ghost-norm rule"
    return plan


def apply_rules(plan: Plan, items: list[Captured]) -> dict[str, Tensor]:
    """Per-layer squared per-sample norms (layer path -> [N]) from one step's captures."""
    result: dict[str, Tensor] = {}
    shared: dict[int, list[OuterSum]] = {}

    def add(path: str, value: Tensor) -> None:
        result[path] = value if path not in result else result[path] + value

    for item in items:
        weight_id = plan.tied.get(id(item.layer))
        if weight_id is None:
            add(item.path, item.sqnorm(item.layer, item.inputs, item.grad))
            continue
        shared.setdefault(weight_id, []).append(weight_sum_for(item.layer)(item.layer, item.inputs, item.grad))
        rest = untied_sqnorm(item.layer, item.inputs, item.grad)
        if rest is not None:
            add(item.path, rest)
    for weight_id, sums in shared.items():
        add(plan.tie_paths[weight_id], tied_sqnorm(sums))
    return result
