"""DynamicsRecorder at scale: extra peak memory and epoch overhead on a user's own
LightningModule, as the dataset size N, the class count C and the output shape grow.

Workloads (synthetic data, CPU only):

* ``classifier``: a 1-hidden-layer MLP (64 Gaussian features, 256 hidden units) over N
  samples and C classes, batch 256, AdamW; the dataset yields ``(x, y, sample_id)``.
  Default grid N in {50k, 200k, 1M} x C in {10, 1000}.
* ``lm``: a small causal transformer language model (2 layers, d_model 64, 4 heads,
  T 128, bytes as tokens: V 256) on the text of CPython's ``pydoc_data.topics``, one
  sample per sequence (targets ``[B, T]``, the last sequence's padding -100); batch 32.

Memory. Each measurement runs in a fresh subprocess (so no peak carries over) that trains
``--memory-epochs`` epochs three ways: ``plain`` (nothing from trainmap imported),
``imported`` (``training.recorder`` imported, no recorder: what importing trainmap costs)
and ``recorded`` (with ``DynamicsRecorder``). The training process's peak is VmHWM from
/proc/self/status, reset (``/proc/self/clear_refs``) after the data and the model are
built, so the data's own construction does not hide the recorder's peak; it is read at
the end of training (``on_train_end``) and again after the fit (the recorder's one-time
end-of-fit work: last writes, compaction, summary). The writer child's peak is its
VmHWM from /proc/<pid>/status, polled every 10 ms until it exits (``ChildPeaks``; the
writer is the subprocess's only child, ``num_workers=0``). Extra memory = recorded peak -
plain peak + writer peak.

Time. As in ``bench_recorder.py`` (same machine, speed that changes in phases of seconds),
the ratio recorded/plain is measured inside one fit per configuration: a gate forwards
Lightning's per-step and per-epoch hooks to the recorder only in every other block of
``block`` epochs; the last epoch of each block is timed; each timed recorded epoch is
divided by the mean of the timed plain epochs on either side of it. With ``block`` 2 a
recorded block's timed epoch carries the writes the previous recorded epoch left to the
writer (steady state) and a plain block's timed epoch none; with ``block`` 1 (used where
epochs are long: N = 1M) the writes a recorded epoch leaves behind at its end land in the
plain epoch after it, which favours the recorder by up to that share.

    python benchmarks/bench_recorder_scale.py                # the default grid (how long: results/recorder_scale.md)
    python benchmarks/bench_recorder_scale.py --quick        # tiny sizes, a smoke run
    python benchmarks/bench_recorder_scale.py --sizes 50000 --classes 1000 --no-lm --out /tmp/x.md
    python benchmarks/bench_recorder_scale.py --parts timing --skip classifier-n1000000-c1000 ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

# Only torch and Lightning at the top: the "plain" measurement imports nothing from trainmap.
import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore")
RESULT = "RESULT "  # prefix of the one line a child prints for its parent
MIB = 1024 * 1024


# -- workloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One configuration: what is trained, and how its epochs are timed."""

    kind: str  # "classifier" or "lm"
    samples: int  # N (the LM: sequences, the text repeated if it has fewer)
    classes: int  # C (the LM: the vocabulary)
    features: int = 64
    hidden: int = 256
    batch_size: int = 256
    seq_len: int = 128
    timing_epochs: int = 16
    block: int = 2
    fits: int = 1

    @property
    def name(self) -> str:
        if self.kind == "lm":
            return f"causal LM, {self.samples:,} sequences x T {self.seq_len}, V {self.classes}"
        return f"classifier N {self.samples:,}, C {self.classes:,}"

    @property
    def key(self) -> str:
        return f"{self.kind}-n{self.samples}-c{self.classes}"


class BatchedDataset(Dataset):
    """``(x, y, sample_id)`` tensors; ``__getitem__`` takes a list of positions (a whole
    batch, from a ``BatchSampler``) so that loading costs one gather per batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.sample_ids = torch.arange(len(x), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, positions):
        positions = torch.as_tensor(positions)
        return self.x[positions], self.y[positions], self.sample_ids[positions]


def classifier_data(workload: Workload) -> BatchedDataset:
    """Gaussian features around one random mean per class (overlapping classes)."""
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(workload.classes, workload.features, generator=generator)
    y = torch.randint(0, workload.classes, (workload.samples,), generator=generator)
    x = torch.randn(workload.samples, workload.features, generator=generator).mul_(2.0)
    x += means[y]
    return BatchedDataset(x, y)


def text_tokens() -> torch.Tensor:
    """CPython's bundled help text (``pydoc_data.topics``) as UTF-8 bytes: tokens 0..255."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key] for key in sorted(topics))
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def lm_data(workload: Workload) -> BatchedDataset:
    """Non-overlapping sequences of ``seq_len`` tokens, targets shifted by one; the last
    sequence's missing targets are -100 (ignored). The first ``samples`` of them (the text
    repeated if it has fewer)."""
    tokens = text_tokens()
    length = workload.seq_len
    count = -(-(len(tokens) - 1) // length)
    padded = torch.full((count * length + 1,), -100, dtype=torch.long)
    padded[: len(tokens)] = tokens
    x = padded[:-1].reshape(count, length).clamp(min=0)
    y = padded[1:].reshape(count, length)
    if workload.samples:
        repeats = -(-workload.samples // count)
        x, y = x.repeat(repeats, 1)[: workload.samples], y.repeat(repeats, 1)[: workload.samples]
    return BatchedDataset(x.contiguous(), y.contiguous())


class MLPClassifier(L.LightningModule):
    """A user's own module: returns ``{"loss", "logits"}`` as the recorder's README asks."""

    def __init__(self, workload: Workload) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(workload.features, workload.hidden), nn.ReLU(), nn.Linear(workload.hidden, workload.classes)
        )

    def training_step(self, batch, batch_idx):
        x, y, sample_id = batch
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class CausalLM(L.LightningModule):
    """A small pre-norm transformer decoder; returns logits ``[B, T, V]``."""

    def __init__(self, workload: Workload, d_model: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.vocab = workload.classes
        self.embed = nn.Embedding(workload.classes, d_model)
        self.position = nn.Parameter(torch.zeros(workload.seq_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, workload.classes)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(workload.seq_len), persistent=False)

    def training_step(self, batch, batch_idx):
        x, y, sample_id = batch
        hidden = self.embed(x) + self.position[: x.shape[1]]
        logits = self.head(self.body(hidden, mask=self.mask, is_causal=True))
        loss = F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1), ignore_index=-100)
        return {"loss": loss, "logits": logits}

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def build(workload: Workload) -> tuple[BatchedDataset, type[L.LightningModule]]:
    if workload.kind == "classifier":
        return classifier_data(workload), MLPClassifier
    if workload.kind == "lm":
        return lm_data(workload), CausalLM
    raise ValueError(f"workload kind must be 'classifier' or 'lm', got {workload.kind!r}")


def loader(dataset: BatchedDataset, batch_size: int, seed: int) -> DataLoader:
    sampler = BatchSampler(RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)), batch_size, False)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def trainer(epochs: int, callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False,
    )


def make_recorder(store: Path, name: str) -> L.Callback:
    from training.recorder import DynamicsRecorder

    return DynamicsRecorder(store, run_name=name)


def first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:300]


# -- memory: one fresh process per (workload, variant) ----------------------------------


def proc_status_kib(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class ChildPeaks:
    """Polls the VmHWM of this process's child processes (the recorder's writer) every
    ``interval`` seconds on a thread, keeping each child's last reading: VmHWM only grows
    from the child's exec on, so the last reading before it exits is its peak, to within
    what it adds in its last ``interval``. (``getrusage(RUSAGE_CHILDREN)`` would also count
    the training process's image the child had between fork and exec.)"""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peaks_kib: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _children(self) -> list[str]:
        pids = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as handle:
                    pids += handle.read().split()
            except OSError:
                pass
        return pids

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self._children():
                try:
                    self.peaks_kib[pid] = proc_status_kib("VmHWM", pid)
                except (OSError, RuntimeError):  # gone, or a zombie without memory lines
                    pass

    @property
    def largest_mb(self) -> float:
        return max(self.peaks_kib.values(), default=0) / 1024


class PeakProbe(L.Callback):
    """Reads the training process's peak at the end of training, then resets it, so that
    the end-of-fit work gets its own peak. Registered after the recorder."""

    def on_train_end(self, trainer, pl_module):
        self.train_peak_kib = proc_status_kib("VmHWM")
        reset_peak()


def child_memory(workload: Workload, variant: str, epochs: int) -> dict:
    if variant != "plain":
        import training.recorder  # noqa: F401  (what importing trainmap costs)
    dataset, module_class = build(workload)
    L.seed_everything(0, verbose=False)
    module = module_class(workload)
    probe = PeakProbe()
    error = None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        callbacks = [make_recorder(Path(tmp) / "store", workload.key), probe] if variant == "recorded" else [probe]
        fit_trainer = trainer(epochs, callbacks)
        gc.collect()
        before_kib = proc_status_kib("VmRSS")
        reset_peak()
        started = time.perf_counter()
        with ChildPeaks() as children:
            try:
                fit_trainer.fit(module, loader(dataset, workload.batch_size, 0))
            except Exception as exc:  # the old recorder fails on sequences: report, keep the peaks
                error = first_line(exc)
        seconds = time.perf_counter() - started
        end_kib = proc_status_kib("VmHWM")
    return {
        "variant": variant, "rss_before_fit_mb": before_kib / 1024,
        "train_peak_mb": getattr(probe, "train_peak_kib", end_kib) / 1024,
        "end_of_fit_peak_mb": end_kib / 1024 if hasattr(probe, "train_peak_kib") else None,
        "writer_peak_mb": children.largest_mb,
        "child_processes": len(children.peaks_kib), "fit_seconds": seconds, "error": error,
    }


# -- time: one process per workload, recorded and plain epochs interleaved ---------------

ALWAYS = ("setup", "teardown", "on_fit_start", "on_fit_end", "on_train_start", "on_train_end", "on_exception",
          "on_save_checkpoint", "on_load_checkpoint", "on_sanity_check_start", "on_sanity_check_end")
GATED_PREFIXES = ("on_train_batch_", "on_train_epoch_", "on_validation_batch_", "on_validation_epoch_",
                  "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")


class Gate(L.Callback):
    """Forwards every Lightning hook the inner callback has: the per-step and per-epoch ones
    only in recorded blocks of ``block`` epochs, set-up, start, end and errors always."""

    def __init__(self, inner: L.Callback, block: int, offset: int) -> None:
        self.inner, self.block, self.offset = inner, block, offset

    def recorded(self, epoch: int) -> bool:
        return ((epoch + self.offset) // self.block) % 2 == 1

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state_dict):
        self.inner.load_state_dict(state_dict)


def _always(hook: str):
    def forward(self, *args, **kwargs):
        return getattr(self.inner, hook)(*args, **kwargs)

    return forward


def _gated(hook: str):
    def forward(self, trainer, *args, **kwargs):
        if self.recorded(trainer.current_epoch):
            return getattr(self.inner, hook)(trainer, *args, **kwargs)

    return forward


for _hook in dir(L.Callback):
    if _hook.startswith(GATED_PREFIXES):
        setattr(Gate, _hook, _gated(_hook))
    elif _hook in ALWAYS:
        setattr(Gate, _hook, _always(_hook))


class EpochTimer(L.Callback):
    """Epoch boundaries, registered after the gate so that an epoch includes the recorder's
    end-of-epoch work; counts the steps of the first epoch."""

    def on_train_start(self, trainer, pl_module):
        self.marks: list[float] = []
        self.loads: list[float] = []  # the 1-minute load average at each epoch start
        self.steps = 0

    def on_train_epoch_start(self, trainer, pl_module):
        self.marks.append(time.perf_counter())
        self.loads.append(os.getloadavg()[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0:
            self.steps += 1

    def on_train_end(self, trainer, pl_module):
        self.marks.append(time.perf_counter())
        self.train_end = self.marks[-1]


def paired_ratios(epochs: list[tuple[bool, float]]) -> tuple[list[float], list[float], list[float]]:
    """Each timed recorded epoch over the mean of the timed plain epochs on either side, and
    the timed recorded and plain epochs. Timed: the last epoch of each block; the first
    block (warm-up) is dropped."""
    timed = [epochs[i] for i in range(len(epochs)) if i + 1 == len(epochs) or epochs[i + 1][0] != epochs[i][0]]
    timed = timed[1:]
    ratios = [
        seconds / ((before[1] + after[1]) / 2)
        for before, (recorded, seconds), after in zip(timed, timed[1:], timed[2:])
        if recorded and not before[0] and not after[0]
    ]
    return ratios, [s for r, s in timed if r], [s for r, s in timed if not r]


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (order statistics); with fewer
    than 6 values it is the whole range."""
    values = sorted(values)
    n = len(values)
    cdf = [sum(math.comb(n, i) for i in range(k + 1)) / 2**n for k in range(n + 1)]
    low = max([k for k in range(n) if cdf[k] <= (1 - confidence) / 2], default=0)
    return values[low], values[n - 1 - low]


def child_timing(workload: Workload) -> dict:
    dataset, module_class = build(workload)
    load_start = os.getloadavg()[0]
    ratios, recorded, plain, finalise, errors, loads, steps = [], [], [], [], [], [], 0
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for fit in range(workload.fits):
            L.seed_everything(fit, verbose=False)
            module = module_class(workload)
            gate = Gate(make_recorder(Path(tmp) / f"store{fit}", f"{workload.key}-{fit}"), workload.block,
                        (fit % 2) * workload.block)  # alternate which kind of block comes first
            timer = EpochTimer()
            try:
                trainer(workload.timing_epochs, [gate, timer]).fit(module, loader(dataset, workload.batch_size, fit))
            except Exception as exc:
                errors.append(first_line(exc))
            if not hasattr(timer, "train_end"):
                break
            finalise.append(time.perf_counter() - timer.train_end)
            loads += timer.loads
            seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
            r, rec, pl = paired_ratios([(gate.recorded(epoch), s) for epoch, s in enumerate(seconds)])
            ratios += r
            recorded += rec
            plain += pl
            steps = timer.steps
    result = {"ratios": ratios, "recorded_s": recorded, "plain_s": plain, "finalise_s": finalise,
              "steps_per_epoch": steps, "error": errors[0] if errors else None,
              "load_start": load_start, "load_end": os.getloadavg()[0],
              "load_max": max(loads, default=load_start), "load_mean": statistics.fmean(loads) if loads else load_start}
    if ratios:
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        plain_median = statistics.median(plain)
        result.update(median=quartiles[1], q1=quartiles[0], q3=quartiles[2], ci=median_ci(ratios),
                      plain_median_s=plain_median, recorded_median_s=statistics.median(recorded),
                      extra_us_per_step=1e6 * (quartiles[1] - 1) * plain_median / max(steps, 1))
    return result


# -- the parent: run the children, write the report ---------------------------------------


def run_child(mode: str, workload: Workload, extra: list[str], timeout: float) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
               "--workload", json.dumps(asdict(workload)), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"child exited {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1][len(RESULT):])


def workloads(args) -> list[Workload]:
    """The grid; epochs and blocks shrink as epochs grow long (the report says which)."""
    def schedule(n: int) -> dict:
        if args.quick:
            return {"timing_epochs": 8, "block": 1, "fits": 1}
        if n <= 60_000:
            return {"timing_epochs": 24, "block": 2, "fits": 2}
        if n <= 250_000:
            return {"timing_epochs": 16, "block": 2, "fits": 2}
        return {"timing_epochs": 10, "block": 1, "fits": 1}

    grid = [Workload("classifier", n, c, **schedule(n)) for n in args.sizes for c in args.classes]
    if args.lm:
        lm = {"timing_epochs": 8, "block": 1, "fits": 1} if args.quick else {"timing_epochs": 16, "block": 2, "fits": 1}
        grid.append(Workload("lm", args.lm_sequences, 256, batch_size=32 if not args.quick else 16,
                             seq_len=32 if args.quick else 128, **lm))
    return [w for w in grid if w.key not in args.skip]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(value, spec: str = ".0f") -> str:
    return "–" if value is None else format(value, spec)


def memory_row(workload: Workload, memory: dict) -> tuple[str, dict]:
    plain, imported, recorded = memory.get("plain", {}), memory.get("imported", {}), memory.get("recorded", {})
    row = {}
    if "train_peak_mb" in plain and "train_peak_mb" in recorded:
        row["extra_train_mb"] = recorded["train_peak_mb"] - plain["train_peak_mb"]
        row["writer_mb"] = recorded["writer_peak_mb"]
        row["extra_total_mb"] = row["extra_train_mb"] + row["writer_mb"]
        row["import_mb"] = imported["train_peak_mb"] - plain["train_peak_mb"] if "train_peak_mb" in imported else None
        if recorded.get("end_of_fit_peak_mb") is not None:
            row["end_of_fit_extra_mb"] = recorded["end_of_fit_peak_mb"] - plain["train_peak_mb"]
    errors = "; ".join(f"{v}: {m['error']}" for v, m in memory.items() if m.get("error"))
    line = (
        f"| {workload.name} | {fmt(plain.get('train_peak_mb'))} | {fmt(recorded.get('train_peak_mb'))} | "
        f"{fmt(row.get('import_mb'))} | **{fmt(row.get('extra_train_mb'))}** | {fmt(row.get('writer_mb'))} | "
        f"**{fmt(row.get('extra_total_mb'))}** | {fmt(row.get('end_of_fit_extra_mb'))} | {errors or ''} |"
    )
    return line, row


def timing_row(workload: Workload, timing: dict) -> str:
    schedule = f"{workload.fits} x {workload.timing_epochs} ep., block {workload.block}"
    if "median" not in timing:
        return f"| {workload.name} | {schedule} | – | – | – | – | – | – | – | – | {timing.get('error') or 'no ratios'} |"
    return (
        f"| {workload.name} | {schedule} | {timing['steps_per_epoch']} | {timing['plain_median_s']:.2f} | "
        f"{timing['recorded_median_s']:.2f} | **{timing['median']:.3f}** | {timing['q1']:.3f}–{timing['q3']:.3f} | "
        f"{timing['ci'][0]:.3f}–{timing['ci'][1]:.3f} | {len(timing['ratios'])} | "
        f"{timing['extra_us_per_step']:.0f} | {timing['load_mean']:.1f} (max {timing['load_max']:.1f})"
        + (f"; {timing['error']}" if timing.get("error") else "") + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("memory", "timing"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=("plain", "imported", "recorded"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole method")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="N values, comma-separated (default 50000,200000,1000000; quick 2000,6000)")
    parser.add_argument("--classes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="C values, comma-separated (default 10,1000; quick 10,100)")
    parser.add_argument("--no-lm", dest="lm", action="store_false", help="skip the language model")
    parser.add_argument("--lm-sequences", type=int, default=None,
                        help="LM sequences (default: the whole text, ~3,600 of 128 tokens; quick 96)")
    parser.add_argument("--memory-epochs", type=int, default=None, help="epochs per memory run (default 2)")
    parser.add_argument("--skip", default="", help="workload keys to skip, comma-separated (e.g. classifier-n1000000-c1000)")
    parser.add_argument("--parts", default="memory,timing", help="what to measure (default memory,timing)")
    parser.add_argument("--label", default="", help="a line saying which code was measured, for the report")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="benchmarks/results/recorder_scale.md")
    parser.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.child:
        workload = Workload(**json.loads(args.workload))
        if args.child == "memory":
            result = child_memory(workload, args.variant, args.memory_epochs or 2)
        else:
            result = child_timing(workload)
        print(RESULT + json.dumps(result), flush=True)
        return

    args.sizes = args.sizes or ([2000, 6000] if args.quick else [50_000, 200_000, 1_000_000])
    args.classes = args.classes or ([10, 100] if args.quick else [10, 1000])
    args.lm_sequences = args.lm_sequences if args.lm_sequences is not None else (96 if args.quick else 0)
    if args.lm and not args.lm_sequences:  # the whole text: name the workload by its real size
        args.lm_sequences = -(-(len(text_tokens()) - 1) // 128)
    args.memory_epochs = args.memory_epochs or 2
    args.skip = [key for key in args.skip.split(",") if key]
    passthrough = ["--memory-epochs", str(args.memory_epochs)] + (["--threads", str(args.threads)] if args.threads else [])
    started = time.time()
    load_start = os.getloadavg()
    results = []
    parts = set(args.parts.split(","))
    for workload in workloads(args):
        memory, timing, config_started = {}, {}, time.time()
        for variant in ("plain", "imported", "recorded") if "memory" in parts else ():
            memory[variant] = run_child("memory", workload, ["--variant", variant, *passthrough], timeout=1800)
            print(f"{workload.name}: memory {variant}: {memory[variant]}", flush=True)
        if "timing" in parts:
            timing = run_child("timing", workload, passthrough, timeout=3600)
            print(f"{workload.name}: timing: { {k: v for k, v in timing.items() if k not in ('ratios',)} }", flush=True)
        print(f"{workload.name}: {time.time() - config_started:.0f} s", flush=True)
        results.append((workload, memory, timing))
    load_end = os.getloadavg()

    command = "python benchmarks/bench_recorder_scale.py " + " ".join(sys.argv[1:])
    lines = [
        "# DynamicsRecorder at scale: memory and epoch overhead",
        "",
        f"Measured {dt.date.today().isoformat()} by `{command.strip()}`" + (f" ({args.label})" if args.label else ""),
        f"on {cpu_model()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__},",
        f"lightning {L.__version__}, Python {platform.python_version()}; no GPU. Load average (1, 5, 15 min) at the start",
        f"{', '.join(f'{v:.2f}' for v in load_start)}, at the end {', '.join(f'{v:.2f}' for v in load_end)};"
        f" {(time.time() - started) / 60:.1f} min in all. Method: the script's docstring.",
    ]
    summary = []
    if "memory" in parts:
        lines += [
            "",
            f"### Extra peak memory (MB; {args.memory_epochs} epochs per measurement, each in a fresh process)",
            "",
            "| workload | plain: training peak | recorded: training peak | of which importing trainmap | extra in training | writer child peak | **extra total** | end of fit, extra | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for workload, memory, timing in results:
        line, row = memory_row(workload, memory)
        if memory:
            lines.append(line)
        summary.append({"workload": workload.key, "memory": row, "memory_runs": memory, "timing": timing})
    if "timing" in parts:
        lines += [
            "",
            "### Epoch time, recorded / plain (interleaved inside one fit)",
            "",
            "| workload | schedule | steps / epoch | plain epoch (median s) | recorded epoch (median s) | ratio: median | IQR | 95 % CI of median | n | extra per step (µs) | load avg (1 min) over the epochs: mean (max); notes |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [timing_row(workload, timing) for workload, memory, timing in results]
    lines += [
        "",
        "Targets (issue 17): extra peak memory (training process + writer) ≤ 150 MB and flat in N;",
        "epoch overhead ≤ 3 %. \"extra in training\" = recorded minus plain peak of the training process",
        "up to the end of training (it includes importing trainmap: the column before); \"end of fit, extra\"",
        "= the recorded process's peak during the one-time end-of-fit work (compaction) minus the plain peak.",
        "\"extra per step\" = (median ratio - 1) x plain epoch / steps: the recorder's cost per step in",
        "absolute terms, which a heavier model hides better.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
