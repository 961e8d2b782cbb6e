"""The exact torch.func fallback (training/grand/fallback.py): the cases where ghost norms
would be wrong are detected, logged once, and scored exactly."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grand_reference import N, assert_close, check, labels, randn, reference_coupled
from training.grand import per_sample_grad_norms
from training.grand.logs import forget_warnings


@pytest.fixture(autouse=True)
def _fresh_warnings():
    forget_warnings()
    yield
    forget_warnings()


# -- fallbacks: detected, logged, exact ------------------------------------------------------


class TiedFunctionally(nn.Module):
    """The output layer is the embedding's weight used by F.linear: no layer sees that use."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(9, 6)
        self.hidden = nn.Linear(6, 6)

    def forward(self, tokens):
        return F.linear(torch.tanh(self.hidden(self.embedding(tokens).mean(1))), self.embedding.weight)


class SharedBias(nn.Module):
    """Two Linear layers share a bias (only shared weights of Linear / Embedding are combined)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(5, 5)
        self.second = nn.Linear(5, 5)
        self.second.bias = self.first.bias
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.second(torch.tanh(self.first(x)))))


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
        (TiedFunctionally, lambda: torch.randint(0, 9, (N, 4), generator=torch.Generator().manual_seed(0)), 9,
         "embedding.weight is also used outside its layer"),
        (SharedBias, lambda: randn(N, 5), 3, "shared by modules first, second (tied weights)"),
        (Reused, lambda: randn(N, 5), 3, "more than once"),
        (FreeParameter, lambda: randn(N, 5), 3, "without a ghost-norm rule"),
    ],
    ids=["tied-functionally", "shared-bias", "reused", "free-parameter"],
)
def test_fallback_is_detected_logged_and_exact(caplog, make, inputs, classes, reason):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(make(), inputs(), labels(classes))
    assert "fallback" in caplog.text and reason in caplog.text


class AttentionWithBiasKV(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.attention = nn.MultiheadAttention(6, 2, batch_first=True, add_bias_kv=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attention(h, h, h, need_weights=False)[0].mean(1))


def test_multihead_attention_with_bias_kv_falls_back(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(AttentionWithBiasKV(), randn(N, 5, 4), labels())
    assert "add_bias_kv" in caplog.text


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
