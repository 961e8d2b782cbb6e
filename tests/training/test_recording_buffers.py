"""What the recorder keeps between hooks (training.recording_buffers): a bounded chunk of
statistics copied to the host when full, an epoch's per-step values, the validation sums."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import torch

from training.recording_buffers import ChunkBuffer, StepBuffer, ValidationLoaders, ValidationSums


def batch(ids, weight=None):
    ids = torch.as_tensor(ids)
    return {
        "sample_id": ids,
        "loss": ids.float() / 10,
        "correct": ids % 2 == 0,
        "weight": None if weight is None else torch.full((len(ids),), weight),
        "grand_last": None,
    }


def test_a_chunk_never_holds_more_than_its_capacity_and_splits_batches_at_its_edge():
    buffer = ChunkBuffer(capacity=5)
    chunks = []
    held = []
    for step, ids in enumerate([[0, 1, 2], [3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [17]]):
        chunks += buffer.add(step, batch(ids), len(ids))
        held.append(buffer.rows)
    assert held == [3, 1, 2, 3] and max(held) <= 5
    assert [chunk["sample_id"].tolist() for chunk in chunks] == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14],
    ]
    # a batch split over two chunks keeps its step in both
    assert [chunk["step"].tolist() for chunk in chunks] == [[0, 0, 0, 1, 1], [1, 2, 2, 2, 2], [2, 2, 2, 2, 2]]
    rest = buffer.take()
    assert rest["sample_id"].tolist() == [15, 16, 17] and rest["step"].tolist() == [2, 2, 3]
    assert buffer.rows == 0 and buffer.take() is None


def test_a_chunk_keeps_the_schema_dtypes_and_fills_missing_weights_with_one():
    buffer = ChunkBuffer(capacity=100)
    buffer.add(4, batch([1, 2]), 2)
    buffer.add(5, batch([3], weight=0.5), 1)
    chunk = buffer.take()
    assert set(chunk) == {"sample_id", "loss", "correct", "weight", "step"}  # grand_last: never given
    assert chunk["sample_id"].dtype == np.int64 and chunk["loss"].dtype == np.float32
    assert chunk["correct"].dtype == np.bool_ and chunk["step"].dtype == np.int64
    assert chunk["weight"].tolist() == [1.0, 1.0, 0.5] and chunk["weight"].dtype == np.float32
    np.testing.assert_allclose(chunk["loss"], [0.1, 0.2, 0.3], rtol=1e-6)
    assert chunk["correct"].tolist() == [False, True, False] and chunk["step"].tolist() == [4, 4, 5]


def test_grand_last_missing_on_some_batches_is_nan_there():
    buffer = ChunkBuffer(capacity=100)
    buffer.add(0, {**batch([1, 2]), "grand_last": torch.tensor([0.5, 0.25])}, 2)
    buffer.add(1, batch([3]), 1)
    values = buffer.take()["grand_last"]
    assert values[:2].tolist() == [0.5, 0.25] and math.isnan(values[2])


def test_a_chunk_copies_each_batch_into_memory_it_allocated_once():
    buffer = ChunkBuffer(capacity=4)
    loss = torch.tensor([1.0, 2.0], requires_grad=True) * 2  # with a graph: copied without it
    buffer.add(0, {**batch([1, 2]), "loss": loss}, 2)
    with torch.no_grad():
        loss.add_(100)  # the step's tensors are not kept: changing them changes nothing recorded
    addresses = {name: column.data_ptr() for name, column in buffer._columns.items()}
    chunks = buffer.add(1, batch([3, 4, 5]), 3)
    (chunk,) = chunks
    np.testing.assert_allclose(chunk["loss"], [2.0, 4.0, 0.3, 0.4], rtol=1e-6)
    chunks = buffer.add(2, batch([6, 7, 8, 9]), 4)
    assert chunks[0]["sample_id"].tolist() == [5, 6, 7, 8]
    assert {name: column.data_ptr() for name, column in buffer._columns.items()} == addresses


def test_a_column_missing_from_a_whole_chunk_is_left_out_of_it():
    buffer = ChunkBuffer(capacity=2)
    (first,) = buffer.add(0, batch([1, 2], weight=0.5), 2)
    (second,) = buffer.add(1, batch([3, 4]), 2)
    assert first["weight"].tolist() == [0.5, 0.5] and "weight" not in second  # the writer writes 1


def test_the_steps_of_an_epoch_are_gathered_into_host_values():
    steps = StepBuffer()
    steps.add_loss(0, torch.tensor(2.0, requires_grad=True) * 1)
    steps.add_loss(1, torch.tensor(1.5))
    steps.add_lr(0, 0.1)
    steps.add_lr(1, 0.2)
    steps.add_grad_norms(1, [torch.tensor(3.0), torch.tensor(4.0)])
    gathered = steps.gather()
    assert (gathered.step_numbers, gathered.step_losses.tolist()) == ([0, 1], [2.0, 1.5])
    assert gathered.step_losses.dtype == np.float32
    assert (gathered.lr_steps, gathered.lrs) == ([0, 1], [0.1, 0.2])
    assert gathered.grad_norm_steps == [1] and gathered.parameter_norms.tolist() == [[3.0, 4.0]]
    steps.clear()
    empty = steps.gather()
    assert empty.step_losses is None and empty.parameter_norms is None and empty.step_numbers == []


def test_step_values_go_to_the_host_a_block_at_a_time_in_reused_memory(monkeypatch):
    monkeypatch.setattr(StepBuffer, "block_steps", 3)
    steps = StepBuffer()
    for epoch in range(2):
        steps.clear()
        for step in range(7):
            steps.add_loss(step, torch.tensor(step + 0.5, dtype=torch.bfloat16))
            steps.add_grad_norms(step, [torch.tensor(float(step)), torch.tensor(2.0 * step)])
            if (epoch, step) == (0, 1):  # step 0's loss is in its block once step 1 begins
                addresses = (steps._losses._block.data_ptr(), steps._norms._block.data_ptr())
        gathered = steps.gather()
        assert gathered.step_losses.tolist() == [step + 0.5 for step in range(7)]
        assert gathered.parameter_norms.tolist() == [[float(step), 2.0 * step] for step in range(7)]
        assert gathered.step_numbers == gathered.grad_norm_steps == list(range(7))
        assert (steps._losses._block.data_ptr(), steps._norms._block.data_ptr()) == addresses


def test_the_micro_batches_of_one_optimizer_step_give_one_mean_loss():
    """Gradient accumulation: the batches of one step (the same global_step) are one row."""
    steps = StepBuffer()
    for step, loss in [(0, 2.0), (0, 1.0), (0, 4.0), (0, 5.0), (1, 0.5), (2, 3.0), (2, 1.0)]:
        steps.add_loss(step, torch.tensor(loss, dtype=torch.bfloat16))
    gathered = steps.gather()
    assert gathered.step_numbers == [0, 1, 2]
    assert gathered.step_losses.tolist() == [3.0, 0.5, 2.0] and gathered.step_losses.dtype == np.float32
    losses = torch.tensor(1.25)
    steps.clear()
    steps.add_loss(7, losses)
    steps.add_loss(7, torch.tensor(0.75))
    assert losses.item() == 1.25  # the caller's tensor is not summed into
    assert steps.gather().step_losses.tolist() == [1.0]


def test_validation_loaders_are_summed_apart():
    class OneRank:
        def reduce(self, tensor, reduce_op):
            assert reduce_op == "sum"
            return tensor

    loaders = ValidationLoaders()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    loaders.add(0, logits, torch.tensor([0, 1, 0]))
    loaders.add(2, logits, torch.tensor([1, 1, 1]))
    loaders.add(0, logits[:1], torch.tensor([1]))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = loaders.reduced(OneRank(), torch.device("cpu"), 3, epoch=4, time=now)
    assert [(r.dataloader_idx, r.correct_sum, r.count, r.epoch) for r in rows] == [(0, 3, 4, 4), (2, 1, 3, 4)]
    reference = torch.nn.functional.cross_entropy(
        torch.cat([logits, logits[:1]]), torch.tensor([0, 1, 0, 1]), reduction="sum")
    assert rows[0].loss_sum == pytest.approx(float(reference))
    assert rows[0].class_sums.tolist() == [[2.0, 1.0], [2.0, 2.0]]
    assert rows[1].class_sums.tolist() == [[0.0, 1.0], [0.0, 3.0]]


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
