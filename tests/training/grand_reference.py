"""Shared by the GraNd tests (tests/training/test_grand_*.py): torch.func references,
small inputs, and one training step driven the way DynamicsRecorder drives GrandRecording."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from training.grand import GrandRecording, GrandSchedule, per_sample_grad_norms, per_sample_grad_norms_by_layer

N = 6
RTOL = 1e-5


def reference_by_param(model: nn.Module, x, y) -> dict[str, torch.Tensor]:
    """Per-sample squared norms per parameter with vmap(grad) of each sample alone."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, (p, buffers), (xi.unsqueeze(0),)), yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0), randomness="same")(params, x, y)
    return {k: g.flatten(1).pow(2).sum(1) for k, g in grads.items()}


def reference(model, x, y) -> torch.Tensor:
    return torch.stack(list(reference_by_param(model, x, y).values())).sum(0).sqrt()


def reference_sequence_by_param(model: nn.Module, x, y, ignore_index: int = -100) -> dict[str, torch.Tensor]:
    """Per-sample squared norms per parameter of each sequence's mean token cross-entropy
    (targets ``ignore_index`` not counted, 0 for a sequence without counted tokens), by
    vmap(grad) of each sequence alone; written out with log_softmax, not the code under test."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.clone() for k, v in model.named_buffers()}

    def loss(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))[0]  # [T, V]
        counted = yi != ignore_index
        token_losses = -torch.log_softmax(logits, dim=-1).gather(1, yi.clamp_min(0).unsqueeze(1)).squeeze(1)
        return (token_losses * counted).sum() / counted.sum().clamp_min(1)

    grads = vmap(grad(loss), in_dims=(None, 0, 0), randomness="same")(params, x, y)
    return {k: g.flatten(1).pow(2).sum(1) for k, g in grads.items()}


def reference_sequence(model, x, y) -> torch.Tensor:
    return torch.stack(list(reference_sequence_by_param(model, x, y).values())).sum(0).sqrt()


def reference_coupled(model, x, y) -> torch.Tensor:
    """Gradient of sample i's loss as computed in the whole batch (batch statistics)."""
    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    losses = F.cross_entropy(model(x), y, reduction="none")
    norms = []
    for i in range(len(y)):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True)
        norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
    return torch.stack(norms)


def assert_close(actual, expected, rtol=RTOL):
    actual, expected = actual.double(), expected.double()
    error = ((actual - expected).abs() / expected.abs().clamp_min(1e-12)).max().item()
    assert error <= rtol, f"max relative error {error:.3g} > {rtol}"


def check(model: nn.Module, x, y, rtol=RTOL, sequences=False):
    """GraNd and per-layer norms of ``model`` (in float64) against the torch.func reference:
    classification, or with ``sequences`` logits [N, T, V] and targets [N, T]."""
    torch.manual_seed(1)
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    by_param = (reference_sequence_by_param if sequences else reference_by_param)(model, x, y)
    assert_close(per_sample_grad_norms(model, x, y), torch.stack(list(by_param.values())).sum(0).sqrt(), rtol)
    by_layer = per_sample_grad_norms_by_layer(model, x, y)
    expected: dict[str, torch.Tensor] = {}
    for name, sq in by_param.items():
        layer = name.rsplit(".", 1)[0] if "." in name else name
        expected[layer] = expected.get(layer, 0) + sq
    assert set(by_layer) == set(expected)
    for layer, sq in expected.items():
        assert_close(by_layer[layer], sq.sqrt(), rtol)


def labels(num_classes=3, n=N):
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(3))


def randn(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


class Pool(nn.Module):
    """Mean over a sequence dim followed by nothing else: lets 3-D layers feed a head."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.mean(self.dim)


# -- one fused training step ------------------------------------------------------------------


class FakeTrainer:
    current_epoch = 0
    global_step = 0
    global_rank = 0
    world_size = 1


def fused_step(model, x, y, weights, loss_fn, schedule="all", loss_reduction="weighted_mean", call=None):
    """One training step the way DynamicsRecorder drives GrandRecording; returns norms.
    ``call(x)`` gives the logits (default ``model(x)``, as a ``training_step`` would)."""
    recording = GrandRecording(GrandSchedule.parse(schedule), loss_reduction=loss_reduction)
    trainer = FakeTrainer()
    recording.setup(trainer, model, "fit")
    batch = (x, y, torch.arange(100, 100 + len(y)), weights)
    recording.on_train_batch_start(trainer, model, batch, 0)
    loss = loss_fn((call or model)(x), y, weights)
    loss.backward()
    recording.on_after_backward(trainer, model)
    recording.on_train_batch_end(trainer, model, {"loss": loss}, batch, 0)
    sqnorm = recording.last_layer_sqnorm()
    rows = recording.take_rows()
    return rows, sqnorm


LOSSES = {
    "weighted_mean": lambda logits, y, w: (w * F.cross_entropy(logits, y, reduction="none")).mean(),
    "mean": lambda logits, y, w: F.cross_entropy(logits, y),
    "sum": lambda logits, y, w: F.cross_entropy(logits, y, reduction="sum"),
}


def make_net(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Unflatten(1, (1, 12)), nn.Conv1d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(24, 8), nn.LayerNorm(8), nn.Linear(8, 3),
    ).to(dtype)
