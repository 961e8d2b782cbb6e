"""Generate a big synthetic but realistic run through the real writing path.

By default 50,000 samples x 200 epochs (10 M presentation rows); 1 M samples x 100 epochs
makes 100 M. The rows go the way a recorded run's go: the generator creates the run as the
recorder does, sends each epoch's presentations in chunks of at most 65,536 rows
(``RecordPresentations``), then its validation row (``RecordValidation``) and its steps and
totals (``RecordEpoch``) to the recording writer child process (``WriterProcess``, the one
``training.Recorder`` starts), which writes every chunk as its own segment; at the end the
run is finished as the recorder finishes it: ``compact_run`` (one sorted file per table and
the materialised summary), then status "finished". ``--in-process`` hands the same messages
to a ``RunWriter`` in this process instead of the child (no pipe, no spool files). The
task's inputs go under ``datasets/``. Everything is seeded; torch is not needed.

    python scripts/make_big_store.py /tmp/big_store --samples 50000 --epochs 200
    python scripts/make_big_store.py /tmp/huge_store --samples 1000000 --epochs 100

It prints the run id as its last line (``run_id: <id>``) and how long each phase took on
stderr (``--json FILE`` writes those numbers, for ``benchmarks/bench_big_store.py``).

Dynamics model, per sample i: a difficulty sets the epoch t_i at which it is learned and
how fast; p_true follows a noisy logistic curve in the epoch; 20 % of labels are flipped
and are learned late (memorised) or never; a few clean samples stay ambiguous and are
forgotten now and then. Each epoch presents the samples in a fresh random order, in
batches of 256 (the step of a presentation).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from store import Store  # noqa: E402
from store.layout import utc_now  # noqa: E402
from store.recording import (  # noqa: E402
    Configure,
    EpochTotals,
    Flush,
    RecordEpoch,
    RecordPresentations,
    RecordValidation,
    RunWriter,
    StepBuffers,
    WriterProcess,
)
from store.settings import MONITOR_DATALOADER_FIELD  # noqa: E402

NUM_CLASSES = 10
SIGNAL_LENGTH = 40
CHUNK_ROWS = 65_536  # the recorder's default chunk_rows
VAL_COUNT = 10_000
LAYERS = ("conv1", "conv2", "head")
START = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)


class SyntheticDynamics:
    """The per-sample difficulty of a synthetic run, and each epoch's presentations from it.

    Epoch ``e`` is drawn from its own seeded generator, so epochs can be made one at a time,
    in any order, and always come out the same."""

    def __init__(self, num_samples: int, num_epochs: int, label_noise: float = 0.2,
                 batch_size: int = 256, seed: int = 0) -> None:
        if num_samples < 1 or num_epochs < 1:
            raise ValueError(f"need at least 1 sample and 1 epoch, got {num_samples} x {num_epochs}")
        if not 0 <= label_noise < 1:
            raise ValueError(f"label noise must be in [0, 1), got {label_noise}")
        self.num_samples, self.num_epochs, self.batch_size, self.seed = num_samples, num_epochs, batch_size, seed
        self.steps_per_epoch = -(-num_samples // batch_size)
        rng = np.random.default_rng(seed)
        n = num_samples
        self.original = rng.integers(0, NUM_CLASSES, n)
        self.noisy = np.zeros(n, dtype=bool)
        self.noisy[rng.choice(n, round(label_noise * n), replace=False)] = True
        shifted = (self.original + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES
        self.label = np.where(self.noisy, shifted, self.original).astype(np.int32)
        # Per-sample learning epoch and speed: clean samples early, flipped ones late or never.
        self.learn_epoch = np.where(self.noisy, rng.uniform(0.3, 1.3, n) * num_epochs,
                                    rng.gamma(2.0, 0.03, n) * num_epochs).astype(np.float32)
        self.speed = np.where(self.noisy, rng.uniform(0.05, 0.2, n), rng.uniform(0.2, 1.0, n)).astype(np.float32)
        self.jitter = np.where(rng.random(n) < 0.15, 1.2, 0.35).astype(np.float32)  # ambiguous ones
        self.inputs_rng = rng

    def samples(self) -> pa.Table:
        return pa.table({"sample_id": np.arange(self.num_samples, dtype=np.int64), "label": self.label,
                         "original_label": self.original, "label_noisy": self.noisy})

    def epoch(self, epoch: int) -> dict[str, np.ndarray]:
        """The epoch's presentations in the order they were presented: the recorder's
        columns (``RecordPresentations``; ``weight`` absent, so 1)."""
        rng = np.random.default_rng([self.seed, epoch + 1])
        n = self.num_samples
        order = rng.permutation(n).astype(np.int64)
        logit = self.speed[order] * (np.float32(epoch) - self.learn_epoch[order])
        logit += rng.standard_normal(n, dtype=np.float32) * self.jitter[order]
        np.clip(logit, -9.0, 9.0, out=logit)  # a trained net saturates: p_true in [1e-4, 1 - 1e-4]
        p_true = (1.0 / (1.0 + np.exp(-logit))).clip(1e-6, 1 - 1e-6).astype(np.float32)
        margin = logit * np.float32(2.0)
        correct = margin > 0
        label = self.label[order]
        other = (label + rng.integers(1, NUM_CLASSES, n, dtype=np.int32)) % NUM_CLASSES
        el2n = (np.sqrt(2.0) * (1.0 - p_true) * rng.uniform(0.75, 1.0, n)).astype(np.float32)
        return {
            "step": epoch * self.steps_per_epoch + np.arange(n, dtype=np.int64) // self.batch_size,
            "sample_id": order,
            "label": label,
            "loss": -np.log(p_true),
            "p_true": p_true,
            "el2n": el2n,
            "correct": correct,
            "pred": np.where(correct, label, other).astype(np.int32),
            "margin": margin,
            "grand_last": el2n * np.float32(3.0),
        }

    def step_buffers(self, epoch: int, loss: np.ndarray) -> StepBuffers:
        """The epoch's per-step values: each batch's mean loss, a decaying gradient norm
        (split evenly over ``LAYERS``), and a warm-up then cosine learning rate."""
        rng = np.random.default_rng([self.seed, epoch + 1, 1])
        first = epoch * self.steps_per_epoch
        steps = np.arange(first, first + self.steps_per_epoch, dtype=np.int64)
        starts = np.arange(0, self.num_samples, self.batch_size)
        batch_loss = (np.add.reduceat(loss.astype(np.float64), starts) / np.diff(np.append(starts, len(loss))))
        total = self.steps_per_epoch * self.num_epochs
        grad_norm = 0.3 + 2.0 * np.exp(-steps / (20 * self.steps_per_epoch)) * rng.lognormal(0, 0.3, len(steps))
        lr = 1e-3 * np.minimum(1.0, (steps + 1) / (5 * self.steps_per_epoch)) * 0.5 * (1 + np.cos(np.pi * steps / total))
        return StepBuffers(
            step_numbers=steps.tolist(), step_losses=batch_loss.astype(np.float32),
            grad_norm_steps=steps.tolist(),
            parameter_norms=np.repeat((grad_norm / np.sqrt(len(LAYERS)))[:, None], len(LAYERS), axis=1),
            lr_steps=steps.tolist(), lrs=lr.tolist(),
        )

    def val_accuracy(self, epoch: int) -> float:
        tau = max(1.0, self.num_epochs / 16)
        wobble = np.random.default_rng([self.seed, epoch + 1, 2]).normal(0, 0.004)
        return float(0.1 + 0.78 * (1 - np.exp(-epoch / tau)) + wobble)

    def validation(self, epoch: int, time: dt.datetime) -> RecordValidation:
        accuracy = self.val_accuracy(epoch)
        tau = max(1.0, self.num_epochs / 16)
        correct = round(accuracy * VAL_COUNT)
        per_class = np.full(NUM_CLASSES, VAL_COUNT // NUM_CLASSES, dtype=np.float64)
        per_class_correct = np.floor(per_class * correct / VAL_COUNT)
        per_class_correct[0] += correct - per_class_correct.sum()
        return RecordValidation(
            epoch=epoch, time=time, loss_sum=(0.35 + 1.9 * np.exp(-epoch / tau) + epoch / 600) * VAL_COUNT,
            correct_sum=int(correct), count=VAL_COUNT, class_sums=np.stack([per_class_correct, per_class]),
        )

    def inputs(self) -> pa.Table:
        """MNIST-1D-like signals (a class template, shifted, with noise), one per sample."""
        rng = self.inputs_rng
        templates = rng.standard_normal((NUM_CLASSES, SIGNAL_LENGTH)).cumsum(axis=1) / 3
        shifts = rng.integers(-5, 6, self.num_samples)
        positions = (np.arange(SIGNAL_LENGTH)[None, :] - shifts[:, None]) % SIGNAL_LENGTH
        signals = templates[self.original[:, None], positions] + rng.normal(0, 0.25, (self.num_samples, SIGNAL_LENGTH))
        offsets = np.arange(0, (self.num_samples + 1) * SIGNAL_LENGTH, SIGNAL_LENGTH, dtype=np.int32)
        shape_offsets = np.arange(self.num_samples + 1, dtype=np.int32)
        return pa.table({
            "sample_id": np.arange(self.num_samples, dtype=np.int64),
            "x": pa.ListArray.from_arrays(offsets, signals.astype(np.float32).reshape(-1)),
            "shape": pa.ListArray.from_arrays(shape_offsets, np.full(self.num_samples, SIGNAL_LENGTH, np.int32)),
        })


@dataclass
class BigRunReport:
    """What making a run took: seconds of each phase, and the writer's own CPU time."""

    run_id: str
    samples: int
    epochs: int
    rows: int
    writer: str  # "process" (the recording writer child) or "in-process"
    generate_seconds: float = 0.0  # this process making the epochs' rows (CPU seconds)
    stream_seconds: float = 0.0  # wall: first message sent .. the writer has written everything
    writer_cpu_seconds: float = 0.0  # the writer child's user + system time (in-process: its calls' CPU time)
    finish_seconds: float | None = None  # compaction and status (None: --no-finish)
    finish_peak_rss_mb: float | None = None  # this process's peak RSS after finishing

    @property
    def writer_rows_per_second(self) -> float:
        return self.rows / self.writer_cpu_seconds if self.writer_cpu_seconds else float("nan")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def finish_run(store: Store, run_id: str) -> None:
    """What ``training.Recorder.finish`` does once the writer is closed: compact the run's
    segments (and materialise its summary), then mark it finished."""
    from store.queries import compact_run  # DuckDB and pandas only from here on

    compact_run(store, run_id)
    store.update_run(run_id, status="finished", finished_at=utc_now())


def stream_big_run(root: Path, num_samples: int = 50_000, num_epochs: int = 200, label_noise: float = 0.2,
                   batch_size: int = 256, seed: int = 0, *, in_process: bool = False,
                   finish: bool = True) -> BigRunReport:
    """Make the run through the recording writer (module docstring) and report the phases."""
    dynamics = SyntheticDynamics(num_samples, num_epochs, label_noise, batch_size, seed)
    store = Store(root, create=True)
    # As training.recording_runs.create_run does it (that module needs torch).
    run_id = store.create_run(
        name="", task="mnist1d", model="cnn", seed=seed, max_epochs=num_epochs,
        config={"label_noise": label_noise, "epochs": num_epochs, "batch_size": batch_size, "synthetic": True},
    )
    store.update_run(run_id, name=f"big-synthetic-{num_samples:,}x{num_epochs}".replace(",", "_"),
                     output_kind="classification", **{MONITOR_DATALOADER_FIELD: 0})
    store.write_samples(run_id, dynamics.samples())
    store.write_dataset("mnist1d", dynamics.inputs())
    report = BigRunReport(run_id, num_samples, num_epochs, num_samples * num_epochs,
                          "in-process" if in_process else "process")
    config = Configure(store_path=str(store.root), run_id=run_id, layers=LAYERS,
                       layer_owner=np.arange(len(LAYERS)), flush_secs=1.0)
    send, close = _writer(config, in_process, report)
    cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    best = None
    for epoch in range(num_epochs):
        made = time.process_time()
        columns = dynamics.epoch(epoch)
        steps = dynamics.step_buffers(epoch, columns["loss"])
        loss_sum = float(columns["loss"].sum(dtype=np.float64))
        correct_sum = float(np.count_nonzero(columns["correct"]))
        report.generate_seconds += time.process_time() - made
        for chunk, first in enumerate(range(0, num_samples, CHUNK_ROWS)):
            rows = slice(first, first + CHUNK_ROWS)
            send(RecordPresentations(epoch=epoch, rank=0, chunk=chunk,
                                     columns={name: values[rows] for name, values in columns.items()}))
        now = START + dt.timedelta(seconds=30 * (epoch + 1))
        val = dynamics.validation(epoch, now)
        best = max(best or 0.0, val.correct_sum / val.count)
        send(val)
        send(RecordEpoch(epoch=epoch, steps=steps, totals=EpochTotals(loss_sum, correct_sum, float(num_samples)),
                         time=now, val_loss=val.loss_sum / val.count, val_accuracy=val.correct_sum / val.count,
                         best_val_accuracy=best))
    send(Flush())
    close()
    report.stream_seconds = time.perf_counter() - started
    if not in_process:
        report.writer_cpu_seconds = children_cpu_seconds() - cpu_before
    if finish:
        started = time.perf_counter()
        finish_run(store, run_id)
        report.finish_seconds = time.perf_counter() - started
        report.finish_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _writer(config: Configure, in_process: bool,
            report: BigRunReport) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """``send`` and ``close`` of the writer: the recording writer child, or a ``RunWriter``
    here (whose CPU time goes to ``report.writer_cpu_seconds``)."""
    if not in_process:
        process = WriterProcess()
        process.start(config)
        return process.send, process.close
    writer = RunWriter(config)

    def send(message: Any) -> None:
        started = time.process_time()
        writer.handle(message)
        report.writer_cpu_seconds += time.process_time() - started

    return send, lambda: None


def make_big_run(root: Path, num_samples: int = 50_000, num_epochs: int = 200, label_noise: float = 0.2,
                 batch_size: int = 256, seed: int = 0) -> str:
    """Make a finished big run through the recording writer process; its run id."""
    return stream_big_run(root, num_samples, num_epochs, label_noise, batch_size, seed).run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--label-noise", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true",
                        help="write with a RunWriter in this process instead of the writer child process")
    parser.add_argument("--no-finish", action="store_true",
                        help="leave the run's segments uncompacted (status running), as a run still training")
    parser.add_argument("--json", type=Path, help="also write the phases' numbers here")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.epochs < 1 or not 0 <= args.label_noise < 1:
        parser.error("--samples and --epochs must be >= 1 and --label-noise in [0, 1)")
    if args.store.exists() and not args.store.is_dir():
        parser.error(f"store path {str(args.store)!r} is a file; expected a directory")
    report = stream_big_run(args.store, args.samples, args.epochs, args.label_noise, seed=args.seed,
                            in_process=args.in_process, finish=not args.no_finish)
    finished = "" if report.finish_seconds is None else f", finished (compacted) in {report.finish_seconds:.1f} s"
    print(f"wrote {args.samples:,} x {args.epochs} presentations: generated in {report.generate_seconds:.1f} s, "
          f"streamed in {report.stream_seconds:.1f} s (writer: {report.writer_cpu_seconds:.1f} CPU s, "
          f"{report.writer_rows_per_second / 1e6:.2f} M rows/s){finished}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "writer_rows_per_second": report.writer_rows_per_second},
                                        indent=2))
    print(f"run_id: {report.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
