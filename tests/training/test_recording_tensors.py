"""The recorder's tensor readers (training.recording_tensors) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from training.recording_tensors import detached, owning_layers, parameter_grad_norms, step_logits, validation_sums


def test_step_logits_needs_a_dict_with_logits():
    logits = torch.zeros(2, 3)
    assert step_logits({"loss": torch.tensor(1.0), "logits": logits}) is logits
    for outputs in (torch.tensor(1.0), {"loss": torch.tensor(1.0)}, None):
        with pytest.raises(ValueError, match="training_step must return a dict with 'loss' and 'logits'"):
            step_logits(outputs)


def test_detached_copies_nothing_without_a_graph():
    plain = torch.ones(2)
    assert detached(plain) is plain
    with_graph = torch.ones(2, requires_grad=True) * 2
    assert not detached(with_graph).requires_grad and detached(with_graph).data_ptr() == with_graph.data_ptr()


def test_owning_layers_skips_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    model[0].bias.requires_grad_(False)
    model.register_parameter("scale", torch.nn.Parameter(torch.ones(1)))
    # a module's own parameters come first; "scale" has no dot, so it is its own layer
    assert owning_layers(model) == (["scale", "0", "2"], [0, 1, 2, 2])


def test_parameter_grad_norms_are_zero_without_a_gradient():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    a.grad = torch.tensor([3.0, 4.0])
    assert [float(norm) for norm in parameter_grad_norms([a, b])] == [5.0, 0.0]
    b.grad = torch.tensor([1.0, 2.0, 2.0])
    assert [float(norm) for norm in parameter_grad_norms([a, b])] == [5.0, 3.0]


def test_validation_sums_of_a_batch():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.7, 0.2, 0.1]]))
    targets = torch.tensor([0, 2, 0])
    totals, per_class = validation_sums(logits, targets)
    assert totals.dtype == torch.float64 and per_class.dtype == torch.float64
    assert totals[0].item() == pytest.approx(-math.log(0.5) - math.log(0.2) - math.log(0.7), rel=1e-6)
    assert totals[1:].tolist() == [2.0, 3.0]
    assert per_class.tolist() == [[2.0, 0.0, 0.0], [2.0, 0.0, 1.0]]  # correct, count per label
