"""Rerun arguments and processes for the dashboard (torch-free, no streamlit).

``rerun_args`` turns a parent's run.json ``config`` into the ``trainmap train`` argument
list that repeats every one of its settings with a curriculum (no shell: every argument
validated here first). Reruns are queued as jobs in the store (``store.jobs``, through
``dashboard.data_jobs``); ``start_executor`` starts ``trainmap jobs run`` in its own
session (``start_new_session=True``), so it outlives the Streamlit script run (and the
dashboard) that started it and drains the queue one job after another.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from store.settings import MODEL_NAMES, TASK_NAMES, check_label_noise

REPO = Path(__file__).resolve().parent.parent
TRAINING_EXTRA = "pip install 'trainmap[train]'"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,80}$")
#: Executors this process started: polled, so that one that exits is reaped (no zombie).
_STARTED: list[subprocess.Popen] = []


class LaunchError(ValueError):
    """Arguments that would not make a valid ``trainmap train`` command."""


def _int(value: Any, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise LaunchError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise LaunchError(f"{what} must be an integer, got {value!r}") from None
    if number != value and not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        raise LaunchError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise LaunchError(f"{what} must be >= {minimum}, got {number}")
    return number


#: ``trainmap train`` has no option for these config keys: a parent must have had the
#: default (``training.config.TrainConfig``, checked by tests/dashboard/test_launcher.py).
FIXED_SETTINGS = {"weight_decay": 1e-2}
#: Config keys that are not settings of the training: the rerun's own (or display only).
NOT_REPEATED = ("name", "store", "curriculum", "progress")


def _option(args: list[str], flag: str, value: Any) -> None:
    args += [flag, value]


def rerun_args(
    parent_config: dict[str, Any],
    curriculum: str | os.PathLike[str],
    *,
    store: str | os.PathLike[str],
    name: str,
    epochs: int | None = None,
    keep_steps: bool | None = None,
    seed: int | None = None,
) -> list[str]:
    """``trainmap train`` arguments that repeat every setting of the parent's run.json
    ``config`` with a curriculum; ``epochs``, ``keep_steps`` and ``seed`` override the
    parent's when given. A config key this function does not know is refused, so that no
    setting is ever dropped silently."""
    unknown = sorted(set(parent_config) - set(REPEATED) - set(FIXED_SETTINGS) - set(NOT_REPEATED))
    if unknown:
        raise LaunchError(f"the parent's config has setting(s) {', '.join(unknown)} that a rerun from the dashboard "
                          "cannot repeat; rerun it with `trainmap train` from the command line")
    task = parent_config.get("task")
    model = parent_config.get("model")
    if task not in TASK_NAMES:
        raise LaunchError(f"the parent's task {task!r} is not a built-in task ({', '.join(TASK_NAMES)}); "
                          "train such reruns from your own script")
    if model not in MODEL_NAMES:
        raise LaunchError(f"the parent's model {model!r} is not one of {', '.join(MODEL_NAMES)}")
    check_name(name)
    for key, default in FIXED_SETTINGS.items():
        if parent_config.get(key) not in (None, default):
            raise LaunchError(f"the parent's {key} is {parent_config[key]!r}, but `trainmap train` always uses "
                              f"{default!r}; rerun it from your own script")
    curriculum_path = Path(curriculum)
    if not curriculum_path.is_file():
        raise LaunchError(f"curriculum file {str(curriculum_path)!r} does not exist")
    epochs = _int(epochs if epochs is not None else parent_config.get("epochs", 20), "epochs", 1)
    seed = _int(seed if seed is not None else parent_config.get("seed", 0), "seed", 0)
    try:
        noise = check_label_noise(parent_config.get("label_noise") or 0.0)
    except ValueError as error:
        raise LaunchError(str(error)) from error
    args = [
        "train", "--task", task, "--model", model, "--epochs", str(epochs), "--seed", str(seed),
        "--label-noise", repr(noise),
        "--label-noise-seed", str(_int(parent_config.get("label_noise_seed", 0), "label noise seed", 0)),
        "--curriculum", str(curriculum_path.resolve()),
        "--store", str(Path(store).resolve()),
        "--name", name, "--no-progress",
    ]
    if parent_config.get("batch_size") is not None:
        _option(args, "--batch-size", str(_int(parent_config["batch_size"], "batch size", 1)))
    if parent_config.get("lr") is not None:
        lr = float(parent_config["lr"])
        if not lr > 0:
            raise LaunchError(f"learning rate must be positive, got {lr}")
        _option(args, "--lr", repr(lr))
    if parent_config.get("grad_norm_every") is not None:  # the parent's sampling of gradient norms
        _option(args, "--grad-norm-every", str(_int(parent_config["grad_norm_every"], "gradient-norm interval", 0)))
    grand = parent_config.get("grand")
    if grand is not None:
        if not isinstance(grand, str) or not _GRAND.match(grand):
            raise LaunchError(f"the parent's GraNd schedule {grand!r} is not a schedule `trainmap train --grand` takes")
        _option(args, "--grand", grand)
    for key, flag, choices in (("devices", "--devices", None), ("strategy", "--strategy", _STRATEGIES),
                               ("accelerator", "--accelerator", _ACCELERATORS)):
        value = parent_config.get(key)
        if value is None:
            continue
        if choices is None:
            value = str(_int(value, key, 1))
        elif value not in choices:
            raise LaunchError(f"the parent's {key} {value!r} is not one of {', '.join(choices)}")
        _option(args, flag, value)
    if keep_steps if keep_steps is not None else bool(parent_config.get("keep_steps")):
        args.append("--keep-steps")
    return args


#: The config keys ``rerun_args`` passes on (``NOT_REPEATED`` and ``FIXED_SETTINGS`` aside).
REPEATED = ("task", "model", "epochs", "seed", "label_noise", "label_noise_seed", "batch_size", "lr",
            "grad_norm_every", "grand", "devices", "strategy", "accelerator", "keep_steps")
_STRATEGIES = ("auto", "ddp", "ddp_spawn")
_ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
_GRAND = re.compile(r"^[A-Za-z0-9:+,]{1,200}$")


def check_name(name: str) -> str:
    """``name`` if it is a valid run name, else ``LaunchError`` saying what is allowed."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise LaunchError(f"run name {name!r} may only hold letters, digits, '.', '_' and '-' (1 to 80 of them)")
    return name


def suggest_name(parent_name: str, strategy: str, score: str | None, taken: set[str] | frozenset[str]) -> str:
    """``<parent name>-<strategy>-<score>`` (characters a name may not hold become '-'),
    with ``-2``, ``-3``, ... when that name is ``taken``."""
    parts = [parent_name or "rerun", strategy] + ([score] if score else [])
    return free_name(re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-")[:72] or "rerun", taken)


def free_name(base: str, taken: set[str] | frozenset[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first that is not ``taken``."""
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def importable(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (the dashboard stays torch-free)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_can_train() -> None:
    """Refuse, naming the extra to install, when this interpreter cannot train (no torch)."""
    missing = [module for module in ("torch", "lightning") if not importable(module)]
    if missing:
        raise LaunchError(f"a rerun trains a model, which needs {' and '.join(missing)}: install the "
                          f"training extra ({TRAINING_EXTRA}) where the dashboard runs")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def reap() -> None:
    """Collect the exit status of the executors this process started that have ended, so
    that none lingers as a zombie (which ``kill(pid, 0)`` would still report alive)."""
    for process in list(_STARTED):
        if process.poll() is not None:
            _STARTED.remove(process)


def start_executor(store: str | os.PathLike[str]) -> int:
    """Start ``trainmap jobs run --store STORE`` detached; return its pid. The caller checks
    first that no live executor holds the store (``store.jobs.executor_holder``); a second
    one started anyway finds the lock taken and exits at once."""
    check_can_train()
    reap()
    folder = Path(store) / "jobs" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "executor.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "training.cli", "jobs", "run", "--store", str(Path(store).resolve())],
            cwd=str(REPO), env=_child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _STARTED.append(process)
    return process.pid
