"""Which modules of a model get ghost norms, and why a model needs the exact fallback.

``make_plan`` asks ``rules.rule_for`` about every module and adds the checks that need
the whole model: parameters shared by several modules (tied weights) and a model with
no ruled module at all. The checks that need one step's forward (reuse, functional
calls, batch dimension) are ``capture.Capture``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from training.grand.rules import SqNorm, rule_for


@dataclass
class Plan:
    """The ruled modules ``(path, module, rule)`` in ``named_modules`` order; the final
    ``nn.Linear`` among them (the head that produces the logits); why the whole model
    needs the fallback, if so, and whether that is because samples are coupled."""

    modules: list[tuple[str, nn.Module, SqNorm]] = field(default_factory=list)
    fallback_reason: str | None = None
    coupled: bool = False
    head: nn.Module | None = None
    head_index: int | None = None


def make_plan(model: nn.Module) -> Plan:
    plan = Plan()
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), []).append(name or type(module).__name__)
    for name, module in model.named_modules():
        choice = rule_for(module)
        if choice.coupled:
            plan.coupled = True
            plan.fallback_reason = choice.why_not
        elif choice.why_not is not None and plan.fallback_reason is None:
            plan.fallback_reason = f"{name or 'model'}: {choice.why_not}"
        if choice.sqnorm is not None:
            plan.modules.append((name, module, choice.sqnorm))
            if isinstance(module, nn.Linear):
                plan.head = module
                plan.head_index = len(plan.modules) - 1
    shared = [names for names in owners.values() if len(names) > 1]
    if shared and plan.fallback_reason is None:
        plan.fallback_reason = f"parameters shared by modules {', '.join(shared[0])} (tied weights)"
    if not plan.modules and plan.fallback_reason is None:
        plan.fallback_reason = "no module with a ghost-norm rule"
    return plan


def apply_rules(plan: Plan, items: list[tuple[int, Tensor, Tensor]]) -> dict[str, Tensor]:
    """Per-module squared per-sample norms from ``(module index, input, output grad)``."""
    result: dict[str, Tensor] = {}
    for index, x, g in items:
        name, module, sqnorm = plan.modules[index]
        result[name] = sqnorm(module, x, g)
    return result
