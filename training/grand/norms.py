"""GraNd of any classifier or language model outside training: ``per_sample_grad_norms``
and its per-layer form.

One extra forward and backward with the capture hooks armed (and ``uses.ParameterUses``
watching for parameters used outside their layer), then the ghost-norm rules; where they
would not be exact, the ``torch.func`` fallback (logged once per reason). Each sample's
loss is ``sample_loss.sample_losses``: its cross-entropy, or a sequence's mean token
cross-entropy.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from training.grand.capture import Capture
from training.grand.fallback import fallback_layer_sqnorms
from training.grand.logs import warn_once
from training.grand.plan import make_plan
from training.grand.rules import NeedFallback
from training.grand.sample_loss import sample_losses
from training.grand.uses import ParameterUses

logger = logging.getLogger(__name__)


def _layer_sqnorms(model: nn.Module, inputs: Any, targets: Tensor) -> dict[str, Tensor]:
    plan = make_plan(model)
    n = targets.shape[0]
    if plan.fallback_reason is None:
        capture = Capture(plan)
        params = [p for p in model.parameters() if p.requires_grad]
        capture.arm()
        uses = ParameterUses(plan).start()
        try:
            with torch.enable_grad():
                loss = sample_losses(model(inputs), targets).sum()
                torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            uses.stop()
            capture.disarm()
        try:
            if uses.outside is not None:
                raise NeedFallback(uses.outside)
            return capture.layer_sqnorms(n)
        except NeedFallback as reason:
            why = str(reason)
        finally:
            capture.release()
    else:
        why = plan.fallback_reason
    warn_once(
        logger,
        f"{type(model).__name__}:{why}",
        "GraNd: ghost norms would not be exact for %s (%s); using the exact torch.func fallback (slower)",
        type(model).__name__, why,
    )
    return fallback_layer_sqnorms(model, inputs, targets, plan.coupled)


def per_sample_grad_norms_by_layer(model: nn.Module, inputs: Any, targets: Tensor) -> dict[str, Tensor]:
    """Exact per-sample gradient norms of each layer (module path -> Tensor[N]).

    The gradient is that of each sample's own loss (``CE(model(inputs)_i, y_i)``, or for
    logits [N, T, V] and targets [N, T] the sequence's mean token cross-entropy) w.r.t. the trainable parameters owned directly by the module at that path (the names
    ``DynamicsRecorder`` uses for per-layer gradient norms). Layers whose gradient is zero
    for every sample may be missing. Leaves ``.grad`` and buffers untouched; uses the
    model in its current mode (dropout in train mode draws new masks).
    """
    return {name: sq.sqrt() for name, sq in _layer_sqnorms(model, inputs, targets).items()}


def per_sample_grad_norms(model: nn.Module, inputs: Any, targets: Tensor) -> Tensor:
    """GraNd (Paul et al. 2021): exact ||∇_θ CE(model(inputs)_i, y_i)||₂ per sample -> [N].

    Over all trainable parameters; per-sample loss, not the batch mean (for sequences, the
    mean token cross-entropy of sample i, ``sample_loss``). Works on any ``nn.Module``
    classifier or language model (no trainer needed); ghost norms where they are exact, the
    ``torch.func`` fallback elsewhere (see ``training.grand``). ``.grad`` is untouched.
    """
    layers = _layer_sqnorms(model, inputs, targets)
    if not layers:
        return torch.zeros(targets.shape[0])
    return torch.stack(list(layers.values())).sum(0).sqrt()
