"""per_sample_grad_norms / _by_layer (training/grand/norms.py) on whole models, against
torch.func references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grand_reference import N, check, labels, randn
from training.grand import per_sample_grad_norms
from training.grand.logs import forget_warnings


@pytest.fixture(autouse=True)
def _fresh_warnings():
    forget_warnings()
    yield
    forget_warnings()


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

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_grand import TinyTransformer as BenchTransformer

    torch.manual_seed(0)
    check(BenchTransformer(dim=16, heads=2), randn(N, 40), labels(10))


def test_grad_untouched_by_standalone_call():
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    assert all(p.grad is None for p in model.parameters())
    per_sample_grad_norms(model, randn(N, 5), labels())
    assert all(p.grad is None for p in model.parameters())
