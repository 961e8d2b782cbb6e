"""The ``gpt`` model and its LightningModule: causal, tied, per-sequence losses, batches
the recorder reads (groups by name)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from training import pydoc_lm
from training.batch import parse_batch
from training.gpt import GPT, GPTConfig
from training.groups import group_tensor
from training.models import build_model
from training.module import LanguageModel, SequenceDataset, sequence_losses
from training.recording_outputs import IGNORE_INDEX, output_kind

SMALL = GPTConfig(vocab_size=256, sequence_length=16, d_model=32, num_heads=4, num_layers=2)


def test_output_at_t_does_not_depend_on_inputs_after_t():
    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    tokens = torch.randint(0, 256, (3, 16))
    with torch.no_grad():
        logits = model(tokens)
        for t in (0, 5, 14):
            changed = tokens.clone()
            changed[:, t + 1:] = torch.randint(0, 256, changed[:, t + 1:].shape)
            other = model(changed)
            torch.testing.assert_close(other[:, : t + 1], logits[:, : t + 1], rtol=1e-5, atol=1e-5)
            assert not torch.allclose(other[:, t + 1:], logits[:, t + 1:])  # later outputs do see them


def test_gradient_of_an_early_output_reaches_no_later_input():
    model = GPT(SMALL)
    tokens = torch.randint(0, 256, (2, 16))
    embedded = model.token_embedding(tokens).detach().requires_grad_(True)
    positions = torch.arange(16).expand(2, 16)
    h = embedded + model.position_embedding(positions)
    for block in model.blocks:
        h = block(h, model.causal_mask)
    h[:, 6].sum().backward()
    per_position = embedded.grad.abs().sum(dim=(0, 2))
    assert (per_position[7:] == 0).all() and (per_position[:7] > 0).all()


def test_output_layer_is_the_token_embedding():
    model = GPT(SMALL)
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        logits = model(tokens)
        h = model.token_embedding(tokens) + model.position_embedding(torch.arange(16).expand(2, 16))
        for block in model.blocks:
            h = block(h, model.causal_mask)
        expected = model.final_norm(h) @ model.token_embedding.weight.T
    torch.testing.assert_close(logits, expected)
    assert logits.shape == (2, 16, 256)
    parameters = list(model.parameters())
    assert len(parameters) == len({id(p) for p in parameters})  # the tied weight is one parameter
    assert any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def test_build_model_and_config_errors():
    model = build_model("gpt", (64,), 256)
    assert isinstance(model, GPT) and model.config.sequence_length == 64
    with pytest.raises(ValueError, match="multiple of num_heads"):
        GPT(GPTConfig(d_model=30, num_heads=4))
    with pytest.raises(ValueError, match="at most 16"):
        GPT(SMALL)(torch.zeros(1, 17, dtype=torch.long))


def test_sequence_losses_against_a_loop():
    torch.manual_seed(1)
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    targets[1, 3:] = IGNORE_INDEX
    targets[2, :] = IGNORE_INDEX
    expected = []
    for row in range(3):
        keep = targets[row] != IGNORE_INDEX
        expected.append(F.cross_entropy(logits[row][keep], targets[row][keep]) if keep.any() else torch.tensor(0.0))
    torch.testing.assert_close(sequence_losses(logits, targets), torch.stack(expected))
    assert pydoc_lm.IGNORE_INDEX == IGNORE_INDEX


def test_a_batch_carries_groups_by_name_and_the_step_returns_sequence_logits():
    sequences = pydoc_lm.text_sequences({"for": b"for x in y: pass" * 3, "calls": b"f(a, b=1)" * 4}, 16)
    dataset = SequenceDataset(sequences.x, sequences.y, sequences.groups)
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    parts = parse_batch(batch)
    assert parts.groups == ["expressions"] * 3 + ["statements"] * 3  # sorted topics: calls, then for
    ids, names = group_tensor(parts.groups, len(dataset))
    assert names == tuple(parts.groups) and ids.shape == (len(dataset),)
    module = LanguageModel(GPT(SMALL), lr=1e-3)
    outputs = module.training_step(batch, 0)
    assert output_kind(outputs, parts.targets, len(dataset)) == "sequence"
    expected = sequence_losses(outputs["logits"], batch["y"]).mean()
    torch.testing.assert_close(outputs["loss"], expected)
    with pytest.raises(ValueError, match="one shape and N groups"):
        SequenceDataset(sequences.x, sequences.y, sequences.groups[:-1])
