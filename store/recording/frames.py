"""The frame format of the pipes between the recorder and its writer process.

A frame is one message: a header (the number of parts, then each part's size, as
little-endian ``uint64``), the pickle (protocol 5), then the raw bytes of the message's
NumPy arrays, written straight from their memory (no copy into the pickle) and read back
into writable buffers.
"""

from __future__ import annotations

import pickle
import signal
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

_COUNT = struct.Struct("<Q")


def encode(message: Any) -> list[bytes | memoryview]:
    """The parts of the frame of ``message``, to write in order."""
    buffers: list[pickle.PickleBuffer] = []
    main = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    sizes = [len(main), *(raw.nbytes for raw in raws)]
    return [_COUNT.pack(len(sizes)) + struct.pack(f"<{len(sizes)}Q", *sizes), main, *raws]


def frame_size(parts: list[bytes | memoryview]) -> int:
    return sum(memoryview(part).nbytes for part in parts)


#: Signals held back while a frame is written or read (Ctrl-C, ``timeout``/``docker stop``,
#: a closed terminal): they arrive once the frame is whole. A frame cut in half by a
#: KeyboardInterrupt would leave the child waiting for the rest of it and the training
#: process waiting for the child's answer, both for ever.
DEFERRED_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextmanager
def whole_frame() -> Iterator[None]:
    """Hold ``DEFERRED_SIGNALS`` back until the frame is written or read, then deliver them to
    the handlers they had. The training process's side of the pipes uses it; the child keeps
    its own signal handling.

    Python-level deferral, not ``pthread_sigmask``: a mask covers only the calling thread, and
    the kernel hands a process's signal to any thread that does not block it (torch's and
    DuckDB's threads), whose C handler still makes the main thread raise at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in DEFERRED_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, cannot be put back
            previous[signum] = handler
            signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:
            signal.raise_signal(signum)


def write_frame(stream: BinaryIO, parts: list[bytes | memoryview]) -> None:
    for part in parts:
        stream.write(part)
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The message of the next frame; ``EOFError`` at the end of the stream."""
    header = stream.read(_COUNT.size)
    if len(header) < _COUNT.size:
        raise EOFError
    (count,) = _COUNT.unpack(header)
    sizes = struct.unpack(f"<{count}Q", _read_exactly(stream, 8 * count))
    parts = [_read_exactly(stream, size) for size in sizes]
    return pickle.loads(parts[0], buffers=parts[1:])


def _read_exactly(stream: BinaryIO, size: int) -> bytearray:
    data = bytearray(size)  # writable, so the arrays it backs are writable too
    view, done = memoryview(data), 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError
        done += got
    return data
