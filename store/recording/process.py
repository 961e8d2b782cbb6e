"""The recording writer process: its handle in the training process (``WriterProcess``) and
its loop in the child (``serve``).

The recorder's training process reduces each step's outputs on their device to a few
statistics per presentation, copies them to the host once per chunk of rows, and sends
them, as typed messages (``store.recording.messages``), on the child's stdin in frames
(``store.recording.frames``); a frame larger than half the pipe goes into a spool file and
only its name through the pipe, so a send never waits for the child. The child (``python -m
store.recording``, at the lowest CPU priority) hands each message to its ``RunWriter``
(``store.recording.writer``), which builds the Arrow tables and writes the segments and
run.json.

Why a process and not a thread: the same work on a writer thread cost the training loop
measurably, through the GIL, while handing the arrays over does not
(``benchmarks/results/recorder_ablation.md``; ``recorder.md`` for the recorder's total
cost). No library does this hand-over (``multiprocessing`` would re-import the user's
``__main__`` in the child, and its pipes block a writer when they fill), so it is written
here: pickle frames on two pipes, large ones in files.

Neither this package nor the child imports torch, Lightning, pandas or DuckDB, so the child
starts quickly, while the first epoch trains (tests/store/test_recording.py checks it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from store.errors import StoreError
from store.recording.frames import encode, frame_size, read_frame, whole_frame, write_frame
from store.recording.messages import Close, Configure, SpoolFile, Sync
from store.recording.writer import RunWriter

_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032  # Linux fcntl commands


class WriterProcess:
    """The training process's handle on one ``RunWriter`` in a child process.

    ``send(message)`` returns at once (the child handles the messages in order);
    ``drain()`` waits until the child has handled every message so far and raises
    ``StoreError`` with the first error it met since the last drain; ``close()`` drains
    and ends the child. If the training process dies, the child still writes what it was
    sent and what was queued, marks a run that process left "running" as failed, then
    exits (end of file on its stdin without ``Close``). The child ignores SIGINT, so that
    Ctrl-C in a terminal interrupts training and not the writing of its last rows.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._spool: Path | None = None
        self._pipe_limit = 0
        self._sent = 0
        self._reported = False  # that the child died (close does not say it twice)

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, config: Configure) -> None:
        """Start a child (ending a previous one) holding ``RunWriter(config)``."""
        self.close()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        # NumPy and pyarrow in the child must not start thread pools beside training's.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # Freed Arrow buffers go back to the C allocator rather than staying in mimalloc's
        # pool: about 12 MB less at the child's peak (__main__.py says what else it saves).
        env.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        self._spool = Path(tempfile.mkdtemp(prefix="trainmap-writer-"))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "store.recording", str(self._spool), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        # A message's arrays go through the pipe when they fit in half of it, so a write
        # does not wait for the child (Linux lets a pipe grow to 1 MiB unprivileged);
        # larger ones through a spool file.
        fd = self._process.stdin.fileno()
        try:
            import fcntl

            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
            self._pipe_limit = fcntl.fcntl(fd, _F_GETPIPE_SZ) // 2
        except (ImportError, OSError):  # not Linux: 4 KiB is within any pipe
            self._pipe_limit = 4096
        self._sent = 0
        self._reported = False
        self.send(config)

    def send(self, message: Any) -> None:
        """Hand ``message`` (one of ``store.recording.messages``) to the child, without waiting."""
        if self._process is None:
            raise StoreError("the recording writer process is not running")
        parts = encode(message)
        if frame_size(parts) > self._pipe_limit:
            path = self._spool / f"{self._sent:08d}.frame"
            with open(path, "wb") as handle:
                write_frame(handle, parts)
            parts = encode(SpoolFile(str(path)))
        self._sent += 1
        try:
            with whole_frame():
                write_frame(self._process.stdin, parts)
        except OSError:  # BrokenPipeError: the child is gone
            raise StoreError(self._died()) from None

    def drain(self) -> None:
        if self._process is None:
            return
        self.send(Sync())
        try:
            with whole_frame():
                error = read_frame(self._process.stdout)
        except EOFError:
            raise StoreError(self._died()) from None
        if error:
            raise StoreError(f"recording writer failed: {error}")

    def close(self) -> None:
        if self._process is None:
            return
        try:
            if self._process.poll() is None or not self._reported:
                self.drain()
        finally:
            process, self._process = self._process, None
            try:  # an orderly end: the child leaves the run's status to this process
                with whole_frame():
                    write_frame(process.stdin, encode(Close()))
                process.stdin.close()
            except OSError:
                pass
            process.wait()
            process.stdout.close()
            if self._spool is not None:
                shutil.rmtree(self._spool, ignore_errors=True)
                self._spool = None

    def _died(self) -> str:
        self._reported = True
        code = self._process.poll() if self._process is not None else None
        return f"the recording writer process ended unexpectedly (exit code {code}); see its messages above"

    def __del__(self) -> None:  # a recorder dropped without close: let the child finish
        process = self._process
        if process is not None and process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass


def serve(spool: Path, parent_pid: int, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """The child's loop: hand each message to its ``RunWriter`` in order; answer ``Sync``
    with the first error since the previous one (or None); at the end of input write what
    is queued, and if the training process ``parent_pid`` went away without ``Close``,
    keep what it sent and mark its run failed. ``spool`` is removed at the end."""
    # Ctrl-C, SIGTERM and SIGHUP sent to the whole process group (a terminal, `timeout`,
    # systemd, docker stop, a dropped SSH session) are for the training process: this one
    # writes what it was handed and ends when the training process closes the pipe or dies.
    for number in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if number is not None:
            signal.signal(number, signal.SIG_IGN)
    try:
        os.nice(19)
    except (AttributeError, OSError):
        pass
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    writer: RunWriter | None = None
    error: str | None = None
    closed = False
    while True:
        try:
            message = read_frame(stdin)
        except EOFError:
            break
        if isinstance(message, SpoolFile):
            path = Path(message.path)
            with open(path, "rb") as handle:
                message = read_frame(handle)
            path.unlink()
        if isinstance(message, Close):
            closed = True
            continue
        if isinstance(message, Sync):
            write_frame(stdout, encode(error))
            error = None
            continue
        try:
            if isinstance(message, Configure):
                writer = RunWriter(message)
            elif writer is None:
                raise StoreError(f"the recording writer got {type(message).__name__} before Configure")
            else:
                writer.handle(message)
        except Exception as exc:  # reported at the next sync, in the training process
            traceback.print_exc()
            error = error or f"{type(exc).__name__}: {exc}"
    if writer is not None:  # what is still queued; if the training process went away, keep what it sent
        try:
            writer.flush()
            if not closed:
                writer.abandoned_by(parent_pid)
        except Exception:
            traceback.print_exc()
    shutil.rmtree(spool, ignore_errors=True)
