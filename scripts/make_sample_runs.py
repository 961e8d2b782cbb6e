"""Regenerate ``sample_runs/``: the small runs shipped so the dashboard opens with data.

MNIST-1D 1-D CNN, 20 epochs, clean and with 20 % symmetric label noise, seeds 0 and 1
(the noisy runs share their noisy labels: --label-noise-seed stays 0), with GraNd
recorded on its default schedule (``--grand on``); then a rerun of the noisy seed-0 run
on a curriculum that prunes the 20 % of samples with the highest loss
(``downweight-noise``), so the dashboard opens with a parent and its child to compare.

    python scripts/make_sample_runs.py [--out sample_runs]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from store import Store, run_summary
from store.curriculum import build_curriculum, save_to_store
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
    run_ids: dict[str, str] = {}
    for name, noise, seed in RUNS:
        config = TrainConfig(
            task="mnist1d", model="cnn", epochs=args.epochs, seed=seed, label_noise=noise,
            store=str(out), name=name, grand="on", progress=False,
        )
        run_id = train(config)
        run_ids[name] = run_id
        print(f"{name}: run_id: {run_id}")
    parent = run_ids["cnn-noise20-s0"]
    store = Store(out)
    curriculum = build_curriculum(
        run_summary(store, parent), "downweight-noise", score="loss", fraction=0.2,
        task="mnist1d", source_runs=[parent],
    )
    path = save_to_store(curriculum, out, "noise20-s0-drop-loss-20.parquet")
    config = TrainConfig(
        task="mnist1d", model="cnn", epochs=args.epochs, seed=0, label_noise=0.2, store=str(out),
        name="cnn-noise20-s0-clean", grand="on", progress=False, curriculum=str(path),
    )
    print(f"cnn-noise20-s0-clean: run_id: {train(config)}")


if __name__ == "__main__":
    main()
