"""Reading what ``DynamicsRecorder`` records off Lightning's objects: the logits a training
step returned, the layer that owns each parameter, the parameters' gradient norms and a
validation batch's sums.

Small functions of tensors, free of Lightning; the callback calls them from its hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from training.scores import correct, cross_entropy


def detached(tensor: Tensor) -> Tensor:
    """``tensor`` without its graph; the tensor itself when it has none (no new object)."""
    return tensor.detach() if tensor.requires_grad else tensor


def step_logits(outputs: Any) -> Tensor:
    """The logits a ``training_step`` returned (``{"loss": ..., "logits": ...}``)."""
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    raise ValueError(
        "DynamicsRecorder: training_step must return a dict with 'loss' and 'logits', e.g. "
        "return {'loss': loss, 'logits': logits}"
    )


def owning_layers(module: torch.nn.Module) -> tuple[list[str], list[int]]:
    """The layers (module paths) with trainable parameters, and for each trainable
    parameter the index of the layer that owns it."""
    layers: list[str] = []
    owner: list[int] = []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = name.rsplit(".", 1)[0] if "." in name else name
        if layer not in layers:
            layers.append(layer)
        owner.append(layers.index(layer))
    return layers, owner


def parameter_grad_norms(parameters: Sequence[torch.nn.Parameter]) -> list[Tensor]:
    """The L2 norm of each parameter's gradient (0 where it has none), as 0-d tensors on
    its device: one fused call and no host sync.

    The norms read every gradient value, which is why the recorder computes them every
    ``grad_norm_every_n_steps`` only; faster-looking alternatives (a dot per parameter,
    ``torch.cat`` first, ``inference_mode``) measured slower (benchmarks/results/recorder.md).
    """
    grads = [p.grad for p in parameters]
    try:
        return torch._foreach_norm(grads)
    except (TypeError, RuntimeError):  # a parameter without a gradient this step
        grads = [torch.zeros((), device=p.device) if g is None else g for p, g in zip(parameters, grads)]
        return torch._foreach_norm(grads)


def validation_sums(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """A validation batch's ``[loss_sum, correct_sum, count]`` (float64) and its per-label
    ``[correct, count]`` sums ``[2, classes]`` (float64), on the CPU."""
    with torch.no_grad():
        loss_sum = cross_entropy(logits, targets).double().sum().cpu()
        correct_sum = correct(logits, targets).sum().cpu()
        totals = torch.stack([loss_sum, correct_sum.double(), torch.tensor(len(targets), dtype=torch.float64)])
        classes = int(logits.shape[-1])
        labels = targets.long().reshape(-1).cpu()
        per_class = torch.stack([
            torch.bincount(labels, weights=correct(logits, targets).double().reshape(-1).cpu(), minlength=classes),
            torch.bincount(labels, minlength=classes).double(),
        ])
    return totals, per_class
