"""Where the recorder's overhead goes: the epoch-interleaved method of ``bench_recorder.py``
applied to variants of ``DynamicsRecorder`` that each leave one part out.

- ``full``: the recorder as shipped (gradient norms every 10th step);
- ``norms every step``: ``grad_norm_every_n_steps=1``;
- ``no-writes``: the epoch's arrays are gathered but not handed to the writer process
  (no hand-over, scores, tables or files);
- ``per-step only``: nothing at the end of an epoch (buffers dropped);
- ``no grad norms``: ``record_grad_norms=False``.

The variants exist only to measure; a recorder without writes records nothing.

    python benchmarks/ablate_recorder.py [--fits 6] [--epochs 16] [--model mlp] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from bench_recorder import add_gated_arguments, gated_fit, median_ci, paired_ratios, parse_gated_arguments
from store.recording.messages import Configure, Sync
from training.recorder import DynamicsRecorder
from training.tasks import load_task


class NoWrites(DynamicsRecorder):
    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        send = self._writer.send

        def drop(message):
            if isinstance(message, (Configure, Sync)):
                send(message)

        self._writer.send = drop


class PerStepOnly(DynamicsRecorder):
    """The per-step hooks only: nothing is handed to the writer (no chunk, no epoch rows)."""

    def _send_chunk(self, trainer, columns):
        pass

    def on_train_epoch_end(self, trainer, pl_module):
        self._chunk.clear()
        self._steps.clear()


class NormsEveryStep(DynamicsRecorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, grad_norm_every_n_steps=1, **kwargs)


class NoGradNorms(DynamicsRecorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, record_grad_norms=False, **kwargs)


VARIANTS = {
    "full": DynamicsRecorder,
    "norms every step": NormsEveryStep,
    "no-writes": NoWrites,
    "per-step only": PerStepOnly,
    "no grad norms": NoGradNorms,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gated_arguments(parser, fits=6, epochs=16)
    parser.add_argument("--model", default="mlp")
    args = parse_gated_arguments(parser)
    task = load_task("mnist1d")
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        gated_fit(task, args.model, 2 * args.block + 1, args.block, 0, DynamicsRecorder(Path(tmp) / "warm"))
        for fit in range(args.fits):  # variants interleaved fit by fit
            for name, cls in VARIANTS.items():
                inner = cls(Path(tmp) / f"{name}-{fit}", task="mnist1d", model_name=args.model)
                epochs, _ = gated_fit(task, args.model, args.epochs, args.block, (fit % 2) * args.block, inner)
                ratios[name] += paired_ratios(epochs)[0]
            print(f"fit {fit}: " + ", ".join(f"{n} {statistics.median(r):.3f}" for n, r in ratios.items()), flush=True)
    print(f"\n{args.model}, {torch.get_num_threads()} torch threads")
    print("| variant | ratio: median | 95 % CI of median | n |\n|---|---|---|---|")
    for name, values in ratios.items():
        low, high = median_ci(values)
        print(f"| {name} | {statistics.median(values):.3f} | {low:.3f}–{high:.3f} | {len(values)} |")


if __name__ == "__main__":
    main()
