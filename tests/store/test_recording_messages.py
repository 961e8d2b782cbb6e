"""The recorder <-> writer messages (store.recording.messages) through a frame
(store.recording.frames): every message comes back equal, arrays out of band and writable."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io

import numpy as np
import pytest

from store.recording import messages
from store.recording.frames import encode, frame_size, read_frame, write_frame
from store.recording.messages import (
    Close,
    Configure,
    EpochTotals,
    Flush,
    RecordEpoch,
    RecordPresentations,
    RecordValidation,
    SpoolFile,
    StepBuffers,
    Sync,
    WriteSegment,
)

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)


def chunk(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "step": np.repeat(np.array([5, 6, 7]), n // 3),
        "sample_id": np.arange(n) * 7,
        "label": rng.integers(0, 3, n).astype(np.int32),
        "loss": rng.random(n).astype(np.float32),
        "correct": rng.random(n) > 0.5,
        "weight": np.linspace(0.5, 1.5, n, dtype=np.float32),
    }


def steps() -> StepBuffers:
    return StepBuffers(
        step_numbers=[5, 6, 7],
        step_losses=np.array([1.5, 1.25, 1.0], dtype=np.float32),
        grad_norm_steps=[5],
        parameter_norms=np.array([[0.5, 2.0]]),
        lr_steps=[5, 6, 7],
        lrs=[0.1, 0.2, 0.3],
    )


#: One instance of every message class, with values in every field.
EXAMPLES = [
    Configure(store_path="/tmp/s", run_id="r1", layers=("fc1", "fc2"), layer_owner=np.array([0, 0, 1]), flush_secs=1.5),
    RecordPresentations(epoch=3, rank=1, chunk=2, columns=chunk()),
    RecordEpoch(
        epoch=3, steps=steps(), totals=EpochTotals(10.5, 7.0, 12.0), time=NOW,
        val_loss=0.75, val_accuracy=0.625, best_val_accuracy=0.75,
    ),
    RecordValidation(
        epoch=3, time=NOW, loss_sum=4.5, correct_sum=6, count=10, class_sums=np.array([[1.0, 5.0], [2.0, 8.0]])
    ),
    WriteSegment(
        table_name="grand", part="r00-e000003", columns={"sample_id": np.arange(4), "grand": np.ones(4, np.float32)}
    ),
    Flush(),
    Sync(),
    Close(),
    SpoolFile(path="/tmp/spool/00000001.frame"),
]


def round_trip(message):
    stream = io.BytesIO()
    write_frame(stream, encode(message))
    stream.seek(0)
    return read_frame(stream)


def assert_same(got, expected) -> None:
    """Field by field, through nested dataclasses, dicts and arrays (dtype included)."""
    if dataclasses.is_dataclass(expected):
        assert type(got) is type(expected)
        for field in dataclasses.fields(expected):
            assert_same(getattr(got, field.name), getattr(expected, field.name))
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected and type(got) is type(expected)


def test_the_examples_cover_every_message_class():
    classes = {
        value for value in vars(messages).values()
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == messages.__name__
    }
    assert classes - {StepBuffers, EpochTotals} == {type(message) for message in EXAMPLES}


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_comes_back_from_a_frame_unchanged(message):
    assert_same(round_trip(message), message)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_messages_are_frozen(message):
    assert type(message).__dataclass_params__.frozen
    for field in dataclasses.fields(message):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, field.name, None)


def test_a_chunks_arrays_travel_out_of_band_and_come_back_writable():
    message = EXAMPLES[1]
    parts = encode(message)
    arrays = list(message.columns.values())
    assert len(parts) == 2 + len(arrays)  # header, pickle, one raw part per array
    assert sorted(memoryview(part).nbytes for part in parts[2:]) == sorted(a.nbytes for a in arrays)
    assert frame_size(parts) == sum(memoryview(part).nbytes for part in parts)
    got = round_trip(message)
    got.columns["loss"][0] = 42.0  # the child may compute in place
    assert got.columns["loss"][0] == 42.0


def test_an_epochs_step_arrays_travel_out_of_band():
    message = EXAMPLES[2]
    parts = encode(message)
    assert sorted(memoryview(part).nbytes for part in parts[2:]) == sorted(
        [message.steps.step_losses.nbytes, message.steps.parameter_norms.nbytes]
    )


def test_the_pickle_of_a_chunk_stays_small():
    # The arrays' bytes go straight from their memory; the pickle holds only the structure,
    # whatever the number of presentations.
    small, large = encode(EXAMPLES[1])[1], encode(dataclasses.replace(EXAMPLES[1], columns=chunk(3000)))[1]
    assert len(small) < 2048 and abs(len(large) - len(small)) < 32  # shapes take a few bytes more


def test_a_truncated_frame_is_the_end_of_the_stream():
    data = b"".join(bytes(part) for part in encode(EXAMPLES[3]))
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(data[:-1]))
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(b""))
