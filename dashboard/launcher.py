"""Launch ``trainmap train --curriculum FILE`` reruns from the dashboard (torch-free).

The child is ``[sys.executable, "-m", "training.cli", "train", ...]``: no shell, every
argument validated here first, its own session (``start_new_session=True``) so it
outlives the Streamlit script run that started it; stdout/stderr go to a log file under
``<store>/curricula/launches/``. The dashboard keeps the returned ``Launch`` in
``st.session_state`` and polls ``launch_status``; progress comes from the run's
``run.json`` (``epochs_done`` / ``max_epochs``), found by the launch's unique run name.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.errors import StoreError
from store.layout import Store
from store.settings import MODEL_NAMES, TASK_NAMES, check_label_noise

REPO = Path(__file__).resolve().parent.parent
TRAINING_EXTRA = "pip install 'trainmap[train]'"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,80}$")


class LaunchError(ValueError):
    """Arguments that would not make a valid ``trainmap train`` command."""


@dataclass
class Launch:
    args: list[str]
    name: str
    store: str
    log_path: str
    process: subprocess.Popen | None = field(default=None, repr=False)
    started_at: str = ""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


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


def rerun_args(
    parent_config: dict[str, Any],
    curriculum: str | os.PathLike[str],
    *,
    store: str | os.PathLike[str],
    name: str,
    epochs: int | None = None,
    keep_steps: bool = False,
) -> list[str]:
    """``trainmap train`` arguments that repeat the parent's config with a curriculum."""
    task = parent_config.get("task")
    model = parent_config.get("model")
    if task not in TASK_NAMES:
        raise LaunchError(f"the parent's task {task!r} is not a built-in task ({', '.join(TASK_NAMES)}); "
                          "train such reruns from your own script")
    if model not in MODEL_NAMES:
        raise LaunchError(f"the parent's model {model!r} is not one of {', '.join(MODEL_NAMES)}")
    if not _NAME.match(name):
        raise LaunchError(f"run name {name!r} may only hold letters, digits, '.', '_' and '-'")
    curriculum_path = Path(curriculum)
    if not curriculum_path.is_file():
        raise LaunchError(f"curriculum file {str(curriculum_path)!r} does not exist")
    epochs = _int(epochs if epochs is not None else parent_config.get("epochs", 20), "epochs", 1)
    try:
        noise = check_label_noise(parent_config.get("label_noise") or 0.0)
    except ValueError as error:
        raise LaunchError(str(error)) from error
    args = [
        "train", "--task", task, "--model", model, "--epochs", str(epochs),
        "--seed", str(_int(parent_config.get("seed", 0), "seed")),
        "--label-noise", repr(noise),
        "--label-noise-seed", str(_int(parent_config.get("label_noise_seed", 0), "label noise seed")),
        "--curriculum", str(curriculum_path.resolve()),
        "--store", str(Path(store).resolve()),
        "--name", name, "--no-progress",
    ]
    if parent_config.get("batch_size") is not None:
        args += ["--batch-size", str(_int(parent_config["batch_size"], "batch size", 1))]
    if parent_config.get("lr") is not None:
        lr = float(parent_config["lr"])
        if not lr > 0:
            raise LaunchError(f"learning rate must be positive, got {lr}")
        args += ["--lr", repr(lr)]
    if parent_config.get("grad_norm_every") is not None:  # the parent's sampling of gradient norms
        args += ["--grad-norm-every", str(_int(parent_config["grad_norm_every"], "gradient-norm interval", 0))]
    if keep_steps:
        args.append("--keep-steps")
    return args


def unique_name(prefix: str = "rerun") -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(2)}"


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


def launch(args: list[str], *, store: str | os.PathLike[str], name: str) -> Launch:
    """Start ``python -m training.cli <args>`` in its own session; return its handle."""
    if not args or args[0] != "train":
        raise LaunchError("only `trainmap train` can be launched")
    check_can_train()
    folder = Path(store) / "curricula" / "launches"
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "training.cli", *args],
            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Launch(args=list(args), name=name, store=str(store), log_path=str(log_path), process=process,
                  started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def find_run(store: str | os.PathLike[str], name: str) -> tuple[str | None, dict[str, Any] | None]:
    """The run (id, run.json) that carries ``name``, if it was created yet (newest first)."""
    runs = Store(store)
    for run_id in reversed(runs.run_ids()):
        try:
            info = runs.run_info(run_id)
        except StoreError:  # an unreadable run.json is not this launch's run (yet)
            continue
        if info.get("name") == name:
            return run_id, info
    return None, None


def launch_status(launch: Launch) -> dict[str, Any]:
    """``state`` (starting / running / finished / failed), ``run_id``, ``epochs_done``,
    ``max_epochs``, ``returncode``, and the log's last lines when it failed."""
    returncode = None if launch.process is None else launch.process.poll()
    run_id, info = find_run(launch.store, launch.name)
    status: dict[str, Any] = {
        "run_id": run_id,
        "epochs_done": (info or {}).get("epochs_done", 0),
        "max_epochs": (info or {}).get("max_epochs"),
        "returncode": returncode,
        "run_status": (info or {}).get("status"),
    }
    if returncode is None:
        status["state"] = "running" if run_id else "starting"
    elif returncode == 0 and (info or {}).get("status") == "finished":
        status["state"] = "finished"
    else:
        status["state"] = "failed"
        try:
            status["log_tail"] = Path(launch.log_path).read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            status["log_tail"] = []
    return status
