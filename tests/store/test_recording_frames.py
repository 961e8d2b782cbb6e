"""The frame format between the recorder and its writer, and the signals it holds back."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest

from store.recording.frames import encode, read_frame, whole_frame, write_frame
from store.recording.messages import Flush


def test_a_ctrl_c_during_a_frame_arrives_after_the_whole_frame_is_written():
    """A KeyboardInterrupt cutting a frame in half left the child waiting for its rest and the
    training process waiting for the child's answer (seen once: both blocked for an hour)."""
    stream = io.BytesIO()
    payload = {"columns": np.arange(100_000, dtype=np.int64)}
    with pytest.raises(KeyboardInterrupt):
        with whole_frame():
            os.kill(os.getpid(), signal.SIGINT)  # arrives now, is held back...
            write_frame(stream, encode(payload))  # ...while the frame is written whole
            written = stream.tell()
    stream.seek(0)
    assert np.array_equal(read_frame(stream)["columns"], payload["columns"])
    assert stream.tell() == written


def test_frames_round_trip_in_order():
    stream = io.BytesIO()
    for message in (Flush(), {"a": np.ones(3, np.float32)}, "text"):
        write_frame(stream, encode(message))
    stream.seek(0)
    assert read_frame(stream) == Flush()
    assert np.array_equal(read_frame(stream)["a"], np.ones(3, np.float32))
    assert read_frame(stream) == "text"
    with pytest.raises(EOFError):
        read_frame(stream)
