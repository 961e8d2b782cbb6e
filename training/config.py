"""What defines a training run of a built-in task: ``TrainConfig``, validated without torch.

The command line builds and validates a ``TrainConfig`` before it imports torch or
Lightning, so a bad flag is refused in a fraction of a second, and ``trainmap --help``
lists the tasks and models on an install without the training extra.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from store.errors import StoreError
from store.settings import MODEL_NAMES, TASK_NAMES, check_label_noise
STRATEGIES = ("auto", "ddp", "ddp_spawn")
#: The longest run name ``--name`` takes: it is a label in listings and page titles.
MAX_NAME_LENGTH = 200
#: Lightning accelerators ``trainmap train`` accepts (a GPU one is checked when training starts).
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Defaults are the task's tuned settings."""

    task: str = "mnist1d"
    model: str = "cnn"
    epochs: int | None = None  # None: the task's default (training.tasks.default_epochs)
    seed: int = 0
    label_noise: float = 0.0
    label_noise_seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-2
    store: str = "trainmap_runs"
    name: str | None = None
    devices: int = 1
    strategy: str = "auto"
    accelerator: str = "cpu"
    curriculum: str | None = None
    keep_steps: bool = False
    grand: str | None = None
    progress: bool = True
    grad_norm_every: int = 10  # gradient norms every N steps; 0: none

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what was expected."""
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASK_NAMES)}")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODEL_NAMES)}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        check_label_noise(self.label_noise)
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {self.batch_size}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive finite number, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.grad_norm_every < 0:
            raise ValueError(f"grad_norm_every must be >= 0 steps (0: none), got {self.grad_norm_every}")
        if self.devices < 1:
            raise ValueError(f"devices must be a positive integer, got {self.devices}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {self.accelerator!r}; expected one of {', '.join(ACCELERATORS)}")
        cores = os.cpu_count() or 1
        if self.accelerator == "cpu" and self.devices > cores:
            raise ValueError(f"--devices {self.devices} on the CPU starts {self.devices} training processes, but this "
                             f"machine has {cores} CPU core(s); expected at most {cores}")
        if self.label_noise_seed < 0:
            raise ValueError(f"label noise seed must be an integer >= 0, got {self.label_noise_seed}")
        if self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed}")
        if self.name is not None and (len(self.name) > MAX_NAME_LENGTH or not self.name.isprintable()):
            raise ValueError(f"run name {self.name[:40]!r}{'...' if len(self.name) > 40 else ''} ({len(self.name)} "
                             f"characters) is not a name; expected at most {MAX_NAME_LENGTH} printable characters "
                             "(no newlines or control characters)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        store_path = Path(self.store)
        if store_path.exists() and not store_path.is_dir():
            raise StoreError(f"store path {self.store!r} is a file; expected a directory (or a new path)")
        if self.curriculum is not None and not Path(self.curriculum).is_file():
            raise ValueError(f"curriculum file {self.curriculum!r} does not exist")
