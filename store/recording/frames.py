"""The frame format of the pipes between the recorder and its writer process.

A frame is one message: a header (the number of parts, then each part's size, as
little-endian ``uint64``), the pickle (protocol 5), then the raw bytes of the message's
NumPy arrays, written straight from their memory (no copy into the pickle) and read back
into writable buffers.
"""

from __future__ import annotations

import pickle
import struct
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
