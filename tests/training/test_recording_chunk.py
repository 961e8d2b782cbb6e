"""The chunk's stage (training.recording_chunk): classification logits are reduced a group
of batches at a time, with the values a per-batch reduction gives, in bounded memory."""

from __future__ import annotations

import math

import numpy as np
import torch

from training.recording_chunk import ChunkBuffer
from training.reduce import classification_stats

STATS = ("loss", "p_true", "el2n", "correct", "pred", "margin")


def batches(count, size, classes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        logits = torch.randn(size, classes, generator=generator) * 4
        labels = torch.randint(0, classes, (size,), generator=generator)
        ids = torch.arange(index * size, (index + 1) * size)
        yield logits, labels, ids


def assert_same(got, expected):
    """pred, correct and margin exactly; the others to float32 rounding (a row's sum over
    the classes may group its terms differently in a larger tensor: about one ulp)."""
    for name in STATS:
        if name in ("loss", "p_true", "el2n"):
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def per_batch_reference(items):
    """The statistics of each batch reduced on its own (the recorder before staging)."""
    parts = {name: [] for name in STATS}
    for logits, labels, _ in items:
        stats = classification_stats(logits, labels)
        for name in STATS:
            parts[name].append(getattr(stats, name).numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


def test_staged_batches_get_the_per_batch_statistics_and_the_stage_stays_within_its_bytes():
    items = list(batches(40, 32, 7))
    originals = [(logits.clone(), labels, ids) for logits, labels, ids in items]
    stage_bytes = 10 * 32 * 7 * 4  # ten batches of float32 logits
    buffer = ChunkBuffer(capacity=1000, stage_bytes=stage_bytes)
    chunks, staged = [], []
    for step, (logits, labels, ids) in enumerate(items):
        chunks += buffer.add(step, {"sample_id": ids, "label": labels, "weight": None, "grand_last": None}, 32,
                             logits=logits)
        staged.append(buffer.staged_rows)
        logits.add_(1000.0)  # the step's tensor is copied, not kept: changing it changes nothing recorded
    chunks.append(buffer.take())
    assert max(staged) * 7 * 4 <= stage_bytes and max(staged) == 320  # ten batches, then reduced
    assert [len(chunk["sample_id"]) for chunk in chunks] == [1000, 280]
    got = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in STATS}
    expected = per_batch_reference(originals)
    assert_same(got, expected)
    assert np.concatenate([chunk["sample_id"] for chunk in chunks]).tolist() == list(range(40 * 32))
    assert "grand_last" not in chunks[0]  # never given: the writer writes NaN


def test_a_batch_larger_than_the_stage_is_reduced_at_once_and_mixes_with_staged_ones():
    buffer = ChunkBuffer(capacity=1000, stage_bytes=64 * 5 * 4)  # 64 rows of 5 classes
    items = list(batches(3, 100, 5, seed=1)) + list(batches(3, 20, 5, seed=2))
    for step, (logits, labels, ids) in enumerate(items):
        buffer.add(step, {"sample_id": ids, "label": labels}, len(ids), logits=logits)
        assert buffer.staged_rows <= 64
    chunk = buffer.take()
    expected = per_batch_reference(items)
    assert_same(chunk, expected)
    assert chunk["step"].tolist() == [0] * 100 + [1] * 100 + [2] * 100 + [3] * 20 + [4] * 20 + [5] * 20


def test_a_first_batch_of_finished_statistics_then_staged_batches():
    """The recorder reduces the first batch itself (to check it) and stages the rest."""
    items = list(batches(4, 16, 3, seed=3))
    buffer = ChunkBuffer(capacity=64)
    logits, labels, ids = items[0]
    stats = classification_stats(logits, labels)
    buffer.add(0, {"sample_id": ids, "label": labels, **{name: getattr(stats, name) for name in STATS}}, 16)
    (chunk,) = [c for step, (lo, la, i) in enumerate(items[1:], 1)
                for c in buffer.add(step, {"sample_id": i, "label": la}, 16, logits=lo)]
    expected = per_batch_reference(items)
    assert_same(chunk, expected)


def test_grand_last_from_staged_feature_norms_and_nan_for_batches_without_them():
    items = list(batches(3, 4, 6, seed=4))
    buffer = ChunkBuffer(capacity=100)
    norms = [None, torch.tensor([1.0, 4.0, 9.0, 0.0]), None]
    for step, ((logits, labels, ids), sqnorm) in enumerate(zip(items, norms)):
        buffer.add(step, {"sample_id": ids, "label": labels}, 4, logits=logits, feature_sqnorm=sqnorm)
    chunk = buffer.take()
    el2n = classification_stats(items[1][0], items[1][1]).el2n.numpy()
    np.testing.assert_allclose(chunk["grand_last"][4:8], el2n * np.sqrt([2.0, 5.0, 10.0, 1.0]), rtol=1e-6)
    assert all(math.isnan(v) for v in chunk["grand_last"][:4].tolist() + chunk["grand_last"][8:].tolist())


def test_the_stage_follows_a_change_of_class_count_or_dtype():
    buffer = ChunkBuffer(capacity=100)
    first = list(batches(2, 8, 4, seed=5))
    second = [(logits.double(), labels, ids + 100) for logits, labels, ids in batches(2, 8, 9, seed=6)]
    for step, (logits, labels, ids) in enumerate(first + second):
        buffer.add(step, {"sample_id": ids, "label": labels}, 8, logits=logits)
    chunk = buffer.take()
    expected = per_batch_reference(first + second)
    assert_same(chunk, expected)
