"""An online rule's shorter epochs get a one-cycle schedule sized for them: InfoBatch's
expected epoch lengths, the steps a real rerun plans, and the schedule ending when training
does (its last learning rate at the cycle's floor, not cut off near the peak)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from store import Store, steps
from store.curriculum import build_curriculum, save_curriculum
from training.curriculum_run import BELOW_MEAN_SHARE, infobatch_epoch_lengths
from training.module import HeldOneCycleLR

pytest.importorskip("lightning")


def test_infobatch_expected_lengths_prune_only_the_middle_epochs():
    # epoch 0 has no losses yet (full data); epochs >= delta * E anneal on full data
    lengths = infobatch_epoch_lengths(1000, 8, prune_ratio=0.5, delta=0.875)
    pruned = round(1000 * (1 - 0.5 * BELOW_MEAN_SHARE))
    assert pruned == 750
    assert lengths == [1000, 750, 750, 750, 750, 750, 750, 1000]
    assert infobatch_epoch_lengths(10, 3, prune_ratio=0.0, delta=1.0) == [10, 10, 10]


def test_held_schedule_stays_at_its_final_rate_past_its_end():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = HeldOneCycleLR(optimizer, max_lr=1.0, total_steps=5)
    rates = []
    for _ in range(9):  # 4 steps more than planned: a plain OneCycleLR raises here
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[3] == pytest.approx(rates[4]) == pytest.approx(rates[8])
    assert rates[8] < 1e-3


def test_infobatch_rerun_plans_the_steps_its_pruned_epochs_take(tmp_path):
    from training.config import TrainConfig
    from training.run import train

    epochs, batch = 4, 64
    summary = pd.DataFrame({"sample_id": np.arange(1437)})  # digits: 1,437 training samples
    curriculum = build_curriculum(summary, "infobatch", task="digits", prune_ratio=0.5, delta=0.875)
    path = save_curriculum(curriculum, tmp_path / "infobatch.parquet")
    config = TrainConfig(task="digits", model="mlp", epochs=epochs, seed=0, store=str(tmp_path / "store"),
                         curriculum=str(path), progress=False, batch_size=batch)
    run_id = train(config)
    lengths = infobatch_epoch_lengths(1437, epochs, prune_ratio=0.5, delta=0.875)
    assert lengths == [1437, 1078, 1078, 1078]
    planned = sum(math.ceil(length / batch) for length in lengths)
    assert planned == 23 + 3 * 17
    taken = steps(Store(tmp_path / "store"), run_id)
    per_epoch = taken.groupby("epoch").size().tolist()
    assert per_epoch[0] == 23 and all(count < 23 for count in per_epoch[1:])  # pruned epochs are shorter
    # the schedule was sized for the expected steps: within a few steps of those taken
    assert abs(len(taken) - planned) <= 6
    # ... so the cycle ends at the end: the last step's rate is near the floor (max_lr / 1e4
    # at the planned end), where the trainer's full-epoch estimate (4 x 23 = 92 steps) would
    # stop at roughly a fifth of the peak
    peak = float(taken["lr"].max())
    last = float(taken.sort_values("step")["lr"].iloc[-1])
    assert last < 0.05 * peak
    full_estimate = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak), max_lr=peak, total_steps=4 * 23)
    for _ in range(len(taken) - 1):
        full_estimate.optimizer.step()
        full_estimate.step()
    assert full_estimate.get_last_lr()[0] > 0.1 * peak
