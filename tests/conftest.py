"""Shared fixtures: a store with a synthetic run whose presentations we choose."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("PYTHONHASHSEED", "0")

# A suite started in the background by a shell without job control (`cmd &` in a script)
# inherits SIGINT ignored, and so would every trainer it starts: the Ctrl-C tests need it live.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SAMPLE_RUNS = REPO / "sample_runs"


def sample_run_ids() -> dict[str, str]:
    """name -> run_id of the shipped sample runs."""
    ids = {}
    for path in sorted((SAMPLE_RUNS / "runs").iterdir()):
        info = json.loads((path / "run.json").read_text())
        ids[info["name"]] = info["run_id"]
    return ids


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    """A copy of the shipped sample runs, shared by a test module."""
    from store import Store

    root = tmp_path_factory.mktemp("sample-runs") / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    return Store(root)


def write_synthetic_run(store, correct: np.ndarray, p_true: np.ndarray, margin: np.ndarray,
                        labels: np.ndarray | None = None, noisy: np.ndarray | None = None,
                        loss: np.ndarray | None = None, el2n: np.ndarray | None = None) -> str:
    """A run whose presentations are given as ``[samples, epochs]`` arrays (one per epoch)."""
    from store import compact_run

    num_samples, num_epochs = correct.shape
    labels = np.zeros(num_samples, dtype=np.int64) if labels is None else labels
    noisy = np.zeros(num_samples, dtype=bool) if noisy is None else noisy
    loss = -np.log(np.clip(p_true, 1e-7, 1)) if loss is None else loss
    el2n = np.sqrt(2) * (1 - p_true) if el2n is None else el2n
    run_id = store.create_run(name="synthetic", task="synthetic", model="none", seed=0, max_epochs=num_epochs)
    store.write_samples(
        run_id,
        pa.table({"sample_id": np.arange(num_samples), "label": labels,
                  "original_label": np.where(noisy, (labels + 1) % 10, labels), "label_noisy": noisy}),
    )
    for epoch in range(num_epochs):
        store.write_segment(
            run_id,
            "presentations",
            pa.table({
                "epoch": np.full(num_samples, epoch, dtype=np.int32),
                "step": np.full(num_samples, epoch, dtype=np.int64),
                "sample_id": np.arange(num_samples),
                "label": labels.astype(np.int32),
                "loss": loss[:, epoch].astype(np.float32),
                "p_true": p_true[:, epoch].astype(np.float32),
                "el2n": el2n[:, epoch].astype(np.float32),
                "correct": correct[:, epoch],
                "pred": labels.astype(np.int32),
                "margin": margin[:, epoch].astype(np.float32),
                "weight": np.ones(num_samples, dtype=np.float32),
                "grand_last": np.full(num_samples, np.nan, dtype=np.float32),
                "rank": np.zeros(num_samples, dtype=np.int16),
            }),
            f"r00-e{epoch:06d}",
        )
    return run_id


def _write_epoch_tables(store, run_id: str, epoch: int, loss: np.ndarray, correct: np.ndarray | None,
                        steps_per_epoch: int) -> None:
    """The per-epoch train row and the per-step rows a recorder writes beside the presentations."""
    store.write_segment(run_id, "epochs", pa.table({
        "epoch": np.array([epoch], np.int32), "split": ["train"],
        "loss_sum": np.array([float(loss.sum())]),
        "correct_sum": pa.array([None if correct is None else int(correct.sum())], pa.int64()),
        "num_samples": np.array([len(loss)], np.int64), "rank": np.zeros(1, np.int16),
    }), f"r00-e{epoch:06d}")
    steps = np.arange(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch, dtype=np.int64)
    store.write_segment(run_id, "steps", pa.table({
        "step": steps, "epoch": np.full(len(steps), epoch, np.int32),
        "loss": np.full(len(steps), float(loss.mean()), np.float32),
        "lr": np.full(len(steps), 0.1),
    }), f"r00-e{epoch:06d}")


def _finish(store, run_id: str, num_epochs: int, finish: bool) -> str:
    from store import compact_run

    if finish:
        store.update_run(run_id, status="finished", epochs_done=num_epochs)
        compact_run(store, run_id)
    else:
        store.update_run(run_id, epochs_done=num_epochs)
    return run_id


def write_loss_run(store, loss: np.ndarray, *, batch_size: int = 4, finish: bool = False,
                   name: str = "loss-only", task: str = "regression") -> str:
    """A run of a module that returns only ``per_sample_loss`` (run.json ``output_kind``
    "loss"), given as ``loss[samples, epochs]``: each presentation row holds loss, weight,
    step and ids; every classification column is null (``Store.write_segment`` conforms).
    No samples table: such a recorder has no class labels to write. ``finish`` marks the run
    finished and compacts it (summary materialised)."""
    num_samples, num_epochs = loss.shape
    run_id = store.create_run(name=name, task=task, model="none", seed=0, max_epochs=num_epochs)
    store.update_run(run_id, output_kind="loss")
    steps_per_epoch = -(-num_samples // batch_size)
    for epoch in range(num_epochs):
        store.write_segment(run_id, "presentations", pa.table({
            "epoch": np.full(num_samples, epoch, dtype=np.int32),
            "step": epoch * steps_per_epoch + np.arange(num_samples, dtype=np.int64) // batch_size,
            "sample_id": np.arange(num_samples, dtype=np.int64),
            "loss": loss[:, epoch].astype(np.float32),
            "weight": np.ones(num_samples, dtype=np.float32),
            "rank": np.zeros(num_samples, dtype=np.int16),
        }), f"r00-e{epoch:06d}")
        _write_epoch_tables(store, run_id, epoch, loss[:, epoch], None, steps_per_epoch)
    return _finish(store, run_id, num_epochs, finish)


def write_sequence_run(store, token_accuracy: np.ndarray, token_count: np.ndarray, loss: np.ndarray,
                       p_true: np.ndarray, margin: np.ndarray, *, threshold: float = 0.5,
                       batch_size: int = 4, finish: bool = False, name: str = "sequences") -> str:
    """A run of a causal LM (run.json ``output_kind`` "sequence", ``sequence_correct_threshold``
    ``threshold``): one presentation row per sequence, given as ``[sequences, epochs]`` arrays
    of token means (loss, p_true, margin; EL2N is sqrt(2)(1 - p_true)) and ``token_count``
    ``[sequences]``; ``correct`` = token accuracy >= ``threshold``, ``pred`` and ``label`` null."""
    num_samples, num_epochs = token_accuracy.shape
    run_id = store.create_run(name=name, task="lm", model="transformer", seed=0, max_epochs=num_epochs)
    store.update_run(run_id, output_kind="sequence", sequence_correct_threshold=threshold)
    steps_per_epoch = -(-num_samples // batch_size)
    for epoch in range(num_epochs):
        correct = token_accuracy[:, epoch] >= threshold
        store.write_segment(run_id, "presentations", pa.table({
            "epoch": np.full(num_samples, epoch, dtype=np.int32),
            "step": epoch * steps_per_epoch + np.arange(num_samples, dtype=np.int64) // batch_size,
            "sample_id": np.arange(num_samples, dtype=np.int64),
            "loss": loss[:, epoch].astype(np.float32),
            "p_true": p_true[:, epoch].astype(np.float32),
            "el2n": (np.sqrt(2) * (1 - p_true[:, epoch])).astype(np.float32),
            "correct": correct,
            "margin": margin[:, epoch].astype(np.float32),
            "weight": np.ones(num_samples, dtype=np.float32),
            "grand_last": np.full(num_samples, np.nan, dtype=np.float32),
            "rank": np.zeros(num_samples, dtype=np.int16),
            "token_count": token_count.astype(np.int32),
            "token_accuracy": token_accuracy[:, epoch].astype(np.float32),
        }), f"r00-e{epoch:06d}")
        _write_epoch_tables(store, run_id, epoch, loss[:, epoch], correct, steps_per_epoch)
    return _finish(store, run_id, num_epochs, finish)


@pytest.fixture
def store(tmp_path):
    from store import Store

    return Store(tmp_path / "store", create=True)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest runs page scripts as ``__main__`` and leaves that module in
    ``sys.modules``; multiprocessing's spawn (Lightning's ddp_spawn) re-runs ``__main__``
    in its children, which would then execute a dashboard page. Restore it after each test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
