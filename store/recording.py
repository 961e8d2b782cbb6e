"""The writing half of ``training.recorder.DynamicsRecorder``, in a child process.

The recorder's training process only gathers each epoch's buffers into host NumPy arrays
and hands them over on the child's stdin (a frame: pickle protocol 5 with the arrays'
bytes written straight from their memory; a frame larger than half the pipe goes into a
spool file and only its name through the pipe, so a write never waits for the child). The child (``python -c "from store.recording import serve; serve()"``,
at the lowest CPU priority) computes the per-presentation scores, builds the Arrow tables
and writes the segments and run.json through ``store.Store``.

Why a process and not a thread: measured on the MNIST-1D MLP (``benchmarks/results/
recorder_ablation.md``), the same work on a writer thread cost the training loop about 3 %
even with a CPU core to itself, i.e. through the GIL; handing the arrays over costs
nothing measurable. No library does this hand-over (``multiprocessing`` would re-import
the user's ``__main__`` in the child, and its pipes block a writer when they fill), so it
is written here: pickle frames on two pipes, large ones in files.

This module imports neither torch, Lightning, pandas nor DuckDB, so the child starts in about
0.2 s.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from store.errors import StoreError
from store.layout import Store, utc_now

#: Presentation columns computed per epoch (epoch and rank are added).
PRESENTATION_COLUMNS = (
    "step", "sample_id", "label", "loss", "p_true", "el2n", "correct", "pred", "margin", "weight", "grand_last",
)

_COUNT = struct.Struct("<Q")
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032  # Linux fcntl commands


def epoch_scores(logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """All per-presentation scores of an epoch at once, in NumPy: loss, p_true, EL2N,
    correct, pred and margin, the same values as the single-score functions in
    ``training.scores`` (tested to float32 rounding) for ``logits [N, C]`` and
    ``targets [N]``.

    It works on one class-major copy ``[C, N]``, so every reduction over classes runs
    across N contiguous lanes; with 10 classes that is 3x faster than row-wise (4,000
    presentations: ~0.2 ms).
    """
    x = np.ascontiguousarray(logits.T, dtype=np.float32)  # [C, N]
    columns = np.arange(x.shape[1])
    rows = np.asarray(targets, dtype=np.intp)
    assigned = x[rows, columns]
    top = x.max(axis=0)
    exp = np.exp(x - top)
    total = exp.sum(axis=0)  # softmax denominator / exp(top), in [1, C]
    given = exp[rows, columns]
    exp[rows, columns] = 0.0  # the other classes' unnormalised probabilities
    # EL2N from the other classes, as ``training.scores.el2n`` explains (no cancellation
    # near p_y = 1).
    el2n = np.sqrt(np.einsum("cn,cn->n", exp, exp) + np.square(exp.sum(axis=0))) / total
    pred = np.asarray(logits).argmax(axis=1)  # row-wise: ties go to the first class, as torch's
    x[rows, columns] = -np.inf
    return {
        "loss": np.log(total) - (assigned - top),
        "p_true": given / total,
        "el2n": el2n,
        "correct": pred == rows,
        "pred": pred.astype(np.int32),
        "margin": assigned - x.max(axis=0),
    }


class RunWriter:
    """Turns a rank's epoch buffers into rows of one run and writes them.

    Per-presentation rows are written at every epoch end; the small tables (steps,
    per-layer gradient norms, epoch and validation rows) and run.json's progress are
    queued and written once ``flush_secs`` have passed, or when ``write_pending`` is
    called (checkpoint, end of training, error).
    """

    def __init__(
        self, store_path: str, run_id: str, layers: list[str], layer_owner: np.ndarray, flush_secs: float
    ) -> None:
        self.store = Store(Path(store_path), create=True)
        self.run_id = run_id
        self.layers = list(layers)
        self.layer_owner = np.asarray(layer_owner, dtype=np.intp)
        self.flush_secs = float(flush_secs)
        self._pending: list[tuple[str, pa.Table, int]] = []  # (table, rows, epoch) not yet written
        self._pending_run: dict[str, Any] = {}
        self._last_flush = time.monotonic()
        self._flushes = 0

    def record_epoch(
        self,
        buffers: dict[str, Any],
        precomputed: dict[str, np.ndarray] | None,
        epoch: int,
        rank: int,
        is_global_zero: bool,
        totals: tuple[float, float, float] | None,
        val: dict[str, float] | None,
        best_val_accuracy: float | None,
        now: dt.datetime,
    ) -> None:
        """Scores, the presentations segment, and the small tables queued for the next
        flush."""
        arrays = self.epoch_arrays(buffers, precomputed)
        n = len(arrays["sample_id"])
        presentations = pa.table(
            {
                "epoch": np.full(n, epoch, dtype=np.int32),
                **{name: arrays[name] for name in PRESENTATION_COLUMNS},
                "rank": np.full(n, rank, dtype=np.int16),
            }
        )
        self.write_segment("presentations", presentations, f"r{rank:02d}-e{epoch:06d}")
        if not is_global_zero:
            return
        if totals is None:
            totals = (float(arrays["loss"].astype(np.float64).sum()), float(arrays["correct"].sum()), float(n))
        loss_sum, correct_sum, count = totals
        self._pending.append(epoch_row(epoch, "train", loss_sum, int(correct_sum), int(count), 0, now))
        self._pending.extend(self.step_segments(arrays, epoch))
        self._pending_run.update({
            "epochs_done": epoch + 1,
            "final_train_loss": loss_sum / max(count, 1),
            "final_train_accuracy": correct_sum / max(count, 1),
            "final_val_accuracy": val["accuracy"] if val else None,
            "final_val_loss": val["loss"] if val else None,
            "best_val_accuracy": best_val_accuracy,
        })
        if time.monotonic() - self._last_flush >= self.flush_secs:
            self.write_pending()

    def epoch_arrays(self, buffers: dict[str, Any], precomputed: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Per-presentation scores and columns, per-step losses and per-layer squared
        gradient norms."""
        out: dict[str, Any] = dict(precomputed or epoch_scores(buffers["logits"], buffers["targets"]))
        out["label"] = buffers["targets"].astype(np.int32)
        out["sample_id"] = buffers["sample_id"]
        n = len(out["sample_id"])
        out["weight"] = buffers["weight"] if buffers["weight"] is not None else np.ones(n, dtype=np.float32)
        if buffers["feature_sqnorm"] is not None:
            # Last-layer GraNd approximation (DESIGN.md): EL2N * sqrt(||h||^2 + 1).
            out["grand_last"] = out["el2n"] * np.sqrt(buffers["feature_sqnorm"] + 1.0)
        else:
            out["grand_last"] = np.full(n, np.nan, dtype=np.float32)
        out["step"] = np.repeat(np.asarray(buffers["batch_steps"], dtype=np.int64), buffers["batch_sizes"])
        out["step_numbers"] = np.asarray(buffers["step_numbers"], dtype=np.int64)
        losses = buffers["step_losses"]
        out["step_losses"] = losses if losses is not None else np.zeros(0, dtype=np.float32)
        out["per_layer_sq"] = None
        out["lr_steps"] = np.asarray(buffers["lr_steps"], dtype=np.int64)
        out["lrs"] = np.asarray(buffers["lrs"], dtype=np.float64)
        if buffers["parameter_norms"] is not None:
            per_parameter = np.square(buffers["parameter_norms"])  # [steps, parameters]
            per_layer = np.zeros((len(per_parameter), len(self.layers)), dtype=np.float64)
            np.add.at(per_layer.T, self.layer_owner, per_parameter.T)
            out["per_layer_sq"] = per_layer  # [steps, layers]
            out["grad_norm_steps"] = np.asarray(buffers["grad_norm_steps"], dtype=np.int64)
        return out

    def step_segments(self, arrays: dict[str, Any], epoch: int) -> list[tuple[str, pa.Table, int]]:
        step_numbers = arrays["step_numbers"]
        losses = arrays["step_losses"]
        grad_norm = np.full(len(step_numbers), np.nan, dtype=np.float32)
        lr = _at_steps(step_numbers, arrays["lr_steps"], arrays["lrs"])
        per_layer = arrays["per_layer_sq"]
        segments = []
        if per_layer is not None:
            norm_steps = arrays["grad_norm_steps"]
            # on_before_optimizer_step sees the global_step of the batch that made the grads
            grad_norm = _at_steps(step_numbers, norm_steps, np.sqrt(per_layer.sum(axis=1))).astype(np.float32)
            segments.append((
                "layer_grad_norms",
                pa.table(
                    {
                        "step": np.repeat(norm_steps, len(self.layers)),
                        "layer": np.tile(np.asarray(self.layers, dtype=object), len(norm_steps)),
                        "grad_norm": np.sqrt(per_layer).reshape(-1).astype(np.float32),
                    }
                ),
                epoch,
            ))
        segments.append((
            "steps",
            pa.table(
                {
                    "step": step_numbers,
                    "epoch": np.full(len(step_numbers), epoch, dtype=np.int32),
                    "loss": losses,
                    # null, not NaN, where not recorded: SQL aggregates skip nulls
                    "grad_norm": pa.array(grad_norm, mask=np.isnan(grad_norm)),
                    "lr": pa.array(lr, mask=np.isnan(lr)),
                }
            ),
            epoch,
        ))
        return segments

    def queue(self, segments: list[tuple[str, pa.Table, int]]) -> None:
        """Small tables ``(table, rows, epoch)`` for the next flush."""
        self._pending.extend(segments)

    def write_pending(self) -> None:
        """The queued small tables (one segment per table, named by its epochs) and
        run.json's progress."""
        self._last_flush = time.monotonic()
        if not (self._pending or self._pending_run):
            return
        by_table: dict[str, list[tuple[pa.Table, int]]] = {}
        for table_name, table, epoch in self._pending:
            by_table.setdefault(table_name, []).append((table, epoch))
        run_update, self._pending, self._pending_run = dict(self._pending_run), [], {}
        for table_name, parts in by_table.items():
            epochs = [epoch for _, epoch in parts]
            # unique within a writer; a resumed run first drops every row from its epoch on
            part = f"e{min(epochs):06d}-e{max(epochs):06d}-f{self._flushes:05d}"
            self.write_segment(table_name, pa.concat_tables([table for table, _ in parts]), part)
        self._flushes += 1
        if run_update:
            self.store.update_run(self.run_id, **run_update)

    def write_segment(self, table_name: str, table: pa.Table, part: str) -> None:
        self.store.write_segment(self.run_id, table_name, table, part)

    def abandoned_by(self, pid: int) -> None:
        """The training process ``pid`` ended without closing this writer (killed, out of
        memory): mark the run failed if it still says "running" under that process, so
        that no listing shows it running forever. A resumed run (another pid) is left
        alone, and so is every rank but the one that owns run.json."""
        info = self.store.run_info(self.run_id)
        if info.get("status") != "running" or info.get("pid") != pid:
            return
        epochs = int(info.get("epochs_done") or 0)
        self.store.update_run(
            self.run_id,
            status="failed",
            error=f"the training process (pid {pid}) ended without finishing the run (killed, or out of "
            f"memory?); the {epochs} epoch(s) it recorded are kept",
            finished_at=utc_now(),
        )


def _at_steps(steps: np.ndarray, value_steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (recorded at ``value_steps``) placed at ``steps``; NaN where none."""
    out = np.full(len(steps), np.nan, dtype=np.float64)
    if len(steps) and len(value_steps):
        order = np.argsort(steps, kind="stable")
        found = np.clip(np.searchsorted(steps[order], value_steps), 0, len(order) - 1)
        position = order[found]
        hit = steps[position] == value_steps
        out[position[hit]] = np.asarray(values, dtype=np.float64)[hit]
    return out


def epoch_row(
    epoch: int, split: str, loss_sum: float, correct_sum: int, count: int, rank: int, now: dt.datetime
) -> tuple[str, pa.Table, int]:
    """One row of the ``epochs`` table, queued as ``(table, rows, epoch)``."""
    row = pa.table(
        {
            "epoch": [epoch],
            "split": [split],
            "loss_sum": [loss_sum],
            "correct_sum": [correct_sum],
            "num_samples": [count],
            "rank": [rank],
            "time": pa.array([now], pa.timestamp("us", tz="UTC")),
        }
    )
    return "epochs", row, epoch


# -- the child process and its handle ---------------------------------------------------


def _encode(message: Any) -> list[bytes | memoryview]:
    """One message as the parts of a frame: a header of part sizes, the pickle (protocol
    5), then the raw bytes of its NumPy arrays, straight from their memory (no copy into
    the pickle)."""
    buffers: list[pickle.PickleBuffer] = []
    main = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    sizes = [len(main), *(raw.nbytes for raw in raws)]
    return [_COUNT.pack(len(sizes)) + struct.pack(f"<{len(sizes)}Q", *sizes), main, *raws]


def _write(stream: BinaryIO, parts: list[bytes | memoryview]) -> None:
    for part in parts:
        stream.write(part)
    stream.flush()


def _read_frame(stream: BinaryIO) -> Any:
    """The message of one frame; ``EOFError`` at the end of the stream."""
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


class WriterProcess:
    """The training process's handle on one ``RunWriter`` in a child process.

    ``call(method, *args)`` returns at once (the child runs the calls in order);
    ``drain()`` waits until the child has run every call so far and raises ``StoreError``
    with the first error it met since the last drain; ``close()`` drains and ends the
    child. If the training process dies, the child still writes what it was handed and
    what was queued, marks a run that process left "running" as failed, then exits (end of
    file on its stdin without ``close``). The child ignores SIGINT, so
    that Ctrl-C in a terminal interrupts training and not the writing of its last rows.
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

    def start(self, **config: Any) -> None:
        """Start a child (ending a previous one) holding ``RunWriter(**config)``."""
        self.close()
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        # NumPy and pyarrow in the child must not start thread pools beside training's.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self._spool = Path(tempfile.mkdtemp(prefix="trainmap-writer-"))
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from store.recording import serve; serve()", str(self._spool), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        # An epoch's arrays go through the pipe when they fit in half of it, so a write
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
        self.call("configure", config)

    def call(self, method: str, *args: Any) -> None:
        if self._process is None:
            raise StoreError("the recording writer process is not running")
        parts = _encode((method, args))
        if sum(memoryview(part).nbytes for part in parts) > self._pipe_limit:
            path = self._spool / f"{self._sent:08d}.frame"
            with open(path, "wb") as handle:
                _write(handle, parts)
            parts = _encode(("@file", (str(path),)))
        self._sent += 1
        try:
            _write(self._process.stdin, parts)
        except OSError:  # BrokenPipeError: the child is gone
            raise StoreError(self._died()) from None

    def drain(self) -> None:
        if self._process is None:
            return
        self.call("sync")
        try:
            error = _read_frame(self._process.stdout)
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
                _write(process.stdin, _encode(("@close", ())))
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


def serve() -> None:
    """The child's loop: run each call on its ``RunWriter`` in order; answer ``sync`` with
    the first error since the last one (or None); at end of input write what is queued."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(19)
    except (AttributeError, OSError):
        pass
    spool = Path(sys.argv[1])
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    parent = int(sys.argv[2])  # the training process (it may be gone before this runs)
    writer: RunWriter | None = None
    error: str | None = None
    closed = False
    while True:
        try:
            method, args = _read_frame(stdin)
        except EOFError:
            break
        if method == "@file":
            path = Path(args[0])
            with open(path, "rb") as handle:
                method, args = _read_frame(handle)
            path.unlink()
        if method == "@close":
            closed = True
            continue
        if method == "sync":
            _write(stdout, _encode(error))
            error = None
            continue
        try:
            if method == "configure":
                writer = RunWriter(**args[0])
            else:
                getattr(writer, method)(*args)
        except Exception as exc:  # reported at the next sync, in the training process
            traceback.print_exc()
            error = error or f"{type(exc).__name__}: {exc}"
    if writer is not None:  # what is still queued; if the training process went away, keep what it sent
        try:
            writer.write_pending()
            if not closed:
                writer.abandoned_by(parent)
        except Exception:
            traceback.print_exc()
    shutil.rmtree(spool, ignore_errors=True)
