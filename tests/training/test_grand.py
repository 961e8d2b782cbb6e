"""Exact per-sample gradient norms (training/grand.py) against torch.func references."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from training import grand as grand_module
from training.grand import (
    DEFAULT_SCHEDULE,
    GrandRecording,
    GrandSchedule,
    per_sample_grad_norms,
    per_sample_grad_norms_by_layer,
)

N = 6
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _fresh_warnings():
    grand_module._warned.clear()
    yield
    grand_module._warned.clear()


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


def check(model: nn.Module, x, y, rtol=RTOL):
    torch.manual_seed(1)
    model = model.double()
    x = x.double() if x.is_floating_point() else x
    assert_close(per_sample_grad_norms(model, x, y), reference(model, x, y), rtol)
    by_layer = per_sample_grad_norms_by_layer(model, x, y)
    expected: dict[str, torch.Tensor] = {}
    for name, sq in reference_by_param(model, x, y).items():
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


# -- every supported layer type ------------------------------------------------------------


def test_linear_2d():
    check(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), randn(N, 5), labels())


def test_linear_without_bias_and_frozen_parts():
    model = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 3))
    model[2].weight.requires_grad_(False)  # only its bias trains
    model[0].requires_grad_(False)
    check(model, randn(N, 5), labels())


@pytest.mark.parametrize("shape", [(N, 4, 6), (N, 2, 3, 6)])
def test_linear_sequence_gram(shape):
    # t*(din+dout) < din*dout: the Gram form
    check(nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Flatten(1, -2), Pool(), nn.Linear(16, 3)), randn(*shape), labels())


def test_linear_sequence_materialised():
    # long sequence, narrow layer: materialising sum_t g_t a_t^T is cheaper
    check(nn.Sequential(nn.Linear(3, 2), Pool(), nn.Linear(2, 3)), randn(N, 40, 3), labels())


CONV_CASES = [
    dict(),
    dict(stride=2, padding=2),
    dict(stride=1, padding=3, dilation=2, groups=2),
    dict(stride=3, padding=1, groups=4, bias=False),
    dict(padding="same", dilation=2, padding_mode="reflect"),
    dict(padding=1, padding_mode="circular", stride=2),
    dict(padding="valid", padding_mode="replicate"),
]


@pytest.mark.parametrize("kwargs", CONV_CASES, ids=str)
@pytest.mark.parametrize("channels", [4, 8])
def test_conv1d(kwargs, channels):
    model = nn.Sequential(nn.Conv1d(channels, 8, 3, **kwargs), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = randn(N, channels, 23)
    model(x)
    check(model, x, labels())


def test_conv1d_both_forms():
    # first layer of the MNIST-1D CNN shape (1 channel, long input) and a wide one
    model = nn.Sequential(
        nn.Conv1d(1, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(16, 16, 5, stride=2, padding=2, dilation=1), nn.ReLU(),
        nn.Flatten(), nn.LazyLinear(3),
    )
    x = randn(N, 1, 40)
    model(x)
    check(model, x, labels())


@pytest.mark.parametrize("kwargs", CONV_CASES, ids=str)
def test_conv2d(kwargs):
    model = nn.Sequential(nn.Conv2d(4, 8, (3, 2), **kwargs), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = randn(N, 4, 9, 8)
    model(x)
    check(model, x, labels())


class EmbeddingBagOfWords(nn.Module):
    def __init__(self, padding_idx=None):
        super().__init__()
        self.embedding = nn.Embedding(11, 5, padding_idx=padding_idx)
        self.head = nn.Linear(5, 3)

    def forward(self, tokens):
        return self.head(torch.tanh(self.embedding(tokens)).sum(1))


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding(padding_idx):
    tokens = torch.randint(0, 11, (N, 9), generator=torch.Generator().manual_seed(0))
    tokens[0, :4] = 0
    tokens[1] = 5  # repeated token
    check(EmbeddingBagOfWords(padding_idx), tokens, labels())


def test_embedding_single_token():
    model = nn.Sequential(nn.Embedding(7, 4), nn.Flatten(), nn.Linear(4, 3))
    check(model, torch.randint(0, 7, (N, 1), generator=torch.Generator().manual_seed(0)), labels())


@pytest.mark.parametrize(
    "norm",
    [
        lambda: nn.LayerNorm(6),
        lambda: nn.LayerNorm(6, bias=False),
        lambda: nn.RMSNorm(6),
    ],
    ids=["layernorm", "layernorm-nobias", "rmsnorm"],
)
def test_sequence_norms(norm):
    layer = norm()
    with torch.no_grad():
        layer.weight.normal_()  # not all ones: the test would not see a swapped term
    check(nn.Sequential(nn.Linear(4, 6), layer, Pool(), nn.Linear(6, 3)), randn(N, 5, 4), labels())


def test_layernorm_over_two_dims():
    check(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm((5, 6)), nn.Flatten(), nn.Linear(30, 3)), randn(N, 5, 4), labels())


@pytest.mark.parametrize(
    "norm",
    [lambda: nn.GroupNorm(2, 8), lambda: nn.InstanceNorm1d(8, affine=True)],
    ids=["groupnorm", "instancenorm"],
)
def test_channel_norms(norm):
    check(nn.Sequential(nn.Conv1d(3, 8, 3), norm(), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10, 3)), randn(N, 3, 12), labels())


def test_batchnorm_eval_mode_uses_ghost_norms(caplog):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2)
    model.eval()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(model, randn(N, 2, 6, 6), labels())
    assert "fallback" not in caplog.text


class TinyTransformer(nn.Module):
    """Embedding + position Embedding + attention from Linear layers + LayerNorm + head."""

    def __init__(self, vocab=13, dim=8, heads=2, tokens=5, classes=3):
        super().__init__()
        self.tokens, self.heads = tokens, heads
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(tokens, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        n, t = tokens.shape
        h = self.embed(tokens) + self.position(torch.arange(t).expand(n, t))
        q, k, v = self.qkv(self.norm1(h)).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = h + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, -1))
        h = h + self.fc2(F.gelu(self.fc1(self.norm2(h))))
        return self.head(h.mean(1))


def test_mixed_transformer():
    check(TinyTransformer(), torch.randint(0, 13, (N, 5), generator=torch.Generator().manual_seed(0)), labels())


def test_mixed_cnn_mlp_like_built_in_models():
    from training.models import build_model

    for name, shape in (("mlp", (40,)), ("cnn", (40,)), ("cnn", (8, 8))):
        torch.manual_seed(0)
        check(build_model(name, shape, 10), randn(N, *shape), labels(10))


def test_benchmark_transformer_is_exact():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_grand import TinyTransformer as BenchTransformer

    torch.manual_seed(0)
    check(BenchTransformer(dim=16, heads=2), randn(N, 40), labels(10))


# -- fallbacks: detected, logged, exact ------------------------------------------------------


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(9, 6)
        self.hidden = nn.Linear(6, 6)
        self.out = nn.Linear(6, 9)
        self.out.weight = self.embedding.weight  # weight tying

    def forward(self, tokens):
        return self.out(torch.tanh(self.hidden(self.embedding(tokens).mean(1))))


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.layer(torch.tanh(self.layer(x)))))


class FreeParameter(nn.Module):
    """A parameter used directly in forward: no ghost-norm rule."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(x * self.scale)


@pytest.mark.parametrize(
    "make, inputs, classes, reason",
    [
        (Tied, lambda: torch.randint(0, 9, (N, 4), generator=torch.Generator().manual_seed(0)), 9, "tied"),
        (Reused, lambda: randn(N, 5), 3, "more than once"),
        (FreeParameter, lambda: randn(N, 5), 3, "without a ghost-norm rule"),
    ],
    ids=["tied", "reused", "free-parameter"],
)
def test_fallback_is_detected_logged_and_exact(caplog, make, inputs, classes, reason):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(make(), inputs(), labels(classes))
    assert "fallback" in caplog.text and reason in caplog.text


class MHAClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.attention = nn.MultiheadAttention(6, 2, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attention(h, h, h, need_weights=False)[0].mean(1))


def test_multihead_attention_falls_back(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(MHAClassifier(), randn(N, 5, 4), labels())
    assert "MultiheadAttention" in caplog.text


def test_batchnorm_train_mode_couples_samples(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()
    x, y = randn(N, 5).double(), labels()
    before = model[1].running_mean.clone()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        norms = per_sample_grad_norms(model, x, y)
    assert "batch statistics" in caplog.text
    assert_close(norms, reference_coupled(model, x, y))
    assert torch.equal(model[1].running_mean, before)  # no side effect on running stats
    # logged once, not per call
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        per_sample_grad_norms(model, x, y)
    assert caplog.text == ""


def test_grad_untouched_by_standalone_call():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    assert all(p.grad is None for p in model.parameters())
    per_sample_grad_norms(model, randn(N, 5), labels())
    assert all(p.grad is None for p in model.parameters())


# -- fused with the training step ---------------------------------------------------------


class FakeTrainer:
    current_epoch = 0
    global_step = 0
    global_rank = 0
    world_size = 1


def fused_step(model, x, y, weights, loss_fn, schedule="all", loss_reduction="weighted_mean"):
    """One training step the way DynamicsRecorder drives GrandRecording; returns norms."""
    recording = GrandRecording(GrandSchedule.parse(schedule), loss_reduction=loss_reduction)
    trainer = FakeTrainer()
    recording.setup(trainer, model, "fit")
    batch = (x, y, torch.arange(100, 100 + len(y)), weights)
    recording.on_train_batch_start(trainer, model, batch, 0)
    loss = loss_fn(model(x), y, weights)
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


@pytest.mark.parametrize("reduction", ["weighted_mean", "mean", "sum"])
@pytest.mark.parametrize("numpy_on_cpu", [True, False])
def test_fused_norms_match_reference(reduction, numpy_on_cpu, monkeypatch):
    monkeypatch.setattr(GrandRecording, "numpy_on_cpu", numpy_on_cpu)
    x, y = randn(8, 12).double(), labels(3, 8)
    weights = torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0, 0.25, 1.0, 1.0], dtype=torch.float64)
    if reduction != "weighted_mean":
        weights = torch.ones(8, dtype=torch.float64)
    expected = reference(make_net(), x, y)
    rows, sqnorm = fused_step(make_net(), x, y, weights, LOSSES[reduction], loss_reduction=reduction)
    assert_close(torch.from_numpy(rows["grand"]), expected, 1e-5)  # stored as float32
    assert rows["sample_id"].tolist() == list(range(100, 108))
    assert rows["epoch"].dtype == np.int32 and rows["step"].dtype == np.int64
    assert rows["sample_id"].dtype == np.int64 and rows["grand"].dtype == np.float32 and rows["rank"].dtype == np.int16
    assert sqnorm is not None and sqnorm.shape == (8,)


def test_fused_online_weights_computed_inside_the_step():
    # weights that the batch does not carry (online reweighting): read off the gradient
    x, y = randn(8, 12).double(), labels(3, 8)

    def loss_fn(logits, y, w):
        losses = F.cross_entropy(logits, y, reduction="none")
        online = torch.softmax(losses.detach(), 0) * len(y)
        return (online * losses).mean()

    rows, _ = fused_step(make_net(), x, y, torch.ones(8, dtype=torch.float64), loss_fn)
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


def test_fused_zero_weight_samples_get_an_exact_extra_pass():
    x, y = randn(8, 12).double(), labels(3, 8)
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    rows, _ = fused_step(make_net(), x, y, weights, LOSSES["weighted_mean"])
    grand = torch.from_numpy(rows["grand"])
    assert bool((grand > 0).all())
    assert_close(grand, reference(make_net(), x, y), 1e-5)


def test_fused_other_loss_falls_back_and_stays_exact(caplog):
    x, y = randn(8, 12).double(), labels(3, 8)

    def smoothed(logits, y, w):
        return F.cross_entropy(logits, y, label_smoothing=0.1)

    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(make_net(), x, y, torch.ones(8, dtype=torch.float64), smoothed)
    assert "not weighted_mean cross-entropy" in caplog.text
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


def test_fused_mean_declared_but_weighted_is_caught(caplog):
    x, y = randn(8, 12).double(), labels(3, 8)
    weights = torch.linspace(0.5, 2, 8, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(make_net(), x, y, weights, LOSSES["weighted_mean"], loss_reduction="mean")
    assert "fallback" in caplog.text
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_grad_and_step_bit_identical(dtype):
    x, y = randn(8, 12).to(dtype), labels(3, 8)
    weights = torch.linspace(0.5, 2, 8, dtype=dtype)
    plain, fused = make_net(dtype), make_net(dtype)
    LOSSES["weighted_mean"](plain(x), y, weights).backward()
    fused_step(fused, x, y, weights, LOSSES["weighted_mean"])
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a.grad, b.grad)
    for model in (plain, fused):
        torch.optim.AdamW(model.parameters(), lr=0.1).step()
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a, b)


def test_fused_float32_close_to_float64_reference():
    x, y = randn(8, 12), labels(3, 8)
    rows, _ = fused_step(make_net(torch.float32), x, y, torch.ones(8), LOSSES["weighted_mean"])
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(torch.float64), x.double(), y), 1e-4)


def test_unscheduled_step_arms_nothing():
    model = make_net()
    recording = GrandRecording(GrandSchedule.parse("epochs:3"))
    trainer = FakeTrainer()
    recording.setup(trainer, model, "fit")
    x, y = randn(8, 12).double(), labels(3, 8)
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    recording.on_train_batch_start(trainer, model, (x, y, torch.arange(8)), 0)
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before  # only the head's hook
    LOSSES["mean"](model(x), y, None).backward()
    recording.on_after_backward(trainer, model)
    recording.on_train_batch_end(trainer, model, {}, (x, y, torch.arange(8)), 0)
    assert recording.take_rows() is None
    assert recording.last_layer_sqnorm() is not None  # grand_last is every step


def test_last_layer_sqnorm_gives_last_layer_grad_norm():
    model = make_net()
    x, y = randn(8, 12).double(), labels(3, 8)
    _, sqnorm = fused_step(model, x, y, torch.ones(8, dtype=torch.float64), LOSSES["mean"], schedule="off")
    torch.manual_seed(0)
    head = make_net()[-1]
    # EL2N * sqrt(||h||^2 + 1) equals the head's exact per-sample gradient norm
    features = make_net()[:-1](x)
    p = torch.softmax(head(features), 1)
    el2n = (p - F.one_hot(y, 3)).norm(dim=1)
    assert torch.allclose(sqnorm.double(), features.pow(2).sum(1).detach(), rtol=1e-6)
    head_only = per_sample_grad_norms_by_layer(make_net(), x, y)["6"]
    assert_close(el2n * torch.sqrt(features.pow(2).sum(1) + 1), head_only.detach())


# -- schedule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, scored, init",
    [
        ("every:1", [0, 1, 2, 3, 4, 5], False),
        ("every:3", [0, 3], False),
        ("first:2", [0, 1], False),
        ("epochs:0,5, 2", [0, 2, 5], False),
        ("steps", [0, 1, 2, 3, 4, 5], False),
        ("all", [0, 1, 2, 3, 4, 5], False),
        ("init+every:2", [0, 2, 4], True),
        (" INIT+first:1 ", [0], True),
        ("init", [], True),
        ("off", [], False),
        ("on", [e for e in range(6) if GrandSchedule.parse(DEFAULT_SCHEDULE).scores_epoch(e)], False),
        ("default", [0, 5], False),
        ("init+on", [0, 5], True),
    ],
)
def test_schedule_parse(text, scored, init):
    schedule = GrandSchedule.parse(text)
    assert [e for e in range(6) if schedule.scores_epoch(e)] == scored
    assert schedule.init is init


@pytest.mark.parametrize(
    "text",
    ["", "every", "every:", "every:0", "every:-1", "every:x", "first:0", "epochs:", "epochs:1,,2",
     "epochs:a", "epochs:-1", "sometimes", "init+", "init+init", "init+off", "every:1.5", "steps:3"],
)
def test_schedule_parse_rejects_bad_text(text):
    with pytest.raises(ValueError, match="GraNd schedule"):
        GrandSchedule.parse(text)


def test_cli_reports_bad_schedule(tmp_path, capsys):
    from training.cli import main

    code = main(["train", "--task", "mnist1d", "--model", "mlp", "--epochs", "1", "--grand", "every:0",
                 "--store", str(tmp_path / "store"), "--no-progress"])
    assert code != 0
    assert "trainmap: error:" in capsys.readouterr().err
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())


# -- a real Lightning run -----------------------------------------------------------------


@pytest.mark.slow
def test_lightning_run_writes_grand_rows(tmp_path):
    import lightning as L

    from store import Store
    from training import DynamicsRecorder
    from training.module import Classifier, IndexedDataset

    generator = np.random.default_rng(0)
    x = generator.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    ids = np.arange(40) * 7 + 3
    dataset = IndexedDataset(x, y, sample_ids=ids)
    dataset.weights[5] = 0.0  # a weight-0 sample: scored by the extra exact pass
    dataset.weights[6] = 2.5
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    initial = copy.deepcopy(net)
    module = Classifier(net, lr=1e-2)

    class Snapshot(L.Callback):
        """The weights and batch of one scheduled step, before its update."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 1:
                self.step = trainer.global_step
                self.model = copy.deepcopy(pl_module.model)
                self.batch = [t.clone() for t in batch]

    snapshot = Snapshot()
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", grand=GrandRecording(GrandSchedule.parse("init+epochs:0,2")))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, logger=False, callbacks=[snapshot, recorder],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, loader)

    store = Store(tmp_path / "store")
    import duckdb

    run_dir = store.run_dir(recorder.run_id)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{run_dir}/grand*.parquet')").df()
    assert sorted(rows["epoch"].unique().tolist()) == [-1, 0, 2]
    for epoch, group in rows.groupby("epoch"):
        assert len(group) == 40
        assert sorted(group["sample_id"].tolist()) == sorted(ids.tolist())
        assert np.isfinite(group["grand"]).all() and (group["grand"] > 0).all()
    init = rows[rows["epoch"] == -1].set_index("sample_id").loc[ids, "grand"].to_numpy()
    expected_init = per_sample_grad_norms(initial, torch.as_tensor(x), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(init, expected_init, rtol=1e-5)
    step_rows = rows[rows["step"] == snapshot.step].set_index("sample_id")
    bx, by, bids, _ = snapshot.batch
    expected = per_sample_grad_norms(snapshot.model, bx, by).numpy()
    np.testing.assert_allclose(step_rows.loc[bids.numpy(), "grand"].to_numpy(), expected, rtol=1e-5)

    from store import run_summary

    summary = run_summary(store, recorder.run_id)
    assert summary["grand"].notna().all() and summary["grand_last"].notna().all()
    # the summary averages scheduled epochs >= 0, never the initialisation rows
    mean = rows[rows["epoch"] >= 0].groupby("sample_id")["grand"].mean()
    np.testing.assert_allclose(summary.set_index("sample_id").loc[mean.index, "grand"], mean, rtol=1e-5)


# -- deferred checks (several steps) ---------------------------------------------------------


def run_steps(loss_fns, weights_list, verify_steps=1, reduction="weighted_mean"):
    """Train make_net() for len(loss_fns) fused steps; return (rows, expected per step)."""
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recording = GrandRecording(GrandSchedule.parse("all"), loss_reduction=reduction)
    recording.verify_steps = verify_steps
    trainer = FakeTrainer()
    recording.setup(trainer, model, "fit")
    expected = {}
    for step, (loss_fn, weights) in enumerate(zip(loss_fns, weights_list)):
        trainer.global_step = step
        n = 8 if step % 2 == 0 else 5  # a smaller last batch, as at the end of an epoch
        x, y = randn(n, 12).double() + step, labels(3, n)
        ids = torch.arange(n) + 10 * step
        batch = (x, y, ids, weights[:n])
        expected[step] = reference(copy.deepcopy(model), x, y)
        optimizer.zero_grad()
        recording.on_train_batch_start(trainer, model, batch, 0)
        loss_fn(model(x), y, weights[:n]).backward()
        recording.on_after_backward(trainer, model)
        optimizer.step()
        recording.on_train_batch_end(trainer, model, {}, batch, 0)
    return recording.take_rows(), expected


def rows_of(rows, step):
    mask = rows["step"] == step
    return torch.from_numpy(rows["grand"][mask]), rows["sample_id"][mask]


@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_deferred_steps_match_reference(reduction):
    weights = torch.linspace(0.5, 2, 8, dtype=torch.float64) if reduction == "weighted_mean" else torch.ones(8, dtype=torch.float64)
    loss = LOSSES[reduction]
    rows, expected = run_steps([loss] * 5, [weights] * 5, reduction=reduction)
    assert sorted(set(rows["step"].tolist())) == [0, 1, 2, 3, 4]
    for step, norms in expected.items():
        got, ids = rows_of(rows, step)
        assert ids.tolist() == (np.arange(len(norms)) + 10 * step).tolist()
        assert_close(got, norms, 1e-5)


def test_deferred_step_failing_the_loss_check_is_dropped_not_wrong(caplog):
    smoothed = lambda logits, y, w: F.cross_entropy(logits, y, label_smoothing=0.2)  # noqa: E731
    plain = LOSSES["weighted_mean"]
    ones = torch.ones(8, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, expected = run_steps([plain, plain, smoothed, plain, plain], [ones] * 5)
    assert "not weighted_mean cross-entropy" in caplog.text
    steps = set(rows["step"].tolist())
    assert 2 not in steps and {0, 1}.issubset(steps)
    for step in steps:
        assert_close(rows_of(rows, step)[0], expected[step], 1e-5)


def test_deferred_zero_weight_set_inside_the_step_is_scored_exactly():
    def zero_inside(logits, y, w):
        inner = torch.ones_like(w)
        inner[1] = 0.0
        return (inner * F.cross_entropy(logits, y, reduction="none")).mean()

    plain = LOSSES["weighted_mean"]
    ones = torch.ones(8, dtype=torch.float64)
    rows, expected = run_steps([plain, plain, zero_inside, zero_inside, plain], [ones] * 5)
    for step, norms in expected.items():
        got, ids = rows_of(rows, step)
        assert len(ids) == len(norms)
        assert_close(got, norms, 1e-5)


def test_deferred_batch_weight_zero_is_scored_immediately():
    weights = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    rows, expected = run_steps([LOSSES["weighted_mean"]] * 4, [weights] * 4)
    for step, norms in expected.items():
        assert_close(rows_of(rows, step)[0], norms, 1e-5)
