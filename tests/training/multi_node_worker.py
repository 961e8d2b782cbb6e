"""One "node" of a simulated two-node run: a Lightning Trainer with ``num_nodes=2``,
``devices=1`` and DDP, launched once per node by ``test_multi_node.py`` with the
environment a cluster launcher (torchrun, SLURM) would set. Lightning's own
``LightningEnvironment`` reads it (MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK,
WORLD_SIZE); both processes record into one store on a shared folder.

    python tests/training/multi_node_worker.py STORE EPOCHS
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import lightning as L
from training import DynamicsRecorder
from training.module import Classifier, IndexedDataset

NUM_SAMPLES = 41  # odd: the distributed sampler pads one duplicate over 2 ranks


def dataset() -> IndexedDataset:
    generator = np.random.default_rng(0)
    x = generator.normal(size=(NUM_SAMPLES, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    return IndexedDataset(x, y, sample_ids=np.arange(NUM_SAMPLES) * 7 + 3)


def main(store: str, epochs: int) -> None:
    torch.manual_seed(0)
    data = dataset()
    module = Classifier(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), lr=1e-2)
    recorder = DynamicsRecorder(store, task="two-nodes", chunk_rows=6)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, num_nodes=2, strategy="ddp", callbacks=[recorder],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    val = torch.utils.data.TensorDataset(data.x[:10], data.y[:10])
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4, shuffle=True),
                torch.utils.data.DataLoader(val, batch_size=5))
    print(f"rank {trainer.global_rank} of {trainer.world_size}: run {recorder.run_id}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
