"""Recording overhead of DynamicsRecorder relative to the same Lightning training without it.

This shared 2-core VM changes speed in phases of seconds (identical plain epochs measured
100 ms, then 130 ms a second later), so whole fits run one after the other cannot resolve
a few per cent. Instead each fit interleaves recorded and plain epochs: the recorder sits
behind a gate that forwards Lightning's per-epoch and per-step hooks to it only in every
other block of ``--block`` epochs (plain, plain, recorded, recorded, ...). Only the last
epoch of each block is timed, so a recorded block's timed epoch carries the writes the
previous recorded epoch left to the writer process (steady state), and a plain block's timed
epoch carries none. Each timed recorded epoch is divided by the mean of the timed plain
epochs on either side of it; the headline is the median of those ratios with its
interquartile range and a 95 % confidence interval of the median (order statistics).

The recorder runs with its defaults (gradient norms every 10th step), with gradient norms
every step (``grad_norm_every_n_steps=1``) and without them (``record_grad_norms=False``),
to show their share. An A/A control runs the same design with a gate around a callback that does nothing: its
ratio shows what the method reports when there is no overhead at all.

Each fit also ends with the recorder's one-time work (waiting for the last writes,
compacting the run, the per-sample summary), reported separately.

    python benchmarks/bench_recorder.py [--fits 8] [--epochs 24] [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from training.models import build_model
from training.module import Classifier, IndexedDataset
from training.recorder import DynamicsRecorder
from training.tasks import load_task

warnings.filterwarnings("ignore")

GATED_HOOKS = (
    "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end", "on_after_backward",
    "on_before_optimizer_step", "on_train_epoch_end", "on_validation_epoch_start",
    "on_validation_batch_end", "on_validation_epoch_end",
)


class Gate(L.Callback):
    """Forwards the per-epoch and per-step hooks to ``inner`` only in recorded blocks;
    set-up, start and end of training always."""

    def __init__(self, inner: L.Callback, block: int, offset: int) -> None:
        self.inner, self.block, self.offset = inner, block, offset

    def recorded(self, epoch: int) -> bool:
        return ((epoch + self.offset) // self.block) % 2 == 1

    def setup(self, trainer, pl_module, stage):
        self.inner.setup(trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module):
        self.inner.on_train_start(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module):
        self.inner.on_fit_end(trainer, pl_module)


def _gated(hook: str):
    def forward(self, trainer, *args, **kwargs):
        if self.recorded(trainer.current_epoch):
            return getattr(self.inner, hook)(trainer, *args, **kwargs)

    return forward


for _hook in GATED_HOOKS:
    setattr(Gate, _hook, _gated(_hook))


class Nothing(L.Callback):
    """The A/A control: the same gate, around a callback with empty hooks."""


class EpochTimer(L.Callback):
    """Epoch boundaries, registered after the gate so an epoch includes the recorder's
    end-of-epoch work."""

    def on_train_start(self, trainer, pl_module):
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.marks.append(time.perf_counter())
        self.train_end = self.marks[-1]


def gated_fit(task, model_name: str, epochs: int, block: int, offset: int, inner: L.Callback) -> tuple[list[tuple[bool, float]], float]:
    """((recorded?, seconds) per epoch, seconds from the end of training to the end of fit)."""
    L.seed_everything(0, verbose=False)
    dataset = IndexedDataset(task.train_x, task.train_y)
    loader = DataLoader(dataset, batch_size=task.default_batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    module = Classifier(build_model(model_name, task.input_shape, task.num_classes), lr=task.default_lr)
    gate, timer = Gate(inner, block, offset), EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[gate, timer], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    trainer.fit(module, loader)
    finalise = time.perf_counter() - timer.train_end
    seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    return [(gate.recorded(epoch), s) for epoch, s in enumerate(seconds)], finalise


def paired_ratios(epochs: list[tuple[bool, float]]) -> tuple[list[float], list[float], list[float]]:
    """Ratios of each timed recorded epoch to the mean of its timed plain neighbours, and the
    timed recorded and plain epochs themselves. Timed: the last epoch of each block."""
    timed = [epochs[i] for i in range(len(epochs)) if i + 1 == len(epochs) or epochs[i + 1][0] != epochs[i][0]]
    timed = timed[1:]  # the first block includes warm-up
    ratios = []
    for before, (recorded, seconds), after in zip(timed, timed[1:], timed[2:]):
        if recorded and not before[0] and not after[0]:
            ratios.append(seconds / ((before[1] + after[1]) / 2))
    return ratios, [s for r, s in timed if r], [s for r, s in timed if not r]


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics."""
    values = sorted(values)
    n = len(values)
    cdf = [sum(math.comb(n, i) for i in range(k + 1)) / 2**n for k in range(n + 1)]
    tail = (1 - confidence) / 2
    low = max([k for k in range(n) if cdf[k] <= tail], default=0)
    high = n - 1 - low
    return values[low], values[high]


def measure(task, model_name: str, args, make_inner) -> dict:
    ratios, recorded, plain, finalise = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        gated_fit(task, model_name, 2 * args.block + 1, args.block, 0, make_inner(Path(tmp) / "warm", model_name))
        for fit in range(args.fits):
            # alternate which kind of block comes first
            epochs, seconds = gated_fit(
                task, model_name, args.epochs, args.block, (fit % 2) * args.block, make_inner(Path(tmp) / f"f{fit}", model_name)
            )
            r, rec, pl = paired_ratios(epochs)
            ratios += r
            recorded += rec
            plain += pl
            finalise.append(seconds)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "n": len(ratios), "median": quartiles[1], "q1": quartiles[0], "q3": quartiles[2],
        "ci": median_ci(ratios), "plain_ms": 1000 * statistics.median(plain),
        "recorded_ms": 1000 * statistics.median(recorded), "finalise_ms": 1000 * statistics.median(finalise),
    }


def add_gated_arguments(parser: argparse.ArgumentParser, *, fits: int, epochs: int) -> None:
    """The options every epoch-interleaved measurement here takes."""
    parser.add_argument("--fits", type=int, default=fits, help=f"fits per model and variant (default {fits})")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"epochs per fit (default {epochs})")
    parser.add_argument("--block", type=int, default=2, help="epochs per plain / recorded block (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")


def parse_gated_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, check that a fit holds enough blocks to pair epochs, set torch's threads."""
    args = parser.parse_args()
    if args.epochs < 6 * args.block:
        parser.error(f"--epochs must be at least 6 blocks ({6 * args.block}) to pair epochs, got {args.epochs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gated_arguments(parser, fits=8, epochs=24)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--out", default="benchmarks/results/recorder.md")
    args = parse_gated_arguments(parser)
    task = load_task("mnist1d")
    variants = {
        "recorder (defaults: gradient norms every 10th step)": lambda store, model_name: DynamicsRecorder(
            store, task="mnist1d", model_name=model_name
        ),
        "recorder, gradient norms every step": lambda store, model_name: DynamicsRecorder(
            store, task="mnist1d", model_name=model_name, grad_norm_every_n_steps=1
        ),
        "recorder, record_grad_norms=False": lambda store, model_name: DynamicsRecorder(
            store, task="mnist1d", model_name=model_name, record_grad_norms=False
        ),
        "A/A control": lambda store, model_name: Nothing(),
    }
    command = (
        f"python benchmarks/bench_recorder.py --fits {args.fits} --epochs {args.epochs} --block {args.block} --models {args.models}"
        + (f" --threads {args.threads}" if args.threads else "")
    )
    lines = [
        "# Recording overhead of DynamicsRecorder",
        "",
        f"Measured {dt.date.today().isoformat()} by `{command}`",
        f"on {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__},",
        f"{torch.get_num_threads()} torch threads, lightning {L.__version__}. MNIST-1D ({len(task.train_y):,} training samples),",
        f"batch {task.default_batch_size}, no validation. Within each fit, blocks of {args.block} epochs alternate between",
        "plain and recorded (see the script's docstring); the last epoch of each block is timed and each",
        "recorded one is divided by the mean of the plain ones on either side.",
        "",
        "| model | variant | plain epoch (median ms) | recorded epoch (median ms) | ratio: median | IQR | 95 % CI of median | n | end of fit (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model_name in args.models.split(","):
        for variant, make_inner in variants.items():
            result = measure(task, model_name, args, make_inner)
            line = (
                f"| {model_name} | {variant} | {result['plain_ms']:.1f} | {result['recorded_ms']:.1f} | "
                f"**{result['median']:.3f}** | {result['q1']:.3f}–{result['q3']:.3f} | "
                f"{result['ci'][0]:.3f}–{result['ci'][1]:.3f} | {result['n']} | "
                + (f"{result['finalise_ms']:.0f} |" if variant.startswith("recorder") else "– |")
            )
            print(line, flush=True)
            lines.append(line)
    lines += [
        "",
        "Target (issue 2): recording overhead ≤ 3 % of step time for the MLP and the CNN.",
        "The end-of-fit column is the one-time finalisation (last writes, compaction into one sorted",
        "file per table, the per-sample summary), paid once per run.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
