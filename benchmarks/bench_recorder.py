"""Recording overhead of DynamicsRecorder relative to the same Lightning training without it.

Interleaved repeats (plain, recorded, plain, recorded, ...) of a short MNIST-1D fit, the
same seed, data order and model in both; the ratio of the median wall times is the
overhead. The recorded run includes writing its segments and compacting at the end.

    python benchmarks/bench_recorder.py [--repeats 7] [--epochs 3] [--out benchmarks/results/recorder.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from training.models import build_model
from training.module import Classifier, IndexedDataset
from training.recorder import DynamicsRecorder
from training.tasks import load_task

warnings.filterwarnings("ignore")


class LoopTimer(L.Callback):
    """Wall time of the training loop: on_train_start to on_train_end (before finalisation)."""

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def fit_seconds(model_name: str, epochs: int, record: bool, store: Path) -> tuple[float, float]:
    """(training-loop seconds, whole-fit seconds incl. the recorder's compaction)."""
    task = load_task("mnist1d")
    L.seed_everything(0, verbose=False)
    dataset = IndexedDataset(task.train_x, task.train_y)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    module = Classifier(build_model(model_name, task.input_shape, task.num_classes), lr=task.default_lr)
    timer = LoopTimer()
    callbacks = [timer] + ([DynamicsRecorder(store, task="mnist1d", model_name=model_name)] if record else [])
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, loader)
    return timer.seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/recorder.md")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    lines = [
        "# Recording overhead of DynamicsRecorder",
        "",
        f"Measured {dt.date.today().isoformat()} by `python benchmarks/bench_recorder.py --repeats {args.repeats} --epochs {args.epochs}`",
        f"on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__},",
        f"{torch.get_num_threads()} torch threads, lightning {L.__version__}. MNIST-1D (4,000 training samples), batch 64,",
        f"{args.epochs} epochs per fit (~{63 * args.epochs} steps), no validation; repeats interleaved plain / recorded.",
        "The recorded fit includes writing one Parquet segment per table per epoch and the final compaction.",
        "",
        "Training loop = on_train_start to on_train_end: every step and every epoch's recording",
        "(per-step logit copies and gradient norms, per-epoch scores and segment writes, which a",
        "background thread overlaps with the next epoch). Whole fit adds the one-time finalisation",
        "(waiting for the last writes, compacting the run into one sorted file per table, and",
        "materialising the per-sample summary).",
        "",
        "| model | plain loop (median s) | recorded loop (median s) | loop ratio | plain fit (s) | recorded fit (s) | whole-fit ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in ("mlp", "cnn"):
            fit_seconds(model_name, 1, False, Path(tmp) / "warm")  # warm-up (imports, data, allocator)
            fit_seconds(model_name, 1, True, Path(tmp) / "warm")
            plain, recorded = [], []
            for repeat in range(args.repeats):
                plain.append(fit_seconds(model_name, args.epochs, False, Path(tmp) / f"s{repeat}"))
                recorded.append(fit_seconds(model_name, args.epochs, True, Path(tmp) / f"s{repeat}"))
            p_loop = statistics.median(t[0] for t in plain)
            r_loop = statistics.median(t[0] for t in recorded)
            p_fit = statistics.median(t[1] for t in plain)
            r_fit = statistics.median(t[1] for t in recorded)
            print(f"{model_name}: loop {p_loop:.3f}s -> {r_loop:.3f}s ({r_loop / p_loop:.3f}x), "
                  f"fit {p_fit:.3f}s -> {r_fit:.3f}s ({r_fit / p_fit:.3f}x)", flush=True)
            lines.append(
                f"| {model_name} | {p_loop:.3f} | {r_loop:.3f} | {r_loop / p_loop:.3f} | "
                f"{p_fit:.3f} | {r_fit:.3f} | {r_fit / p_fit:.3f} |"
            )
    lines += ["", "Target (issue 2): recording overhead ≤ 3 % of step time (the loop ratio) for the MLP and the CNN."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
