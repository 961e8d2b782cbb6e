"""A running run's step progress: ``<store>/runs/<run_id>/progress.json`` (this module owns it).

Written by the training process's heartbeat thread (``training.recording_runs.Heartbeat``)
every few seconds, atomically; read by the dashboard's job list to show
"step s/S · epoch e/E" while a rerun trains (run.json's ``epochs_done`` moves once per epoch).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from store.files import write_json_atomic

PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class StepProgress:
    """``step``: optimizer steps taken; ``total_steps``: of the whole run (None: unknown);
    ``epoch``: the epoch being trained (0-based); ``max_epochs``: None when unknown."""

    step: int
    total_steps: int | None
    epoch: int
    max_epochs: int | None

    def text(self) -> str:
        """``step 120/1260 · epoch 2/20`` (the epoch shown 1-based, as being trained)."""
        total = "?" if self.total_steps is None else self.total_steps
        epochs = "?" if self.max_epochs is None else self.max_epochs
        return f"step {self.step}/{total} · epoch {min(self.epoch + 1, self.max_epochs or self.epoch + 1)}/{epochs}"

    @property
    def fraction(self) -> float:
        if not self.total_steps:
            return 0.0
        return min(max(self.step / self.total_steps, 0.0), 1.0)


def progress_path(root: str | os.PathLike[str], run_id: str) -> Path:
    return Path(root) / "runs" / run_id / PROGRESS_FILE


def write_progress(root: str | os.PathLike[str], run_id: str, progress: StepProgress) -> None:
    write_json_atomic(progress_path(root, run_id), asdict(progress))


def _count(value: object, allow_none: bool) -> bool:
    if value is None:
        return allow_none
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_progress(root: str | os.PathLike[str], run_id: str) -> StepProgress | None:
    """The run's last published progress; None when there is none or it is not readable
    (progress is a display aid: a damaged file is the same as none)."""
    try:
        payload = json.loads(progress_path(root, run_id).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or not _count(payload.get("step"), False) \
            or not _count(payload.get("epoch"), False) or not _count(payload.get("total_steps"), True) \
            or not _count(payload.get("max_epochs"), True):
        return None
    return StepProgress(payload["step"], payload["total_steps"], payload["epoch"], payload["max_epochs"])
