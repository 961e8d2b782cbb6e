"""The exact, slower path: per-sample gradient norms with ``torch.func``.

Used where ghost norms would be wrong (``plan.Plan.fallback_reason``, or a check in
``capture.Capture.take`` failed). Independent samples: ``functional_call`` + ``vmap(grad)``
of each sample's own loss (``sample_loss.sample_losses``). Samples coupled through batch
statistics: the rows of the Jacobian of the batch's per-sample losses, i.e. the gradient of
sample i's loss as computed in its batch.

The fallback calls a model on the batch inputs; ``model_for_inputs`` says which: the module
itself when it defines ``forward``, else (a LightningModule whose ``training_step`` calls
``self.net(x)``) its one child that holds every trainable parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.grand.rules import per_sample_sqnorm
from training.grand.sample_loss import sample_losses


def _defines_forward(module: nn.Module) -> bool:
    """Whether ``module``'s class (not ``nn.Module`` or Lightning's base) defines ``forward``."""
    for cls in type(module).__mro__:
        if "forward" in cls.__dict__:
            return cls is not nn.Module and not cls.__module__.startswith(("lightning.", "pytorch_lightning."))
    return False


def model_for_inputs(module: nn.Module) -> nn.Module:
    """The module the fallback calls on the batch inputs to get the logits: ``module`` when
    it defines ``forward``, else its one direct child holding all its trainable parameters.
    Raises ``ValueError`` saying what to add when there is neither."""
    if _defines_forward(module):
        return module
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    for child in module.children():
        if trainable and {id(p) for p in child.parameters() if p.requires_grad} == trainable:
            return child
    name = type(module).__name__
    raise ValueError(
        f"GraNd: {name} defines no forward() and no single child module holds all its trainable parameters, "
        f"so the exact fallback cannot compute the logits from a batch's inputs. Add to {name}: "
        "def forward(self, x): return <the model call your training_step makes on the batch inputs>"
    )


def _layer_of(parameter_name: str) -> str:
    return parameter_name.rsplit(".", 1)[0] if "." in parameter_name else parameter_name


def fallback_layer_sqnorms(
    model: nn.Module, inputs: Tensor, targets: Tensor, coupled: bool, chunk: int = 64
) -> dict[str, Tensor]:
    """Exact per-sample squared norms per layer via torch.func (no side effects).

    Independent samples: ``vmap(grad)`` of each sample's own loss alone. Coupled
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
            sq = per_sample_sqnorm(value.detach())
            if layer not in layers:
                layers[layer] = torch.zeros(n, dtype=sq.dtype, device=sq.device)
            layers[layer][sl] += sq

    with torch.enable_grad():
        if not coupled:
            def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
                out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
                return sample_losses(out, y.unsqueeze(0)).sum()

            per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")
            for start in range(0, n, chunk):
                sl = slice(start, min(start + chunk, n))
                add(per_sample(params, inputs[sl], targets[sl]), sl)
        else:
            # Plain autograd on a functional forward (buffer clones absorb the running-stat
            # updates), then one backward per sample, batched with vmap where possible.
            leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
            out = functional_call(model, (leaves, buffers), (inputs,))
            values = sample_losses(out, targets)
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
