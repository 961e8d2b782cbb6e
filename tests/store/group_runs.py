"""A synthetic run whose batches gave groups, written through the real ``Store`` as the
recorder writes it, and the presentation rows it stands for (not a test module).

The rows are random but seeded; the store functions under test read the files, the tests
compute their references with pandas from ``GroupedRun.rows`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

#: group name -> id (any int32: the storage contract is only ids and a name per id)
GROUP_IDS = {"code": 1_234_567, "docs": 42, "math": 900_000_001}
#: mean loss of each group's presentations, so the groups differ
GROUP_LOSS = {"code": 0.4, "docs": 1.2, "math": 2.5}


@dataclass(frozen=True)
class GroupedRun:
    run_id: str
    #: every presentation that counts (DistributedSampler padding already removed):
    #: epoch, step, sample_id, group_id (NaN = no group), loss, p_true, margin, correct, label_noisy
    rows: pd.DataFrame


def write_grouped_run(store, *, num_samples: int = 15, num_epochs: int = 4, batch_size: int = 4,
                      world_size: int = 1, finish: bool = False, seed: int = 0,
                      ungrouped: tuple[int, ...] = (0,), switching: tuple[int, ...] = (1,)) -> GroupedRun:
    """A classification run: sample i is in group ``names[i % 3]``; the samples in ``ungrouped``
    are given no group, those in ``switching`` group "docs" in epoch 0 and their own later.

    ``world_size`` 2 writes the presentations of each batch split over two ranks, and rank 1
    also presents a padding duplicate of a rank-0 sample per epoch with a loss of 100 (a
    reader must drop it); each rank writes the ``groups`` table it met. ``finish`` compacts.
    """
    from store import compact_run

    rng = np.random.default_rng(seed)
    names = list(GROUP_IDS)
    noisy = np.arange(num_samples) % 5 == 4  # labels and flips do not depend on the seed
    run_id = store.create_run(name="grouped", task="grouped-task", model="none", seed=seed,
                              max_epochs=num_epochs, world_size=world_size)
    labels = (np.arange(num_samples) * 7) % 3
    store.write_samples(run_id, pa.table({
        "sample_id": np.arange(num_samples), "label": labels,
        "original_label": np.where(noisy, (labels + 1) % 3, labels), "label_noisy": noisy}))
    rows, padding = [], []
    step = 0
    for epoch in range(num_epochs):
        order = rng.permutation(num_samples)
        for start in range(0, num_samples, batch_size):
            for position, sample_id in enumerate(order[start:start + batch_size]):
                sample_id = int(sample_id)
                name = names[sample_id % 3] if not (sample_id in switching and epoch == 0) else "docs"
                loss = GROUP_LOSS[name] * rng.uniform(0.2, 1.8)
                p_true = float(np.exp(-loss))
                rows.append({
                    "epoch": epoch, "step": step, "sample_id": sample_id,
                    "group_id": np.nan if sample_id in ungrouped else GROUP_IDS[name],
                    "loss": loss, "p_true": p_true, "margin": p_true - 0.4, "correct": p_true > 0.4,
                    "rank": position % world_size,
                })
            step += 1
        if world_size > 1:
            duplicated = [row for row in rows if row["epoch"] == epoch and row["rank"] == 0][-1]
            padding.append({**duplicated, "rank": 1, "loss": 100.0, "correct": False})
    frame = pd.DataFrame(rows)
    written = pd.concat([frame, pd.DataFrame(padding)], ignore_index=True) if padding else frame
    for rank in range(world_size):
        for epoch in range(num_epochs):
            part = written[(written["rank"] == rank) & (written["epoch"] == epoch)]
            store.write_segment(run_id, "presentations", pa.table({
                "epoch": pa.array(part["epoch"], pa.int32()), "step": pa.array(part["step"], pa.int64()),
                "sample_id": pa.array(part["sample_id"], pa.int64()),
                "label": pa.array(labels[part["sample_id"]], pa.int32()),
                "loss": pa.array(part["loss"], pa.float32()), "p_true": pa.array(part["p_true"], pa.float32()),
                "el2n": pa.array(np.sqrt(2) * (1 - part["p_true"]), pa.float32()),
                "correct": pa.array(part["correct"]), "pred": pa.array(labels[part["sample_id"]], pa.int32()),
                "margin": pa.array(part["margin"], pa.float32()),
                "weight": pa.array(np.ones(len(part)), pa.float32()),
                "grand_last": pa.array(np.full(len(part), np.nan), pa.float32()),
                "rank": pa.array(part["rank"], pa.int16()),
                "group_id": pa.array([None if np.isnan(g) else int(g) for g in part["group_id"]], pa.int32()),
            }), f"r{rank:02d}-e{epoch:06d}")
        met = sorted({int(g) for g in written.loc[written["rank"] == rank, "group_id"].dropna()})
        names_of = {v: k for k, v in GROUP_IDS.items()}
        store.write_segment(run_id, "groups", pa.table({
            "group_id": pa.array(met, pa.int32()), "group_name": [names_of[g] for g in met]}), f"r{rank:02d}-g")
    if finish:
        store.update_run(run_id, status="finished", epochs_done=num_epochs)
        compact_run(store, run_id)
    frame["label_noisy"] = noisy[frame["sample_id"]]
    for column in ("loss", "p_true", "margin"):  # as stored
        frame[column] = frame[column].astype(np.float32).astype(np.float64)
    return GroupedRun(run_id, frame.drop(columns="rank"))


def sample_groups(rows: pd.DataFrame) -> pd.Series:
    """sample_id -> group id of its latest presentation that carried a group (pandas)."""
    grouped = rows.dropna(subset=["group_id"]).sort_values("step")
    return grouped.groupby("sample_id")["group_id"].last().astype(np.int64)
