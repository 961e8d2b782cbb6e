"""Shared fixtures: a store with a synthetic run whose presentations we choose."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("PYTHONHASHSEED", "0")

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
