"""Regenerate ``sample_runs/``: the small runs shipped so the dashboard opens with data.

MNIST-1D 1-D CNN, 20 epochs, clean and with 20 % symmetric label noise, seeds 0 and 1
(the noisy runs share their noisy labels: --label-noise-seed stays 0), with GraNd
recorded on its default schedule when the GraNd module is available.

    python scripts/make_sample_runs.py [--out sample_runs]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from training.run import TrainConfig, train

RUNS = [
    ("cnn-clean-s0", 0.0, 0),
    ("cnn-clean-s1", 0.0, 1),
    ("cnn-noise20-s0", 0.2, 0),
    ("cnn-noise20-s1", 0.2, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "sample_runs"))
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    try:
        from training.grand import DEFAULT_GRAND_SCHEDULE
    except ImportError:
        DEFAULT_GRAND_SCHEDULE = None
    for name, noise, seed in RUNS:
        config = TrainConfig(
            task="mnist1d", model="cnn", epochs=args.epochs, seed=seed, label_noise=noise,
            store=str(out), name=name, grand=DEFAULT_GRAND_SCHEDULE, progress=False,
        )
        run_id = train(config)
        print(f"{name}: run_id: {run_id}")


if __name__ == "__main__":
    main()
