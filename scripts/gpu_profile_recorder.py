"""Does DynamicsRecorder synchronise the host with the GPU per step, and what does it cost?

A 1,000-class model (a small ResNet on synthetic 3x32x32 images, or an MLP over the same
inputs) trains at batch 256 with the recorder, under ``torch.profiler``. Every hook of the
recorder runs inside a ``record_function`` range named after the hook and the step
(``Traced``); the script counts, inside those ranges, the events that make the host wait
for the device:

* ``aten::_local_scalar_dense`` (what ``.item()``, ``float()``, ``bool()`` of a tensor run),
  ``aten::nonzero`` (boolean indexing, ``torch.nonzero``: the output size is data-dependent),
* CUDA runtime calls ``cudaStreamSynchronize``, ``cudaDeviceSynchronize``,
  ``cudaEventSynchronize`` and ``cudaMemcpy`` (a device-to-host ``.cpu()`` to pageable memory
  is ``cudaMemcpyAsync`` followed by ``cudaStreamSynchronize``), listed for information:
  ``cudaMemcpyAsync``.

A sync in a per-step hook is allowed only at the fit's first batch (the recorder checks
what the module returns once, there) and at the steps where the recorder hands a chunk of
statistics to its writer (where the presentations so far cross a multiple of
``chunk_rows``); those and the syncs in the per-epoch hooks (epoch end, start and end of
training) are reported separately. The script exits 1 if any other step synchronises.

The recorder's overhead is measured without the profiler, as in
``benchmarks/bench_recorder_scale.py``: one fit whose epochs (``--epoch-steps`` steps each)
alternate between plain and recorded blocks (a gate forwards the recorder's per-step and
per-epoch hooks only in recorded blocks), the device synchronised at each epoch boundary;
each recorded epoch is divided by the mean of its plain neighbours. On CUDA it also reports
the peak device memory of a plain and of a recorded fit.

    python scripts/gpu_profile_recorder.py                       # on a CUDA machine
    python scripts/gpu_profile_recorder.py --device cpu --model mlp --steps 80 --batch-size 64 --chunk-rows 2048
"""

from __future__ import annotations

import argparse
import bisect
import inspect
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_recorder_scale import ALWAYS, GATED_PREFIXES, EpochTimer, Gate, median_ci, paired_ratios  # noqa: E402

from training.recorder import DynamicsRecorder  # noqa: E402

warnings.filterwarnings("ignore")

SYNC_EVENTS = ("aten::_local_scalar_dense", "aten::nonzero", "cudaStreamSynchronize", "cudaDeviceSynchronize",
               "cudaEventSynchronize", "cudaMemcpy")
INFO_EVENTS = ("cudaMemcpyAsync",)
PER_STEP = GATED_PREFIXES  # per-step and per-epoch hooks share these prefixes; the epoch ones:
PER_EPOCH = ("on_train_epoch_", "on_validation_epoch_")


# -- the workload ---------------------------------------------------------------------------


class SyntheticImages(Dataset):
    """Random 3x32x32 images and labels, made on the fly per batch (seeded by the positions),
    as ``(x, y, sample_id)``; ``__getitem__`` takes a whole batch of positions."""

    def __init__(self, samples: int, classes: int) -> None:
        self.samples, self.classes = samples, classes

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, positions):
        ids = torch.as_tensor(positions, dtype=torch.int64)
        generator = torch.Generator().manual_seed(int(ids[0]))
        x = torch.randn(len(ids), 3, 32, 32, generator=generator)
        return x, ids % self.classes, ids  # a learnable label: the id modulo C


class Block(nn.Module):
    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.skip = nn.Identity() if stride == 1 and channels_in == channels else nn.Sequential(
            nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


def build_network(model: str, classes: int) -> nn.Module:
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(), nn.Linear(512, classes))
    if model == "resnet":
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            Block(64, 64, 1), Block(64, 128, 2), Block(128, 256, 2), Block(256, 256, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, classes),
        )
    raise ValueError(f"--model must be 'resnet' or 'mlp', got {model!r}")


class ImageClassifier(L.LightningModule):
    def __init__(self, model: str, classes: int) -> None:
        super().__init__()
        self.net = build_network(model, classes)

    def training_step(self, batch, batch_idx):
        x, y, sample_id = batch
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def make_trainer(args, epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
        callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False,
        precision=args.precision,
    )


def make_loader(samples: int, args) -> DataLoader:
    dataset = SyntheticImages(samples, args.classes)
    return DataLoader(dataset, sampler=BatchSampler(SequentialSampler(dataset), args.batch_size, False),
                      batch_size=None, num_workers=0, pin_memory=args.device == "cuda")


class SyncingRecorder(DynamicsRecorder):
    """The check of the check (``--inject-sync``): a recorder that reads the loss to the
    host at every step, which the profile must report (exit 1)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_loss = float(outputs["loss"])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def make_recorder(store: Path, args) -> DynamicsRecorder:
    options = {}
    if args.chunk_rows and "chunk_rows" in inspect.signature(DynamicsRecorder).parameters:
        options["chunk_rows"] = args.chunk_rows
    recorder_class = SyncingRecorder if args.inject_sync else DynamicsRecorder
    return recorder_class(store, run_name="gpu-profile", **options)


def chunk_rows_of(recorder: DynamicsRecorder) -> int | None:
    value = inspect.signature(DynamicsRecorder).parameters.get("chunk_rows")
    if value is None:
        return None
    return int(getattr(recorder, "chunk_rows", value.default))


# -- tracing the recorder's hooks -------------------------------------------------------------


class Traced(L.Callback):
    """Forwards every hook to ``inner`` inside ``record_function("recorder::<hook>@<where>")``,
    where is ``step<k>`` (k counts training batches from 0) or ``epoch<e>``."""

    def __init__(self, inner: L.Callback) -> None:
        self.inner = inner
        self.batches = 0

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state_dict):
        self.inner.load_state_dict(state_dict)


def _traced(hook: str):
    per_step = hook.startswith(PER_STEP) and not hook.startswith(PER_EPOCH)

    def forward(self, trainer, *args, **kwargs):
        if hook == "on_train_batch_start":
            self.batches += 1
        where = f"step{self.batches - 1}" if per_step else f"epoch{trainer.current_epoch}"
        with torch.profiler.record_function(f"recorder::{hook}@{where}"):
            return getattr(self.inner, hook)(trainer, *args, **kwargs)

    return forward


for _hook in dir(L.Callback):
    if _hook.startswith(GATED_PREFIXES) or _hook in ALWAYS:
        setattr(Traced, _hook, _traced(_hook))


def hook_costs(events, steps: int) -> dict:
    """Where the per-step hooks' host time goes: the mean duration per step of each hook,
    and the ops with the most self CPU time inside them (per step)."""
    ranges = sorted((e.time_range.start, e.time_range.end, e.name) for e in events
                    if e.name.startswith("recorder::") and "@step" in e.name)
    starts = [r[0] for r in ranges]
    per_hook: dict[str, float] = {}
    for start, end, name in ranges:
        hook = name.split("::", 1)[1].split("@", 1)[0]
        per_hook[hook] = per_hook.get(hook, 0.0) + (end - start)
    ops: dict[str, float] = {}
    for event in events:
        if event.name.startswith("recorder::") or not str(event.device_type).endswith("CPU"):
            continue
        i = bisect.bisect_right(starts, event.time_range.start) - 1
        if i >= 0 and event.time_range.end <= ranges[i][1]:
            ops[event.name] = ops.get(event.name, 0.0) + event.self_cpu_time_total
    top = sorted(ops.items(), key=lambda item: -item[1])[:10]
    return {
        "per_step_us": {hook: round(total / steps, 1) for hook, total in per_hook.items()},
        "top_ops_self_us_per_step": {name: round(total / steps, 1) for name, total in top},
    }


def hook_syncs(events) -> tuple[dict[str, dict[str, int]], int]:
    """{"recorder::<hook>@<where>": {event name: count}} for the sync events inside the
    recorder's ranges (CPU-side events, nested ones counted once), and the number of ranges."""
    ranges = sorted(
        (e.time_range.start, e.time_range.end, e.name) for e in events if e.name.startswith("recorder::")
    )
    starts = [r[0] for r in ranges]
    found: dict[str, dict[str, int]] = {}
    kept: list[tuple[int, int]] = []
    candidates = sorted(
        (e for e in events if e.name in SYNC_EVENTS + INFO_EVENTS and str(e.device_type).endswith("CPU")),
        key=lambda e: (e.time_range.start, -e.time_range.end),
    )
    for event in candidates:
        start, end = event.time_range.start, event.time_range.end
        i = bisect.bisect_right(starts, start) - 1
        if i < 0 or ranges[i][1] < end:
            continue
        if event.name in SYNC_EVENTS:
            if any(a <= start and end <= b for a, b in kept[-4:]):
                continue  # inside a sync already counted (item -> _local_scalar_dense -> memcpy + sync)
            kept.append((start, end))
        counts = found.setdefault(ranges[i][2], {})
        counts[event.name] = counts.get(event.name, 0) + 1
    return found, len(ranges)


def profile(args, tmp: Path) -> dict:
    """One recorded fit of ``--steps`` steps (one epoch) under the profiler."""
    L.seed_everything(0, verbose=False)
    module = ImageClassifier(args.model, args.classes)
    recorder = make_recorder(tmp / "profiled", args)
    chunk_rows = chunk_rows_of(recorder)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    trainer = make_trainer(args, 1, [Traced(recorder)])
    with torch.profiler.profile(activities=activities) as prof:
        trainer.fit(module, make_loader(args.steps * args.batch_size, args))
    events = prof.events()
    found, ranges = hook_syncs(events)
    costs = hook_costs(events, args.steps)
    steps = args.steps
    allowed = set()
    if chunk_rows:  # the steps whose rows cross a multiple of chunk_rows (and the one after)
        for step in range(steps):
            if (step + 1) * args.batch_size // chunk_rows > step * args.batch_size // chunk_rows:
                allowed |= {step, step + 1}
    per_step = {k: v for k, v in found.items() if "@step" in k and sum(c for n, c in v.items() if n in SYNC_EVENTS)}
    first = {k: v for k, v in per_step.items() if int(k.rsplit("@step", 1)[1]) == 0}
    chunk = {k: v for k, v in per_step.items() if int(k.rsplit("@step", 1)[1]) in allowed and k not in first}
    unexpected = {k: v for k, v in per_step.items() if k not in chunk and k not in first}
    return {
        "steps": steps, "hook_ranges": ranges, "chunk_rows": chunk_rows,
        "steps_syncing": sorted({int(k.rsplit("@step", 1)[1]) for k in per_step}),
        "unexpected_per_step_syncs": unexpected, "first_batch_syncs": first, "chunk_step_syncs": chunk,
        "per_epoch_syncs": {k: v for k, v in found.items() if "@epoch" in k},
        "info_only": {k: v for k, v in found.items() if "@step" in k and k not in per_step},
        "hook_costs_under_profiler": costs,
    }


class SyncedEpochTimer(EpochTimer):
    """Epoch boundaries after the device has finished the queued work."""

    def on_train_epoch_start(self, trainer, pl_module):
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        super().on_train_end(trainer, pl_module)


def overhead(args, tmp: Path) -> dict:
    """Recorded / plain epochs interleaved in one fit (no profiler)."""
    L.seed_everything(0, verbose=False)
    module = ImageClassifier(args.model, args.classes)
    gate = Gate(make_recorder(tmp / "timed", args), args.block, 0)
    timer = SyncedEpochTimer()
    make_trainer(args, args.epochs, [gate, timer]).fit(module, make_loader(args.epoch_steps * args.batch_size, args))
    seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    ratios, recorded, plain = paired_ratios([(gate.recorded(e), s) for e, s in enumerate(seconds)])
    result = {"epochs": args.epochs, "block": args.block, "ratios": len(ratios)}
    if ratios:
        result.update(
            median=statistics.median(ratios), ci=median_ci(ratios),
            plain_step_ms=1000 * statistics.median(plain) / args.epoch_steps,
            recorded_step_ms=1000 * statistics.median(recorded) / args.epoch_steps,
        )
    return result


def peak_device_memory(args, tmp: Path) -> dict:
    """Peak CUDA memory allocated by a plain and by a recorded fit of ``--steps`` steps."""
    peaks = {}
    for variant in ("plain", "recorded"):
        L.seed_everything(0, verbose=False)
        module = ImageClassifier(args.model, args.classes)
        callbacks = [make_recorder(tmp / f"memory-{variant}", args)] if variant == "recorded" else []
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        make_trainer(args, 1, callbacks).fit(module, make_loader(args.steps * args.batch_size, args))
        peaks[variant + "_mib"] = torch.cuda.max_memory_allocated() / 2**20
    peaks["extra_mib"] = peaks["recorded_mib"] - peaks["plain_mib"]
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", choices=("resnet", "mlp"), default="resnet")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300, help="profiled steps, one epoch (default 300)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="the recorder's chunk_rows (default: the recorder's own)")
    parser.add_argument("--epoch-steps", type=int, default=50, help="steps per epoch of the overhead fit")
    parser.add_argument("--epochs", type=int, default=24, help="epochs of the overhead fit (default 24)")
    parser.add_argument("--block", type=int, default=2, help="epochs per plain / recorded block (default 2)")
    parser.add_argument("--precision", default="32-true", help="Lightning precision (e.g. bf16-mixed)")
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    parser.add_argument("--inject-sync", action="store_true",
                        help="check the check: record with a recorder that syncs every step (must exit 1)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (torch.cuda.is_available() is False); use --device cpu")
    if args.epochs < 6 * args.block:
        parser.error(f"--epochs must be at least 6 blocks ({6 * args.block}), got {args.epochs}")

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, lightning {L.__version__}, {args.device}: {device_name}; "
          f"{args.model}, {args.classes} classes, batch {args.batch_size}", flush=True)
    report = {"device": device_name, "torch": torch.__version__, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="gpu-profile-") as tmp:
        started = time.perf_counter()
        report["profile"] = profile(args, Path(tmp))
        print(f"profiled {args.steps} steps in {time.perf_counter() - started:.1f} s", flush=True)
        report["overhead"] = overhead(args, Path(tmp))
        if args.device == "cuda":
            report["device_memory"] = peak_device_memory(args, Path(tmp))
    result = report["profile"]
    print(json.dumps({**report, "profile": {k: v for k, v in result.items() if k != "unexpected_per_step_syncs"}},
                     indent=1, default=str))
    print(f"recorder hooks: {result['hook_ranges']} ranges over {result['steps']} steps; steps with a sync: "
          f"{result['steps_syncing'] or 'none'}; allowed: at the first batch {result['first_batch_syncs'] or 'none'}, "
          f"at chunk hand-overs (chunk_rows {result['chunk_rows']}) {result['chunk_step_syncs'] or 'none'}")
    print(f"per-epoch hooks with syncs: {len(result['per_epoch_syncs'])} ranges: {result['per_epoch_syncs']}")
    timing = report["overhead"]
    if "median" in timing:
        print(f"overhead: recorded / plain epoch {timing['median']:.3f} (95 % CI {timing['ci'][0]:.3f}–{timing['ci'][1]:.3f}, "
              f"n {timing['ratios']}); step {timing['plain_step_ms']:.2f} ms plain, {timing['recorded_step_ms']:.2f} ms recorded")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    if result["unexpected_per_step_syncs"]:
        unexpected = list(result["unexpected_per_step_syncs"].items())
        print(f"FAIL: host synchronisation inside the recorder's per-step hooks, {len(unexpected)} ranges, e.g. "
              f"{dict(unexpected[:5])}")
        sys.exit(1)
    print("OK: no per-step host synchronisation inside the recorder's hooks")


if __name__ == "__main__":
    main()
