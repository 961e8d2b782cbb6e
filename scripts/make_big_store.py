"""Generate a big synthetic but realistic run: 50,000 samples x 200 epochs (10 M rows).

For the dashboard benchmark (``benchmarks/bench_dashboard.py``): the run is written the
way ``store.compact_run`` leaves a finished run -- one presentations file sorted by
(sample_id, epoch), steps / epochs / layer-norm tables, the materialised
``summary.parquet`` (derived with the store's own ``summary.sql``) -- plus the task's
inputs under ``datasets/``. Everything is seeded; it takes ~20 s on 2 cores.

    python scripts/make_big_store.py /tmp/big_store --samples 50000 --epochs 200

Dynamics model, per sample i: a difficulty sets the epoch t_i at which it is learned
and how fast; p_true follows a noisy logistic curve in the epoch; 20 % of labels are
flipped and are learned late (memorised) or never; a few clean samples stay ambiguous
and are forgotten now and then.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from store import Store  # noqa: E402
from store.files import write_parquet_atomic  # noqa: E402
from store.queries import ALL_EPOCHS, query_run  # noqa: E402
from store.schema import EPOCHS, LAYER_GRAD_NORMS, PRESENTATIONS, STEPS  # noqa: E402

NUM_CLASSES = 10
SIGNAL_LENGTH = 40


def make_big_run(root: Path, num_samples: int = 50_000, num_epochs: int = 200,
                 label_noise: float = 0.2, batch_size: int = 256, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    store = Store(root, create=True)
    run_id = store.create_run(
        name=f"big-synthetic-{num_samples // 1000}k-{num_epochs}e", task="mnist1d", model="cnn",
        seed=seed, max_epochs=num_epochs,
        config={"label_noise": label_noise, "epochs": num_epochs, "batch_size": batch_size,
                "synthetic": True},
    )
    run_path = store.run_dir(run_id)

    # Samples and labels.
    original = rng.integers(0, NUM_CLASSES, num_samples)
    noisy = np.zeros(num_samples, dtype=bool)
    noisy[rng.choice(num_samples, round(label_noise * num_samples), replace=False)] = True
    label = np.where(noisy, (original + rng.integers(1, NUM_CLASSES, num_samples)) % NUM_CLASSES, original)
    store.write_samples(run_id, pa.table({"sample_id": np.arange(num_samples), "label": label,
                                          "original_label": original, "label_noisy": noisy}))

    # Per-sample learning epoch and speed: clean samples early, flipped ones late or never.
    learn_epoch = np.where(noisy, rng.uniform(0.3, 1.3, num_samples) * num_epochs,
                           rng.gamma(2.0, 0.03, num_samples) * num_epochs).astype(np.float32)
    speed = np.where(noisy, rng.uniform(0.05, 0.2, num_samples), rng.uniform(0.2, 1.0, num_samples))
    jitter = np.where(rng.random(num_samples) < 0.15, 1.2, 0.35).astype(np.float32)  # ambiguous ones
    epochs = np.arange(num_epochs, dtype=np.float32)

    rows = num_samples * num_epochs
    logit = (speed[:, None] * (epochs[None, :] - learn_epoch[:, None])).astype(np.float32)
    logit += rng.standard_normal((num_samples, num_epochs), dtype=np.float32) * jitter[:, None]
    np.clip(logit, -9.0, 9.0, out=logit)  # a trained net saturates: p_true in [1e-4, 1 - 1e-4]
    p_true = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32).clip(1e-6, 1 - 1e-6)
    margin = (logit * 2.0).astype(np.float32)
    correct = margin > 0
    del logit
    other = ((label[:, None] + rng.integers(1, NUM_CLASSES, (num_samples, num_epochs))) % NUM_CLASSES)
    pred = np.where(correct, label[:, None], other).astype(np.int32)
    del other
    loss = -np.log(p_true)
    el2n = (np.sqrt(2.0) * (1.0 - p_true) * rng.uniform(0.75, 1.0, (num_samples, num_epochs))).astype(np.float32)

    steps_per_epoch = -(-num_samples // batch_size)
    # Each epoch a random order: the step of a presentation is epoch * steps + position // batch.
    order = np.argsort(rng.random((num_epochs, num_samples), dtype=np.float32), axis=1)
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(num_samples)[None, :], axis=1)
    step = (np.arange(num_epochs)[:, None] * steps_per_epoch + position // batch_size).T.astype(np.int64)
    del order, position

    presentations = pa.table({
        "epoch": np.tile(np.arange(num_epochs, dtype=np.int32), num_samples),
        "step": step.reshape(-1),
        "sample_id": np.repeat(np.arange(num_samples, dtype=np.int64), num_epochs),
        "label": np.repeat(label.astype(np.int32), num_epochs),
        "loss": loss.reshape(-1),
        "p_true": p_true.reshape(-1),
        "el2n": el2n.reshape(-1),
        "correct": correct.reshape(-1),
        "pred": pred.reshape(-1),
        "margin": margin.reshape(-1),
        "weight": np.ones(rows, dtype=np.float32),
        "grand_last": (el2n * 3.0).reshape(-1),
        "rank": np.zeros(rows, dtype=np.int16),
    }, schema=PRESENTATIONS)
    write_parquet_atomic(run_path / "presentations.parquet", presentations, compact=True)

    # Per-epoch and per-step tables from the same dynamics.
    train_loss = loss.mean(axis=0).astype(np.float64)
    train_correct = correct.sum(axis=0).astype(np.int64)
    del presentations, loss, p_true, el2n, margin, pred, step
    val_accuracy = 0.1 + 0.78 * (1 - np.exp(-epochs / 12.0)) + rng.normal(0, 0.004, num_epochs)
    val_count = 10_000
    start = dt.datetime(2026, 11, 24, tzinfo=dt.timezone.utc)
    times = [start + dt.timedelta(seconds=30 * int(e)) for e in range(num_epochs)]
    epochs_table = pa.table({
        "epoch": np.concatenate([np.arange(num_epochs)] * 2).astype(np.int32),
        "split": ["train"] * num_epochs + ["val"] * num_epochs,
        "loss_sum": np.concatenate([train_loss * num_samples,
                                    (0.35 + 1.9 * np.exp(-epochs / 10.0) + epochs / 600) * val_count]),
        "correct_sum": np.concatenate([train_correct, np.round(val_accuracy * val_count)]).astype(np.int64),
        "num_samples": np.concatenate([np.full(num_epochs, num_samples), np.full(num_epochs, val_count)]),
        "rank": np.zeros(2 * num_epochs, dtype=np.int16),
        "time": times * 2,
    }, schema=EPOCHS)
    write_parquet_atomic(run_path / "epochs.parquet", epochs_table)

    total_steps = steps_per_epoch * num_epochs
    step_ids = np.arange(total_steps, dtype=np.int64)
    step_epoch = (step_ids // steps_per_epoch).astype(np.int32)
    # Linear warm-up over 5 epochs, then cosine decay.
    lr = 1e-3 * np.minimum(1.0, (step_ids + 1) / (5 * steps_per_epoch)) * \
        0.5 * (1 + np.cos(np.pi * step_ids / total_steps))
    steps_table = pa.table({
        "step": step_ids, "epoch": step_epoch,
        "loss": (train_loss[step_epoch] * rng.lognormal(0, 0.15, total_steps)).astype(np.float32),
        "grad_norm": (0.3 + 2.0 * np.exp(-step_ids / (20 * steps_per_epoch))
                      * rng.lognormal(0, 0.3, total_steps)).astype(np.float32),
        "lr": lr,
    }, schema=STEPS)
    write_parquet_atomic(run_path / "steps.parquet", steps_table)
    layers = ["conv1.weight", "conv2.weight", "head.weight"]
    write_parquet_atomic(run_path / "layer_grad_norms.parquet", pa.table({
        "step": np.repeat(step_ids, len(layers)),
        "layer": layers * total_steps,
        "grad_norm": np.repeat(steps_table["grad_norm"].to_numpy() / 2, len(layers)),
    }, schema=LAYER_GRAD_NORMS))

    # The materialised summary, derived by the store's own SQL (as compact_run does).
    summary = query_run(store, run_id, "summary",
                        {"epoch_min": ALL_EPOCHS[0], "epoch_max": ALL_EPOCHS[1]},
                        tables=("presentations", "grand"))
    write_parquet_atomic(run_path / "summary.parquet", pa.Table.from_pandas(summary, preserve_index=False))

    # Inputs: MNIST-1D-like signals (a class template, shifted, with noise).
    templates = rng.standard_normal((NUM_CLASSES, SIGNAL_LENGTH)).cumsum(axis=1) / 3
    shifts = rng.integers(-5, 6, num_samples)
    signals = np.stack([np.roll(templates[c], s) for c, s in zip(original, shifts)])
    signals += rng.normal(0, 0.25, signals.shape)
    store.write_dataset("mnist1d", pa.table({
        "sample_id": np.arange(num_samples, dtype=np.int64),
        "x": pa.array(list(signals.astype(np.float32)), type=pa.list_(pa.float32())),
        "shape": pa.array([[SIGNAL_LENGTH]] * num_samples, type=pa.list_(pa.int32())),
    }))

    store.update_run(
        run_id, status="finished", compacted=True, epochs_done=num_epochs,
        best_val_accuracy=float(val_accuracy.max()), final_val_accuracy=float(val_accuracy[-1]),
        final_train_loss=float(train_loss[-1]), finished_at=times[-1].isoformat(),
    )
    return run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--label-noise", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run_id = make_big_run(args.store, args.samples, args.epochs, args.label_noise, seed=args.seed)
    print(f"wrote {args.samples:,} x {args.epochs} presentations in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(f"run_id: {run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
