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
    """Wall time of the training loop (on_train_start to on_train_end, before finalisation)
    and of each epoch: from one epoch's start to the next's, so an epoch's time includes
    everything the recorder does at its end. Registered last, so its hooks run after the
    recorder's."""

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()
        self.epoch_starts: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        end = time.perf_counter()
        self.seconds = end - self.start
        marks = self.epoch_starts + [end]
        self.epochs = [b - a for a, b in zip(marks, marks[1:])]


def fit_seconds(model_name: str, epochs: int, record: bool, store: Path) -> tuple[float, float, list[float]]:
    """(training-loop seconds, whole-fit seconds incl. the recorder's compaction, per-epoch seconds)."""
    task = load_task("mnist1d")
    L.seed_everything(0, verbose=False)
    dataset = IndexedDataset(task.train_x, task.train_y)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    module = Classifier(build_model(model_name, task.input_shape, task.num_classes), lr=task.default_lr)
    timer = LoopTimer()
    callbacks = ([DynamicsRecorder(store, task="mnist1d", model_name=model_name)] if record else []) + [timer]
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, loader)
    return timer.seconds, time.perf_counter() - start, timer.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--out", default="benchmarks/results/recorder.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = [
        "# Recording overhead of DynamicsRecorder",
        "",
        f"Measured {dt.date.today().isoformat()} by `python benchmarks/bench_recorder.py --repeats {args.repeats} --epochs {args.epochs}"
        + (f" --threads {args.threads}" if args.threads else "") + "`",
        f"on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__},",
        f"{torch.get_num_threads()} torch threads, lightning {L.__version__}. MNIST-1D (4,000 training samples), batch 64,",
        f"{args.epochs} epochs per fit (~{63 * args.epochs} steps), no validation; repeats interleaved plain / recorded",
        "(the order alternating between repeats).",
        "",
        "- **epoch ratio** (the headline): an epoch is timed from its start to the next epoch's, so it",
        "  includes the recorder's per-step hooks and its end-of-epoch work; epoch 0 of each fit is left",
        "  out (warm-up). Each repeat's recorded fit is divided by the plain fit run next to it (median",
        "  epoch over median epoch), and the table gives the median of those paired ratios with their",
        "  interquartile range: this shared VM's speed drifts by ±10-25 % between identical fits, and",
        "  pairing neighbours cancels the drift that pooled medians do not.",
        "- **loop ratio**: median over repeats of on_train_start → on_train_end.",
        "- **whole-fit ratio**: adds the one-time finalisation (waiting for the last writes, compacting",
        "  the run into one sorted file per table, materialising the per-sample summary).",
        "",
        "| model | plain epoch (median ms) | recorded epoch (median ms) | epoch ratio, paired (IQR) | loop ratio | whole-fit ratio |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models.split(","):
            fit_seconds(model_name, 2, False, Path(tmp) / "warm")  # warm-up (imports, data, allocator)
            fit_seconds(model_name, 2, True, Path(tmp) / "warm")
            plain, recorded = [], []
            for repeat in range(args.repeats):
                order = (False, True) if repeat % 2 == 0 else (True, False)
                for record in order:
                    result = fit_seconds(model_name, args.epochs, record, Path(tmp) / f"s{repeat}")
                    (recorded if record else plain).append(result)
            p_epoch = statistics.median(e for t in plain for e in t[2][1:])
            r_epoch = statistics.median(e for t in recorded for e in t[2][1:])
            # Paired: each repeat's recorded fit against the plain fit run next to it, so
            # that slow drifts of the machine's speed cancel; median and quartiles of those.
            paired = sorted(
                statistics.median(r[2][1:]) / statistics.median(q[2][1:]) for q, r in zip(plain, recorded)
            )
            quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
            p_loop = statistics.median(t[0] for t in plain)
            r_loop = statistics.median(t[0] for t in recorded)
            p_fit = statistics.median(t[1] for t in plain)
            r_fit = statistics.median(t[1] for t in recorded)
            print(f"{model_name}: epoch {1000 * p_epoch:.1f} ms -> {1000 * r_epoch:.1f} ms, paired ratio "
                  f"{quartiles[1]:.3f} (IQR {quartiles[0]:.3f}-{quartiles[2]:.3f}), "
                  f"loop {r_loop / p_loop:.3f}x, fit {r_fit / p_fit:.3f}x", flush=True)
            lines.append(
                f"| {model_name} | {1000 * p_epoch:.1f} | {1000 * r_epoch:.1f} | {quartiles[1]:.3f} "
                f"({quartiles[0]:.3f}–{quartiles[2]:.3f}) | {r_loop / p_loop:.3f} | {r_fit / p_fit:.3f} |"
            )
    lines += ["", "Target (issue 2): recording overhead ≤ 3 % of step time for the MLP and the CNN."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
