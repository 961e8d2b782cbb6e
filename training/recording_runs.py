"""A ``training.recording_session.Recorder``'s run in the store: its settings checked, the run
created (rank zero) or reopened to resume, and where its collectives' tensors live."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from store.errors import StoreError
from store.layout import HEARTBEAT_SECS, Store
from store.progress import StepProgress, write_progress
from store.recording.rows import samples_table
from store.settings import MONITOR_DATALOADER_FIELD

__all__ = ["Heartbeat", "step_progress", "outcome_of", "check_settings", "create_run", "device_of", "resume_run", "store_folder"]

logger = logging.getLogger(__name__)
#: How often a training process publishes its step progress (store.progress).
PROGRESS_SECS = 2.0


def check_settings(*, grad_norm_every_n_steps: Any, chunk_rows: Any, monitor_dataloader_idx: Any, flush_secs: Any) -> None:
    """Raise one clear ``ValueError`` for a setting out of its range."""
    for name, value, expected, low in (
        ("grad_norm_every_n_steps", grad_norm_every_n_steps, "a positive integer", 1),
        ("chunk_rows", chunk_rows, "a positive integer", 1),
        ("monitor_dataloader_idx", monitor_dataloader_idx, "an integer >= 0", 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be {expected}, got {value!r}")
    if not flush_secs >= 0:
        raise ValueError(f"flush_secs must be >= 0 seconds, got {flush_secs!r}")


def store_folder(store: str | os.PathLike[str] | Store) -> Path:
    """The store's folder (created later, at the first write); a file there is refused."""
    path = Path(store.root if isinstance(store, Store) else store)
    if path.exists() and not path.is_dir():
        raise StoreError(f"store path {str(path)!r} is a file; expected a directory")
    return path


def create_run(
    store: Store, *, name: str | None, samples: Any | None, monitor_dataloader_idx: int, **fields: Any
) -> str:
    """A new run (status ``running``) with its name (default: its id), the validation loader
    it monitors and, when given, its samples table; returns its id."""
    run_id = store.create_run(name=name or "", **fields)
    store.update_run(run_id, name=name or run_id, **{MONITOR_DATALOADER_FIELD: monitor_dataloader_idx})
    if samples is not None:
        store.write_samples(run_id, samples_table(samples))
    return run_id


def resume_run(
    store: Store, run_id: str, *, epoch: int, step: int, max_epochs: int | None, monitor_dataloader_idx: int
) -> None:
    """Reopen ``run_id`` to continue it from ``epoch``/``step`` (a checkpoint): rows recorded
    after that point (a run that went on, or died, after saving it) are dropped, or they
    would be presented twice."""
    if store.run_info(run_id).get("compacted"):
        store.reopen_run(run_id)
    store.truncate_run(run_id, epoch=epoch, step=step)
    store.update_run(
        run_id, status="running", error=None, finished_at=None, pid=os.getpid(), host=socket.gethostname(),
        max_epochs=max_epochs,
        **{MONITOR_DATALOADER_FIELD: monitor_dataloader_idx},
    )


def device_of(parameters: list[torch.nn.Parameter]) -> torch.device:
    """Where the collectives' tensors go: the model's device (NCCL needs CUDA tensors)."""
    return parameters[0].device if parameters else torch.device("cpu")


def step_progress(recorder: Any) -> Callable[[], StepProgress | None] | None:
    """For a recorder driven by Lightning (its ``collectives`` is the trainer's strategy): a
    function giving the trainer's step progress, read from the heartbeat thread. The total
    is computed once here, in the training thread (it may set up the data loaders); None
    when no trainer is reachable (a hand-written loop): then only the beat is written."""
    try:
        trainer = recorder.collectives.lightning_module.trainer
        total = trainer.estimated_stepping_batches
    except Exception:  # not Lightning, or no module attached: no step progress
        return None
    total_steps = int(total) if isinstance(total, (int, float)) and math.isfinite(total) else None

    def progress() -> StepProgress:
        return StepProgress(step=int(trainer.global_step), total_steps=total_steps,
                            epoch=int(trainer.current_epoch), max_epochs=trainer.max_epochs)

    return progress


class Heartbeat:
    """A daemon thread that touches the run's heartbeat file every ``HEARTBEAT_SECS`` while
    the run records (and compacts), so that readers can tell a run whose process was killed
    with its whole group, or lost with its node, from one that is still training
    (``store.layout.Store.run_state``). A thread, not the training loop: a long step or a
    long compaction must not look like a dead process.

    With ``progress`` (``step_progress``), it also publishes the run's step progress every
    ``progress_every`` seconds (``store.progress``), for the dashboard's job list."""

    def __init__(self, store: Store, run_id: str, every: float = HEARTBEAT_SECS,
                 progress: Callable[[], StepProgress | None] | None = None,
                 progress_every: float = PROGRESS_SECS) -> None:
        self.store, self.run_id, self.every = store, run_id, every
        self.progress, self.progress_every = progress, min(progress_every, every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainmap-heartbeat", daemon=True)
        self._warned = False
        self._last_beat = 0.0

    def start(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.progress is not None:
            self._publish()  # the last step, so that a finished run shows all of them

    def _run(self) -> None:
        tick = self.progress_every if self.progress is not None else self.every
        while not self._stop.wait(tick):
            if time.monotonic() - self._last_beat >= self.every - 1e-3:
                self._beat()
            elif self.progress is not None:
                self._publish()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        try:
            self.store.beat(self.run_id)
        except Exception as error:  # a full disk must not stop training; say it once
            self._warn(error)
        if self.progress is not None:
            self._publish()

    def _publish(self) -> None:
        try:
            progress = self.progress() if self.progress is not None else None
            if progress is not None:
                write_progress(self.store.root, self.run_id, progress)
        except Exception as error:
            self._warn(error)

    def _warn(self, error: Exception) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("cannot write the heartbeat of run %s: %s", self.run_id, error)


#: Exceptions that mean "stopped on purpose" (Ctrl-C; SIGTERM from ``timeout``, systemd,
#: ``docker stop`` or a scheduler, as Lightning raises it), by class name: Lightning's
#: ``SIGTERMException`` is not imported here.
_INTERRUPTS = {
    "KeyboardInterrupt": "interrupted by SIGINT (Ctrl-C)",
    "SIGTERMException": "interrupted by SIGTERM (timeout, systemd, docker stop or the cluster's scheduler)",
}


def outcome_of(exception: BaseException) -> tuple[str, str]:
    """The status (``failed`` or ``interrupted``) and the message a run ends with after
    ``exception``; the recorded epochs are kept either way."""
    for kind in type(exception).__mro__:
        if kind.__name__ in _INTERRUPTS:
            return "interrupted", _INTERRUPTS[kind.__name__] + "; the recorded epochs are kept"
    text = str(exception)
    return "failed", f"{type(exception).__name__}: {text}" if text else type(exception).__name__
