"""How well each score finds the flipped labels of a run trained with --label-noise.

Prints the AUROC of every per-sample score for separating flipped from clean samples,
with each score oriented by its registry direction (harder = more likely flipped).

    python scripts/noise_auroc.py --run ID [--run ID2 ...] [--store DIR]
"""

from __future__ import annotations

import argparse

import numpy as np

from sklearn.metrics import roc_auc_score

from store import SCORES, Store, default_store_path, hardness, sample_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True)
    parser.add_argument("--store", default=None)
    args = parser.parse_args()
    store = Store(args.store or default_store_path())
    summary = sample_summary(store, args.run)
    flipped = summary["label_noisy"].astype(bool)
    if flipped.all() or not flipped.any():
        raise SystemExit("noise_auroc: the run has no flipped labels (train with --label-noise)")
    print(f"{int(flipped.sum())} flipped of {len(summary)} samples, {len(args.run)} run(s)")
    for name in SCORES:
        if name not in summary or summary[name].isna().all():
            continue
        score = hardness(summary, name)
        finite = score[np.isfinite(score)]
        # never-learned samples rank hardest (+inf): above every finite value
        score = score.replace(np.inf, finite.max() + 1).fillna(finite.min() - 1)
        print(f"{name:>20}: AUROC {roc_auc_score(flipped, score):.3f}")


if __name__ == "__main__":
    main()
