"""``train(config) -> run_id``: one recorded training run of a built-in task (a classifier,
or the ``pydoc-lm`` language model).

Library code behind ``trainmap train``; it takes a frozen ``TrainConfig``
(``training.config``), never an argparse namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, TensorDataset

from store import Store
from store.curriculum.errors import CurriculumError
from training.config import TrainConfig
from training.models import build_model
from training.module import Classifier, IndexedDataset, LanguageModel, SequenceDataset
from training.pydoc_lm import load_pydoc_lm, text_dataset_table
from training.recorder import DynamicsRecorder
from training.tasks import SEQUENCE_TASKS, check_task_settings, default_epochs, load_task, symmetric_label_noise

logger = logging.getLogger(__name__)

#: Validation batch size (no gradients: larger than a training batch).
VAL_BATCH_SIZE = 512


def samples_table(sample_ids: np.ndarray, label: np.ndarray, original_label: np.ndarray, noisy: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array(sample_ids, pa.int64()),
            "label": pa.array(label, pa.int64()),
            "original_label": pa.array(original_label, pa.int64()),
            "label_noisy": pa.array(noisy, pa.bool_()),
        }
    )


def ensure_dataset(store: Store, key: str, x: np.ndarray) -> None:
    """Write the task's training inputs once per store, for the dashboard's sample view."""
    path = store.dataset_path(key)
    if path.exists():
        return
    flat = x.reshape(len(x), -1).astype(np.float32)
    shape = list(x.shape[1:])
    table = pa.table(
        {
            "sample_id": pa.array(np.arange(len(x)), pa.int64()),
            "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]).cast(
                pa.list_(pa.float32())
            ),
            "shape": pa.array([shape] * len(x), pa.list_(pa.int32())),
        }
    )
    store.write_dataset(key, table)


@dataclass(frozen=True)
class TaskParts:
    """What ``train`` needs of a task: its datasets, model, LightningModule class and the
    run's ``samples`` table (``None``: none is recorded)."""

    dataset: Any  # IndexedDataset or SequenceDataset: sample_ids and weights by position
    val_dataset: Any
    model: Any
    module_class: type
    default_lr: float
    default_batch_size: int
    samples: pa.Table | None
    #: writes the task's inputs into a store (once per store), for the dashboard's sample view
    write_inputs: Callable[[Store], None]


def classification_parts(config: TrainConfig) -> TaskParts:
    task = load_task(config.task)
    noise = symmetric_label_noise(task.train_y, config.label_noise, task.num_classes, config.label_noise_seed)
    sample_ids = np.arange(len(task.train_y))
    L.seed_everything(config.seed, workers=True, verbose=False)
    return TaskParts(
        dataset=IndexedDataset(task.train_x, noise.label, sample_ids),
        val_dataset=TensorDataset(torch.as_tensor(task.val_x), torch.as_tensor(task.val_y)),
        model=build_model(config.model, task.input_shape, task.num_classes),
        module_class=Classifier,
        default_lr=task.default_lr,
        default_batch_size=task.default_batch_size,
        samples=samples_table(sample_ids, noise.label, noise.original_label, noise.label_noisy),
        write_inputs=lambda store: ensure_dataset(store, config.task, task.train_x),
    )


def sequence_parts(config: TrainConfig) -> TaskParts:
    """``pydoc-lm``: byte sequences with a group each."""
    task = load_pydoc_lm()

    def write_inputs(store: Store) -> None:
        if not store.dataset_path(config.task).exists():
            store.write_dataset(config.task, text_dataset_table(task.train))

    L.seed_everything(config.seed, workers=True, verbose=False)
    return TaskParts(
        dataset=SequenceDataset(task.train.x, task.train.y, task.train.groups),
        val_dataset=TensorDataset(torch.as_tensor(task.val.x), torch.as_tensor(task.val.y)),
        model=build_model(config.model, (task.sequence_length,), task.vocab_size),
        module_class=LanguageModel,
        default_lr=task.default_lr,
        default_batch_size=task.default_batch_size,
        samples=None,
        write_inputs=write_inputs,
    )


def check_accelerator(accelerator: str, devices: int) -> None:
    """``ValueError`` in one line when ``accelerator`` cannot run ``devices`` processes here."""
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if devices > available:
            raise ValueError(f"--accelerator {accelerator} --devices {devices}: this machine has {available} CUDA "
                             "GPU(s); expected --accelerator cpu, or a machine with the GPUs")
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--accelerator mps: no Apple MPS device here; expected --accelerator cpu")


def resume_config(store_path: str, run_id: str, epochs: int | None = None) -> TrainConfig:
    """The settings run ``run_id`` of ``store_path`` was trained with (its run.json), with
    ``epochs`` if given; ``ValueError`` when it cannot be resumed (still training, finished
    with all its epochs, or without a checkpoint)."""
    from training.resume import check_checkpoint, checkpoint_path

    store = Store(store_path)
    state = store.run_state(run_id)
    if state["status"] == "running":
        raise ValueError(f"run {run_id} is still training (pid {state.get('pid')}); expected a run that stopped")
    damaged = store.damaged_file(run_id)
    if damaged is not None:
        raise ValueError(f"cannot resume run {run_id}: {damaged}")
    if not checkpoint_path(store, run_id).exists():
        raise ValueError(f"run {run_id} has no checkpoint ({checkpoint_path(store, run_id)}); only runs trained by "
                         "trainmap train since checkpoints were kept can be resumed")
    check_checkpoint(checkpoint_path(store, run_id))
    fields = {name: value for name, value in (state.get("config") or {}).items()
              if name in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**{**fields, "store": str(store_path), "epochs": epochs or fields.get("epochs")})
    done = int(state.get("epochs_done") or 0)
    if config.epochs is not None and config.epochs <= done:
        raise ValueError(f"run {run_id} has recorded {done} epoch(s); expected --epochs above {done} to resume it")
    return config


def train(config: TrainConfig, resume: str | None = None) -> str:
    """Train one run, recording it into ``config.store``; return its run id. ``resume``: the
    id of a stopped run of that store to continue from its checkpoint (``resume_config``)."""
    config.validate()
    check_task_settings(config.task, config.model, config.label_noise)
    if config.epochs is None:
        config = dataclasses.replace(config, epochs=default_epochs(config.task))
    check_accelerator(config.accelerator, config.devices)
    is_worker = int(os.environ.get("LOCAL_RANK", "0")) != 0 or int(os.environ.get("NODE_RANK", "0")) != 0
    build_parts = sequence_parts if config.task in SEQUENCE_TASKS else classification_parts
    parts = build_parts(config)
    dataset = parts.dataset
    batch_size = config.batch_size or parts.default_batch_size
    module_kwargs: dict[str, Any] = {}
    sampler = None
    parent_run_id = None
    curriculum_name = None
    reload_every = 0
    if config.curriculum is not None:
        from training.curriculum_run import attach_curriculum

        from training.distributed_curriculum import (
            DistributedCurriculumSampler,
            gathered_batch_losses,
            gathered_online_weights,
        )

        attachment = attach_curriculum(config, dataset, task_name=config.task, batch_size=batch_size)
        if attachment.curriculum.online and config.strategy == "ddp_spawn" and config.devices > 1:
            # ddp_spawn pickles the module for each process, and an online rule's hooks plan
            # from state the parent process holds: they cannot travel that way
            raise CurriculumError(f"an online rule ({attachment.curriculum.online['rule']}) cannot run under "
                             "--strategy ddp_spawn; expected --strategy ddp")
        # Under DDP every rank draws the same global epoch and takes its share (Lightning
        # keeps a DistributedSampler it is given); the ranks are read from torch.distributed
        # at each epoch's draw, and in one process it draws exactly what the sampler draws.
        sampler = None if attachment.sampler is None else DistributedCurriculumSampler(attachment.sampler)
        module_kwargs.update(attachment.module_kwargs)
        if "on_batch_losses" in module_kwargs:  # InfoBatch, self-paced: every rank learns every loss
            module_kwargs["on_batch_losses"] = gathered_batch_losses(module_kwargs["on_batch_losses"])
        if "online_weights" in module_kwargs:  # loss reweighting over the step's global batch
            module_kwargs["online_weights"] = gathered_online_weights(module_kwargs["online_weights"])
        parent_run_id = attachment.parent_run_id
        curriculum_name = attachment.curriculum_label
        reload_every = getattr(attachment, "reload_dataloaders_every_n_epochs", 0)
    # Everything above can refuse the run (settings, the accelerator, the curriculum file):
    # only now is anything written, so a refused command leaves no store behind.
    store = Store(config.store, create=True)
    if not is_worker:
        parts.write_inputs(store)

    train_loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(config.seed) if sampler is None else None,
    )
    val_loader = DataLoader(parts.val_dataset, batch_size=VAL_BATCH_SIZE)
    module = parts.module_class(
        parts.model, lr=config.lr or parts.default_lr, weight_decay=config.weight_decay, **module_kwargs
    )
    grand_recording = None
    if config.grand is not None:
        from training.grand import GrandRecording, GrandSchedule

        schedule = GrandSchedule.parse(config.grand)
        grand_recording = GrandRecording(schedule, loss_reduction="weighted_mean")
    recorder = DynamicsRecorder(
        store,
        run_name=config.name,
        task=config.task,
        model_name=config.model,
        seed=config.seed,
        config=dataclasses.asdict(config),
        samples=parts.samples,
        parent_run_id=parent_run_id,
        curriculum=curriculum_name,
        dataset_key=config.task,
        grand=grand_recording,
        record_grad_norms=config.grad_norm_every > 0,
        grad_norm_every_n_steps=max(config.grad_norm_every, 1),
    )
    from training.resume import RunCheckpoint, checkpoint_path

    ckpt_path = str(checkpoint_path(store, resume)) if resume is not None else None
    latest_loss = attachment.latest_loss if config.curriculum is not None else None
    rule_state = [OnlineRuleState(latest_loss)] if latest_loss is not None else []
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        # the checkpoint after the recorder; an online rule's losses go into the checkpoint
        callbacks=[recorder, *rule_state, RunCheckpoint(store, recorder)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=config.progress,
        deterministic=True,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=reload_every,
    )
    with hang_up_as_interrupt() as hung_up:
        try:
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path,
                        weights_only=False)  # our own checkpoint: it holds the recorder's state too
        except SystemExit:
            # Lightning answers Ctrl-C by recording the interruption (the recorder marks the
            # run and writes what it has) and then sys.exit(1). Say it was an interrupt, so
            # the CLI reports it as one (exit status 130) instead of failing silently.
            if trainer.interrupted:
                record_interrupt(store, trainer, recorder.run_id, hung_up)
                raise KeyboardInterrupt from None
            raise
    if recorder.run_id is None:
        raise RuntimeError("training did not start; no run was recorded")
    if trainer.interrupted:
        record_interrupt(store, trainer, recorder.run_id, hung_up)
    return recorder.run_id


class OnlineRuleState(L.Callback):
    """Keeps an online rule's latest losses (``training.curriculum_run.LatestLoss``) in the
    run's checkpoint, so that ``--resume`` plans the next epoch from the same losses as a run
    that was never stopped."""

    def __init__(self, latest_loss: Any) -> None:
        self.latest_loss = latest_loss

    def state_dict(self) -> dict[str, Any]:
        return self.latest_loss.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.latest_loss.load_state_dict(state_dict)


def record_interrupt(store: Store, trainer: L.Trainer, run_id: str | None, hung_up: list[int]) -> None:
    """Write that the run was interrupted, and by which signal, unless it says so already."""
    if run_id is None or not trainer.is_global_zero:
        return
    info = store.run_info(run_id)
    if info.get("status") == "running" or hung_up:
        signal_name = "SIGHUP (its terminal or SSH session closed)" if hung_up else "SIGINT (Ctrl-C)"
        store.update_run(run_id, status="interrupted", error=f"interrupted by {signal_name}; the recorded epochs are kept")


class HangUp(KeyboardInterrupt):
    """SIGHUP, raised in the training process as Ctrl-C is, so Lightning stops the run the
    same way (the recorder writes what it has, the run reads ``interrupted``)."""


@contextlib.contextmanager
def hang_up_as_interrupt() -> Iterator[list[int]]:
    """While training, turn SIGHUP (a closed terminal or SSH session, which by default kills
    the process and leaves the run to be found dead) into ``HangUp``; yields a list that is
    non-empty once one arrived. Only in the main thread, and only over the default handler."""
    received: list[int] = []
    hup = getattr(signal, "SIGHUP", None)
    if hup is None or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(hup) is not signal.SIG_DFL:
        yield received
        return

    def on_hang_up(signum: int, frame: Any) -> None:
        received.append(signum)
        raise HangUp()

    signal.signal(hup, on_hang_up)
    try:
        yield received
    finally:
        signal.signal(hup, signal.SIG_DFL)
