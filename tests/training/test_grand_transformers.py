"""GraNd for transformers against torch.func references: ``nn.MultiheadAttention``'s rule
(training/grand/attention.py), ``nn.TransformerEncoder`` in both layouts, tied embeddings
(training/grand/ties.py), ``training.gpt.GPT`` trained as a ``LanguageModel``, language models'
per-sequence loss, parameters used outside their layer (training/grand/uses.py), and the
fallback of a LightningModule without ``forward``."""

from __future__ import annotations

import copy
import itertools
import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grand_reference import (
    N,
    FakeTrainer,
    assert_close,
    check,
    fused_step,
    labels,
    make_net,
    randn,
    reference,
    reference_sequence,
)
from training.gpt import GPT, GPTConfig
from training.grand import GrandRecording, GrandSchedule
from training.grand.attention import AttentionTap, tap_attention
from training.grand.logs import forget_warnings
from training.grand.plan import make_plan
from training.module import LanguageModel


@pytest.fixture(autouse=True)
def _fresh_warnings():
    forget_warnings()
    yield
    forget_warnings()


def tokens(n, t, vocabulary, seed):
    return torch.randint(0, vocabulary, (n, t), generator=torch.Generator().manual_seed(seed))


# -- the tapped attention forward is torch's own ---------------------------------------------

ATTENTION_KINDS = ["self", "cross", "kdim"]
MASKS = ["none", "padding", "causal"]


def attention_case(kind, mask, batch_first, need_weights, dropout=0.0, add_zero_attn=False):
    """(module, args, kwargs) for one configuration; inputs batch first or sequence first."""
    torch.manual_seed(0)
    kdim = 5 if kind == "kdim" else None
    module = nn.MultiheadAttention(
        8, 2, dropout=dropout, batch_first=batch_first, kdim=kdim, vdim=kdim, add_zero_attn=add_zero_attn
    ).double()
    t, s = 4, (4 if kind == "self" else 6)
    query = randn(3, t, 8).double()
    memory = randn(3, s, kdim or 8).double() + 1
    if not batch_first:
        query, memory = query.transpose(0, 1), memory.transpose(0, 1)
    args = (query, query, query) if kind == "self" else (query, memory, memory)
    kwargs = {"need_weights": need_weights}
    if mask == "padding":
        kwargs["key_padding_mask"] = torch.tensor([[False] * (s - 1) + [True], [False] * s, [False] * (s - 2) + [True] * 2])
    if mask == "causal":
        kwargs["attn_mask"] = torch.triu(torch.ones(t, s, dtype=torch.bool), 1)
        kwargs["is_causal"] = kind == "self" and not need_weights
    return module, args, kwargs


def run_attention(module, args, kwargs, tap=None):
    module.zero_grad(set_to_none=True)
    handle = tap_attention(module, tap) if tap is not None else None
    torch.manual_seed(5)  # the same dropout masks
    try:
        output, weights = module(*args, **kwargs)
    finally:
        if handle is not None:
            handle.remove()
    loss = output.pow(2).sum() + (0 if weights is None else weights.sum())
    loss.backward()
    return output, weights, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_tapped_attention_output_and_gradients_equal_the_untapped_module(batch_first, need_weights):
    for kind, mask, dropout, zero in itertools.product(ATTENTION_KINDS, MASKS, [0.0, 0.3], [False, True]):
        module, args, kwargs = attention_case(kind, mask, batch_first, need_weights, dropout, zero)
        plain = run_attention(module, args, kwargs)
        tap = AttentionTap("attention")
        recorded = run_attention(module, args, kwargs, tap)
        assert tap.unsupported is None and tap.calls == 1, (kind, mask, tap.unsupported)
        assert torch.equal(plain[0], recorded[0]), (kind, mask, dropout, zero)
        assert (plain[1] is None) == (recorded[1] is None)
        assert plain[1] is None or torch.equal(plain[1], recorded[1])
        assert all(torch.equal(a, b) for a, b in zip(plain[2], recorded[2]))
    assert not module._forward_hooks and not module._forward_pre_hooks  # the handle removed its hooks


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
@pytest.mark.parametrize("batch_first", [True, False])
def test_recorded_sites_are_the_projections_batch_first(kind, batch_first):
    # each site's input and output gradient, batch first, give the projection's exact gradient:
    # the sum over samples and positions of g·xᵀ (and of g for the bias)
    module, args, kwargs = attention_case(kind, "padding", batch_first, need_weights=False)
    tap = AttentionTap("attention")
    run_attention(module, args, kwargs, tap)
    paths = [site.path for site in tap.sites]
    inner = {"self": 1, "cross": 2, "kdim": 3}[kind]  # packed once, q + kv, or q, k, v
    assert paths == ["attention"] * inner + ["attention.out_proj"]
    n = 3
    weight_grads = [site.grad.reshape(n, -1, site.grad.shape[-1]).flatten(0, 1).T
                    @ site.inputs.reshape(n, -1, site.inputs.shape[-1]).flatten(0, 1) for site in tap.sites]
    bias_grads = [site.grad.sum((0, 1)) for site in tap.sites]
    assert all(site.inputs.shape[0] == n and site.grad.shape[0] == n for site in tap.sites)
    torch.testing.assert_close(weight_grads[-1], module.out_proj.weight.grad)
    torch.testing.assert_close(bias_grads[-1], module.out_proj.bias.grad)
    if kind == "kdim":
        projections = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        for grad, weight in zip(weight_grads, projections):
            torch.testing.assert_close(grad, weight.grad)
    else:
        torch.testing.assert_close(torch.cat(weight_grads[:-1]), module.in_proj_weight.grad)
    torch.testing.assert_close(torch.cat(bias_grads[:-1]), module.in_proj_bias.grad)


def test_unbatched_attention_input_is_unsupported():
    module, args, kwargs = attention_case("self", "none", batch_first=True, need_weights=False)
    tap = AttentionTap("attention")
    run_attention(module, tuple(a[0] for a in args), kwargs, tap)
    assert "unbatched or nested inputs" in tap.unsupported
    assert tap.sites == []


class HandRolledAttention(nn.MultiheadAttention):
    """Computes attention itself, its in-projection by a matmul: no projection to record."""

    def forward(self, query, key, value, **kwargs):
        q, k, v = (query @ self.in_proj_weight.T + self.in_proj_bias).chunk(3, -1)
        context = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, -1) @ v
        return self.out_proj(context), None


class CopiedWeightAttention(nn.MultiheadAttention):
    """Hands torch's attention forward a copy of its in-projection weight (as a
    reparametrisation would), or with ``detached`` the weight's data without autograd: either
    way no F.linear call applies the parameter itself."""

    detached = False

    def forward(self, query, key, value, **kwargs):
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        weight = self.in_proj_weight.detach() if self.detached else self.in_proj_weight * 1.0
        output, _ = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, weight, self.in_proj_bias,
            None, None, False, 0.0, self.out_proj.weight, self.out_proj.bias, training=self.training, need_weights=False,
        )
        return output.transpose(0, 1), None


class DetachedWeightAttention(CopiedWeightAttention):
    detached = True


@pytest.mark.parametrize(
    "attention, reason",
    [(HandRolledAttention, "in_proj_weight used by matmul, not by F.linear"),
     (CopiedWeightAttention, "in_proj_weight used by mul, not by F.linear"),
     (DetachedWeightAttention, "attention weight's rows not each applied once by F.linear")],
)
def test_projection_not_recorded_is_unsupported_and_falls_back(caplog, attention, reason):
    tap = AttentionTap("attention")
    torch.manual_seed(0)
    run_attention(attention(6, 2, batch_first=True), (randn(3, 4, 6),) * 3, {}, tap)
    assert reason in tap.unsupported

    class Model(AttentionClassifier):
        def __init__(self):
            super().__init__()
            self.attention = attention(6, 2, batch_first=True)

    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(Model(), padded_inputs(), labels())  # exact through the fallback
    assert reason in caplog.text


# -- nn.MultiheadAttention: exact, no fallback -------------------------------------------------


class AttentionClassifier(nn.Module):
    """Linear embedding -> attention -> mean over positions -> head. Positions whose input
    is all zeros are padding (a key_padding_mask computed per sample)."""

    def __init__(self, kind="self", mask="none", batch_first=True, need_weights=False):
        super().__init__()
        self.kind, self.mask, self.batch_first, self.need_weights = kind, mask, batch_first, need_weights
        kdim = 5 if kind == "kdim" else None
        self.embed = nn.Linear(4, 6)
        self.memory = None if kind == "self" else nn.Linear(4, kdim or 6)
        self.attention = nn.MultiheadAttention(6, 2, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        t = x.shape[1]
        h = self.embed(x)
        memory = h if self.kind == "self" else self.memory(x.flip(1))
        kwargs = {"need_weights": self.need_weights}
        if self.mask == "padding":
            kwargs["key_padding_mask"] = (x == 0).all(-1)
        if self.mask == "causal":
            kwargs["attn_mask"] = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            kwargs["is_causal"] = self.kind == "self" and not self.need_weights
        if not self.batch_first:
            h, memory = h.transpose(0, 1), memory.transpose(0, 1)
        output = self.attention(h, memory, memory, **kwargs)[0]
        return self.head(output.mean(1 if self.batch_first else 0))


def padded_inputs(n=N, t=5):
    x = randn(n, t, 4)
    x[::2, -2:] = 0.0  # every other sample: its last two positions are padding
    return x


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("mask", MASKS)
def test_attention_rule_is_exact(caplog, batch_first, need_weights, mask):
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(AttentionClassifier("self", mask, batch_first, need_weights), padded_inputs(), labels())
    assert "fallback" not in caplog.text


@pytest.mark.parametrize("kind", ["cross", "kdim"])
def test_attention_rule_cross_attention_and_separate_weights(caplog, kind):
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(AttentionClassifier(kind, "padding", batch_first=False), padded_inputs(), labels())
    assert "fallback" not in caplog.text


def test_attention_reports_in_and_out_projection_as_layers():
    plan = make_plan(AttentionClassifier())
    assert [name for name, _, _ in plan.modules] == ["embed", "attention", "head"]  # out_proj: covered
    assert plan.fallback_reason is None


# -- nn.TransformerEncoder in both layouts --------------------------------------------------


class EncoderClassifier(nn.Module):
    def __init__(self, batch_first, norm_first=False):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8), enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.embed(x)
        padding = (x == 0).all(-1)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.encoder(h, src_key_padding_mask=padding)
        return self.head(h.mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("length", [5, N], ids=["T!=N", "T==N"])
def test_transformer_encoder_is_exact(caplog, batch_first, length):
    # T == N: the batch dim of the layers' [T, N, d] inputs comes from the encoder's layout
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(EncoderClassifier(batch_first, norm_first=length == N), padded_inputs(N, length), labels())
    assert "fallback" not in caplog.text


def test_transformer_encoder_fused_step_exact_and_bit_identical():
    torch.manual_seed(0)
    x, y = padded_inputs(8, 5).double(), labels(3, 8)
    weights = torch.linspace(0.5, 2, 8, dtype=torch.float64)

    def loss_fn(logits, y, w):
        return (w * F.cross_entropy(logits, y, reduction="none")).mean()

    torch.manual_seed(0)
    plain = EncoderClassifier(batch_first=False).double()
    torch.manual_seed(0)
    fused = EncoderClassifier(batch_first=False).double()
    loss_fn(plain(x), y, weights).backward()
    rows, _ = fused_step(fused, x, y, weights, loss_fn)
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a.grad, b.grad)
    torch.manual_seed(0)
    assert_close(torch.from_numpy(rows["grand"]), reference(EncoderClassifier(batch_first=False).double(), x, y), 1e-5)


# -- tied weights ------------------------------------------------------------------------


class TinyLM(nn.Module):
    """GPT-style: token + position embeddings, one causal attention block, and an output
    nn.Linear whose weight is the token embedding's (GPT-2's tie); token 0 is padding. With
    ``functional_head`` the output layer is ``F.linear(h, token.weight)`` instead (a tie the
    hooks cannot see)."""

    def __init__(self, vocabulary=11, width=8, length=7, functional_head=False):
        super().__init__()
        self.token = nn.Embedding(vocabulary, width, padding_idx=0)
        self.position = nn.Embedding(length, width)
        self.norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 16), nn.GELU(), nn.Linear(16, width))
        self.functional_head = functional_head
        if not functional_head:
            self.head = nn.Linear(width, vocabulary, bias=False)
            self.head.weight = self.token.weight
        self.register_buffer("causal", torch.triu(torch.ones(length, length, dtype=torch.bool), 1))

    def forward(self, x):
        n, t = x.shape
        h = self.token(x) + self.position(torch.arange(t).expand(n, t))
        a = self.norm(h)
        h = h + self.attention(a, a, a, attn_mask=self.causal[:t, :t], is_causal=True, need_weights=False)[0]
        h = h + self.mlp(h)
        return F.linear(h, self.token.weight) if self.functional_head else self.head(h)


def lm_batch(n=N, t=7, vocabulary=11):
    x = tokens(n, t, vocabulary, 1)
    y = tokens(n, t, vocabulary, 2)
    x[0, -2:] = 0  # padding tokens
    y[0, -2:] = -100  # not counted
    y[1] = -100  # a sequence with nothing counted: loss 0, GraNd 0
    return x, y


def test_tied_embeddings_language_model_is_exact(caplog):
    torch.manual_seed(0)
    x, y = lm_batch()
    model = TinyLM()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(model, x, y, sequences=True)
    assert "fallback" not in caplog.text
    assert make_plan(model).tie_paths  # the tie is combined, not sent to the fallback


class TwoTies(nn.Module):
    """Two Linear layers sharing a weight, and two Embeddings sharing another."""

    def __init__(self):
        super().__init__()
        self.left = nn.Embedding(9, 6)
        self.right = nn.Embedding(9, 6)
        self.right.weight = self.left.weight
        self.up = nn.Linear(6, 6)
        self.again = nn.Linear(6, 6, bias=False)
        self.again.weight = self.up.weight
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.left(x) + self.right(x.flip(1))
        return self.head(torch.tanh(self.again(torch.tanh(self.up(h)))).mean(1))


def test_linear_linear_and_embedding_embedding_ties_are_exact(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(TwoTies(), tokens(N, 4, 9, 3), labels())
    assert "fallback" not in caplog.text


def test_functional_tie_is_detected_and_exact(caplog):
    torch.manual_seed(0)
    x, y = lm_batch()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        check(TinyLM(functional_head=True), x, y, sequences=True)
    assert "token.weight is also used outside its layer" in caplog.text


# -- training.gpt.GPT trained as a LanguageModel -------------------------------------------


def test_gpt_language_model_steps_are_scored_without_fallback(caplog):
    # GPT's head is an nn.Linear sharing the token embedding's weight: the tie rule, two
    # attention blocks through the tap, a few optimizer steps of LanguageModel.training_step
    config = GPTConfig(vocab_size=11, sequence_length=7, d_model=8, num_heads=2, num_layers=2)
    torch.manual_seed(0)
    module = LanguageModel(GPT(config).double(), lr=1e-2)
    assert make_plan(module).fallback_reason is None and make_plan(module).tie_paths
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    recording = GrandRecording(GrandSchedule.parse("all"))
    trainer = FakeTrainer()
    recording.setup(trainer, module, "fit")
    expected = {}
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        for step in range(3):
            trainer.global_step = step
            x, y = lm_batch(8)
            x, y = (x + step) % 11, y.roll(step, 1)
            batch = {"x": x, "y": y, "sample_id": torch.arange(8) + 10 * step,
                     "weight": torch.linspace(0.5, 2, 8, dtype=torch.float64)}
            expected[step] = reference_sequence(copy.deepcopy(module.model), x, y)
            optimizer.zero_grad()
            recording.on_train_batch_start(trainer, module, batch, 0)
            outputs = module.training_step(batch, 0)
            outputs["loss"].backward()
            recording.on_after_backward(trainer, module)
            optimizer.step()
            recording.on_train_batch_end(trainer, module, outputs, batch, 0)
        rows = recording.take_rows()
    assert "fallback" not in caplog.text and "outside its layer" not in caplog.text
    for step, norms in expected.items():
        mask = rows["step"] == step
        assert rows["sample_id"][mask].tolist() == list(range(10 * step, 10 * step + 8))
        assert_close(torch.from_numpy(rows["grand"][mask]), norms, 1e-5)


# -- language models fused with the training step ------------------------------------------


def sequence_means(logits, y, w):
    token_losses = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100, reduction="none")
    counted = (y != -100).sum(1).clamp(min=1)
    return (w * token_losses.sum(1) / counted).mean()


def token_mean(logits, y, w):
    return F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100)


@pytest.mark.parametrize("loss_fn", [sequence_means, token_mean], ids=["weighted-sequence-means", "token-mean"])
def test_language_model_fused_step_is_exact_and_bit_identical(caplog, loss_fn):
    x, y = lm_batch(8)
    weights = torch.linspace(0.5, 2, 8, dtype=torch.float64)
    torch.manual_seed(0)
    plain = TinyLM().double()
    torch.manual_seed(0)
    fused = TinyLM().double()
    loss_fn(plain(x), y, weights).backward()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(fused, x, y, weights, loss_fn)
    assert "fallback" not in caplog.text
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a.grad, b.grad)
    torch.manual_seed(0)
    expected = reference_sequence(TinyLM().double(), x, y)
    assert float(expected[1]) == 0.0
    assert_close(torch.from_numpy(rows["grand"]), expected, 1e-5)  # the weight-0 sequence: exact pass


def test_functional_tie_in_a_fused_step_falls_back_exactly(caplog):
    x, y = lm_batch(8)
    torch.manual_seed(0)
    model = TinyLM(functional_head=True).double()
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(model, x, y, torch.ones(8, dtype=torch.float64), sequence_means)
    assert "used outside its layer" in caplog.text
    torch.manual_seed(0)
    assert_close(torch.from_numpy(rows["grand"]), reference_sequence(TinyLM(functional_head=True).double(), x, y), 1e-5)


# -- the fallback of a LightningModule without forward ---------------------------------------


class NoForward(L.LightningModule):
    """training_step calls self.net(x); no forward (a common style)."""

    def __init__(self):
        super().__init__()
        self.net = make_net()

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])


class NoForwardTwoParts(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(12, 4)
        self.head = nn.Linear(4, 3)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.head(self.body(batch[0])), batch[1])


def test_fallback_without_forward_calls_the_model_child(caplog):
    x, y = randn(8, 12).double(), labels(3, 8)
    module = NoForward().double()

    def smoothed(logits, y, w):  # not plain cross-entropy: every step goes to the fallback
        return F.cross_entropy(logits, y, label_smoothing=0.1)

    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(module, x, y, torch.ones(8, dtype=torch.float64), smoothed, call=module.net)
    assert "fallback" in caplog.text
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


def test_no_forward_and_no_single_model_child_fails_at_setup():
    with pytest.raises(ValueError, match=r"NoForwardTwoParts defines no forward\(\).*Add to NoForwardTwoParts: def forward"):
        fused_step(NoForwardTwoParts(), randn(8, 12), labels(3, 8), torch.ones(8), lambda logits, y, w: logits.sum())
