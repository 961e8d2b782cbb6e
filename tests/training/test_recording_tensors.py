"""The recorder's tensor readers (training.recording_tensors) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import torch

from training.recording_tensors import detached, owning_layers, parameter_grad_norms, to_host


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


def test_to_host_copies_every_column_with_its_dtype_in_one_copy(monkeypatch):
    columns = {
        "correct": torch.tensor([True, False, True]),
        "loss": torch.tensor([0.5, float("nan"), 2.25]),
        "sample_id": torch.tensor([2**40 + 1, -3, 7]),
        "pred": torch.tensor([1, 2, 3], dtype=torch.int32),
        "weight": torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64),
    }
    copies = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(self.shape) or real_cpu(self, *a, **k))
    host = to_host(columns)
    assert len(copies) == 1  # one device-to-host copy for all the columns
    assert set(host) == set(columns)
    for name, tensor in columns.items():
        assert host[name].dtype == tensor.numpy().dtype, name
        np.testing.assert_array_equal(host[name], tensor.numpy(), err_msg=name)
        assert host[name].flags.aligned and host[name].flags.writeable, name
