"""Every ghost-norm rule (training/grand/rules.py) against torch.func references, and the
registry as the single source of which layer types have a rule."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from grand_reference import N, Pool, check, labels, randn
from training.grand.logs import forget_warnings
from training.grand.plan import make_plan
from training.grand.rules import REGISTRY, LayerRule, RuleChoice, per_sample_sqnorm, registered_rule, rule_for


@pytest.fixture(autouse=True)
def _fresh_warnings():
    forget_warnings()
    yield
    forget_warnings()


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


def test_batchnorm_eval_without_trainable_parameters_is_no_layer():
    # no parameters of its own: not in the per-layer norms, and no fallback
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, affine=False), nn.ReLU(), nn.Linear(4, 3)).eval()
    check(model, randn(N, 5), labels())


# -- the registry ----------------------------------------------------------------------------

REGISTERED_LAYERS = [
    nn.Linear(3, 2), nn.Conv1d(2, 2, 3), nn.Conv2d(2, 2, 3), nn.Embedding(5, 3), nn.LayerNorm(3),
    nn.RMSNorm(3), nn.GroupNorm(1, 2), nn.InstanceNorm1d(2, affine=True), nn.BatchNorm2d(2).eval(),
    nn.MultiheadAttention(4, 2),
]


def test_every_registered_layer_type_has_a_rule():
    assert REGISTRY
    for layer_type, rule in REGISTRY.items():
        assert issubclass(layer_type, nn.Module)
        assert isinstance(rule, LayerRule) and callable(rule.sqnorm)
        assert registered_rule(layer_type) is rule
    # the layers above cover the whole registry (a new entry needs a layer here)
    assert {t for t in REGISTRY if any(isinstance(layer, t) for layer in REGISTERED_LAYERS)} == set(REGISTRY)


@pytest.mark.parametrize("layer", REGISTERED_LAYERS, ids=lambda layer: type(layer).__name__)
def test_rule_for_reads_the_registry(layer):
    choice = rule_for(layer)
    assert choice.sqnorm is registered_rule(type(layer)).sqnorm
    assert choice.why_not is None and not choice.coupled


def test_subclasses_use_their_registered_base_and_other_types_have_no_rule():
    class MyLinear(nn.Linear):
        pass

    assert rule_for(MyLinear(3, 2)).sqnorm is REGISTRY[nn.Linear].sqnorm
    transposed = rule_for(nn.ConvTranspose1d(2, 2, 3))  # a _ConvNd, but not a Conv1d
    assert transposed.sqnorm is None and transposed.why_not == "ConvTranspose1d has no ghost-norm rule"
    batch_statistics = rule_for(nn.BatchNorm1d(3))  # train mode
    assert batch_statistics.sqnorm is None and batch_statistics.coupled
    assert batch_statistics.why_not == "BatchNorm1d uses batch statistics (samples are coupled)"
    scaled = rule_for(nn.Embedding(5, 3, scale_grad_by_freq=True))
    assert scaled.sqnorm is None and "scale_grad_by_freq" in scaled.why_not
    assert rule_for(nn.ReLU()) == RuleChoice(None)


class Scale(nn.Module):
    """An elementwise scale whose parameter is called ``weight``; not in the registry."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, dim))

    def forward(self, x):
        return x * self.weight


def scale_sqnorm(module: Scale, x, g):
    """||∂CE_i/∂weight||² = ||g_i ∘ x_i||² for a [N, dim] input."""
    return per_sample_sqnorm(g * x)


def scale_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), Scale(4), nn.Tanh(), nn.Linear(4, 3))


def test_a_layer_type_not_in_the_registry_goes_to_the_exact_fallback(caplog):
    assert registered_rule(Scale) is None
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(scale_model(), randn(N, 5), labels())  # values equal torch.func's
    assert "fallback" in caplog.text and "Scale has no ghost-norm rule" in caplog.text


def test_one_registry_entry_gives_a_new_layer_type_ghost_norms(monkeypatch, caplog):
    monkeypatch.setitem(REGISTRY, Scale, LayerRule(scale_sqnorm))
    assert make_plan(scale_model()).fallback_reason is None
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(scale_model(), randn(N, 5), labels())
    assert "fallback" not in caplog.text


def test_removing_a_registry_entry_sends_that_layer_to_the_exact_fallback(monkeypatch, caplog):
    monkeypatch.delitem(REGISTRY, nn.LayerNorm)
    layer = nn.LayerNorm(6)
    with torch.no_grad():
        layer.weight.normal_()
    model = nn.Sequential(nn.Linear(4, 6), layer, Pool(), nn.Linear(6, 3))
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(model, randn(N, 5, 4), labels())
    assert "fallback" in caplog.text and "LayerNorm has no ghost-norm rule" in caplog.text
