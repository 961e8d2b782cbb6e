"""The frame format between the recorder and its writer, and the signals it holds back."""

from __future__ import annotations

import io
import os
import signal
import threading

import numpy as np
import pytest

from store.recording.frames import encode, read_frame, whole_frame, write_frame
from store.recording.messages import Flush


@pytest.mark.parametrize("other_thread", [False, True])
def test_a_ctrl_c_during_a_frame_arrives_after_the_whole_frame_is_written(other_thread):
    """A KeyboardInterrupt cutting a frame in half left the child waiting for its rest and the
    training process waiting for the child's answer (seen once: both blocked for an hour).
    With another thread running (torch's, DuckDB's), the kernel may hand it the signal."""
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    if other_thread:
        worker.start()
    stream = io.BytesIO()
    payload = {"columns": np.arange(100_000, dtype=np.int64)}
    with pytest.raises(KeyboardInterrupt):
        with whole_frame():
            os.kill(os.getpid(), signal.SIGINT)  # arrives now, is held back...
            write_frame(stream, encode(payload))  # ...while the frame is written whole
            written = stream.tell()
    stop.set()
    stream.seek(0)
    assert np.array_equal(read_frame(stream)["columns"], payload["columns"])
    assert stream.tell() == written
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back


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
