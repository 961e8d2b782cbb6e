"""What the recorder keeps between hooks (training.recording_buffers): an epoch's references
gathered into host arrays, and the validation sums."""

from __future__ import annotations

import numpy as np
import torch

from training.recording_buffers import EpochBuffer, ValidationSums


def test_an_epoch_is_gathered_into_host_arrays():
    buffer = EpochBuffer()
    assert buffer.empty
    logits = torch.arange(6, dtype=torch.float32).reshape(3, 2).requires_grad_()
    buffer.add_batch(0, logits[:2] * 1, torch.tensor([0, 1]), torch.tensor([10, 11]), None, None)
    buffer.add_batch(1, logits[2:] * 1, torch.tensor([1]), torch.tensor([12]), torch.tensor([0.5]), None)
    buffer.add_loss(0, torch.tensor(2.0, requires_grad=True) * 1)
    buffer.add_lr(0, 0.1)
    buffer.add_lr(1, 0.2)
    buffer.add_grad_norms(1, [torch.tensor(3.0), torch.tensor(4.0)])
    epoch = buffer.gather()
    assert not buffer.empty
    np.testing.assert_array_equal(epoch.logits, [[0, 1], [2, 3], [4, 5]])
    assert epoch.logits.dtype == np.float32 and epoch.targets.dtype == np.int64
    assert epoch.sample_ids.tolist() == [10, 11, 12]
    assert (epoch.batch_steps, epoch.batch_sizes) == ([0, 1], [2, 1])
    assert epoch.weights.tolist() == [1.0, 1.0, 0.5]  # batches without weights count as 1
    assert epoch.feature_sqnorms is None  # not every batch had one
    assert (epoch.step_numbers, epoch.step_losses.tolist()) == ([0], [2.0])
    assert (epoch.lr_steps, epoch.lrs) == ([0, 1], [0.1, 0.2])
    assert epoch.grad_norm_steps == [1] and epoch.parameter_norms.tolist() == [[3.0, 4.0]]
    buffer.clear()
    assert buffer.empty


def test_an_epoch_without_weights_norms_or_losses_has_none():
    buffer = EpochBuffer()
    feature_sqnorm = torch.tensor([[4.0], [9.0]])
    buffer.add_batch(0, torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]), None, feature_sqnorm)
    epoch = buffer.gather()
    assert epoch.weights is None and epoch.step_losses is None and epoch.parameter_norms is None
    assert epoch.feature_sqnorms.tolist() == [4.0, 9.0]


def test_validation_sums_add_up_over_batches():
    sums = ValidationSums()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    sums.add(logits, torch.tensor([0, 0]))
    sums.add(logits, torch.tensor([0, 1]))
    assert sums.totals[1:].tolist() == [3.0, 4.0]
    assert sums.per_class.tolist() == [[2.0, 1.0], [3.0, 1.0]]
    sums.add(torch.zeros(1, 3), torch.tensor([2]))  # another number of classes starts over
    assert sums.per_class.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # argmax 0 != label 2
    sums.clear()
    assert sums.totals.tolist() == [0.0, 0.0, 0.0] and sums.per_class is None
