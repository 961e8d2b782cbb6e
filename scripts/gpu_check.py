"""GPU check of the recorder: a real 6-epoch `trainmap train` on CUDA (gradient norms every
step, GraNd every 2nd epoch, 20 % label noise), then what landed in the store, as JSON.

    python scripts/gpu_check.py            # on a machine with a CUDA GPU
    ACC=cpu python scripts/gpu_check.py    # the same on the CPU

CI has no GPU; run by hand. Last run: 2026-11-26 on one NVIDIA H200 (torch 2.11.0+cu130):
finished, 378 steps with gradient norms and learning rate, 4 x 378 per-layer rows,
6 x 4,000 presentations, GraNd for epochs 0, 2, 4, AUROC of the loss for the flipped
labels 0.968 (0.966 on the CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from store import Store, dynamics, run_summary  # noqa: E402
from store.queries import layer_grad_norms, steps  # noqa: E402


def main() -> None:
    store_path = os.environ.get("STORE", "/tmp/gpu_check_store")
    accelerator = os.environ.get("ACC", "gpu")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print("torch", torch.__version__, "|", cuda, flush=True)
    command = [sys.executable, "-m", "training.cli", "train", "--task", "mnist1d", "--model", "cnn", "--epochs", "6",
               "--label-noise", "0.2", "--accelerator", accelerator, "--grad-norm-every", "1", "--grand", "every:2",
               "--no-progress", "--store", store_path]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    print(f"train exit {result.returncode} in {time.time() - started:.1f} s")
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    run_id = result.stdout.strip().splitlines()[-1].split()[-1]
    store = Store(store_path)
    info = store.run_info(run_id)
    step_rows = steps(store, run_id)
    layers = layer_grad_norms(store, run_id)
    rows = dynamics(store, run_id)
    summary = run_summary(store, run_id)
    grand = duckdb.sql(
        f"SELECT epoch, count(*), avg(grand) FROM read_parquet('{store.run_dir(run_id) / 'grand.parquet'}') "
        "GROUP BY epoch ORDER BY epoch"
    ).fetchall()
    report = {
        "run_id": run_id,
        "status": info["status"],
        "epochs_done": info["epochs_done"],
        "best_val_accuracy": info.get("best_val_accuracy"),
        "steps": len(step_rows),
        "steps_with_grad_norm": int(step_rows["grad_norm"].notna().sum()),
        "grad_norms_finite_positive": bool(np.isfinite(step_rows["grad_norm"]).all() and (step_rows["grad_norm"] > 0).all()),
        "steps_with_lr": int(step_rows["lr"].notna().sum()),
        "per_layer_rows": len(layers),
        "layers": sorted(set(layers["layer"])),
        "presentations_per_epoch": rows.groupby("epoch").size().tolist(),
        "grand_epochs_rows_mean": grand,
        "auroc_loss_flipped": float(roc_auc_score(summary["label_noisy"], summary["loss"])),
    }
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
