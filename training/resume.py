"""Resuming a ``trainmap train`` run: the checkpoint it keeps in its run folder, and the
learning-rate schedule when the resumed run trains for more epochs.

Every epoch, once the recorder has handed the epoch to its writer, ``RunCheckpoint`` saves the
whole training state (model, optimiser, schedule, loops, the recorder's run id) to
``runs/<run_id>/checkpoint.ckpt``, atomically (a temporary name, then a rename), so a killed
run can go on from its last whole epoch: ``trainmap train --resume RUN_ID [--epochs N]``
(``training.run.train``). The recorder then drops the rows recorded after that checkpoint, so
no epoch is counted twice.

A one-cycle schedule is planned over the whole fit. Resumed with more epochs, the restored
schedule would run past its end; ``fit_schedule_to`` replaces it by the schedule the new
length gives, at the step the run had reached (as if it had been planned that long from the
start), and says so in the log.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from store.layout import Store

__all__ = ["CHECKPOINT_FILE", "RunCheckpoint", "check_checkpoint", "checkpoint_path", "fit_schedule_to"]

logger = logging.getLogger(__name__)

#: The checkpoint a ``trainmap train`` run keeps in its folder (the last whole epoch).
CHECKPOINT_FILE = "checkpoint.ckpt"


def checkpoint_path(store: Store, run_id: str) -> Path:
    return store.run_dir(run_id) / CHECKPOINT_FILE


def check_checkpoint(path: Path) -> None:
    """``ValueError`` naming ``path`` unless it is a whole checkpoint (``torch.save``'s zip
    archive, every member's CRC intact): checked before a resumed run starts."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"checkpoint {path} cannot be read ({error}); expected the checkpoint trainmap train "
                         "saves after each epoch (the run cannot be resumed from it)") from None
    if broken is not None:
        raise ValueError(f"checkpoint {path} is damaged (member {broken!r} fails its CRC); expected a whole "
                         "checkpoint (the run cannot be resumed from it)")


class RunCheckpoint(L.Callback):
    """Save the training state into the run's folder at the end of every epoch (after the
    recorder, which comes before it in the callbacks)."""

    def __init__(self, store: Store, recorder: Any) -> None:
        self.store, self.recorder = store, recorder

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.recorder.run_id is None:
            return
        path = checkpoint_path(self.store, self.recorder.run_id)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        trainer.save_checkpoint(temporary, weights_only=False)  # every rank calls it; rank zero writes
        if trainer.is_global_zero:
            os.replace(temporary, path)


def fit_schedule_to(checkpoint: dict[str, Any], scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Make ``checkpoint``'s saved one-cycle schedule the one ``scheduler`` plans (a fresh
    schedule for the new length), moved on to the step the checkpoint had reached, when the two
    differ in length. Other schedules are left as saved."""
    states = checkpoint.get("lr_schedulers") or []
    if not states or not isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        return
    saved = states[0]
    if saved.get("total_steps") == scheduler.total_steps:
        return
    reached = int(saved.get("last_epoch", 0))
    if reached > scheduler.total_steps:
        raise ValueError(f"the run had taken {reached} steps, more than the {scheduler.total_steps} the new "
                         "number of epochs plans; expected --epochs at least the epochs already trained")
    logger.info("resuming: the one-cycle schedule is re-planned over %d steps (was %d), at step %d",
                scheduler.total_steps, saved.get("total_steps"), reached)
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    fresh = torch.optim.lr_scheduler.OneCycleLR(
        probe, max_lr=scheduler.optimizer.param_groups[0]["max_lr"], total_steps=scheduler.total_steps,
    )
    for _ in range(reached):
        probe.step()
        fresh.step()
    states[0] = fresh.state_dict()
