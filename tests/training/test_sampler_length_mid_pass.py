"""An online rule's epochs change length, and Lightning asks the sampler its length before
each epoch (how many batches to take, and after which one to validate) and during it. A pass
is whole once its last draw is handed out: Lightning stops after the batches it counted and,
when the last batch is full, never resumes the sampler past its last draw, so waiting for the
generator to finish left the next epoch with the previous epoch's length. Lightning then cut
the next epoch short by a batch and skipped validation in the one after (InfoBatch reruns
lost a validation row now and then)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.curriculum_run import CurriculumSampler
from training.distributed_curriculum import DistributedCurriculumSampler

L = pytest.importorskip("lightning")

SIZES = [20, 13, 16, 9, 12, 11, 8]  # draws per epoch, batches of 4: some end on a full batch


def shrinking_sampler() -> CurriculumSampler:
    return CurriculumSampler(np.ones(24), seed=1, plan=lambda epoch: np.arange(24) < SIZES[epoch % len(SIZES)])


@pytest.mark.parametrize("wrap", [False, True], ids=["CurriculumSampler", "DistributedCurriculumSampler"])
def test_len_is_the_running_epochs_until_its_last_draw(wrap):
    sampler = DistributedCurriculumSampler(shrinking_sampler(), num_replicas=1, rank=0) if wrap else shrinking_sampler()
    for epoch in range(4):  # no set_epoch: each whole pass is the next epoch
        passing = iter(sampler)
        drawn = [next(passing) for _ in range(SIZES[epoch] - 1)]
        assert len(sampler) == SIZES[epoch]  # mid-pass, one draw to go
        drawn.append(next(passing))  # the last draw; the generator is not resumed past it
        assert len(drawn) == SIZES[epoch] and set(drawn) == set(range(SIZES[epoch]))
        assert len(sampler) == SIZES[epoch + 1]  # a whole pass: the next use is the next epoch
        assert list(passing) == []


class Counting(L.LightningModule):
    def __init__(self, sampler: CurriculumSampler) -> None:
        super().__init__()
        self.sampler = sampler
        self.layer = torch.nn.Linear(1, 2)
        self.trained: dict[int, int] = {}
        self.validated: list[int] = []

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.zeros(24, 1), torch.zeros(24, dtype=torch.long))
        return torch.utils.data.DataLoader(data, batch_size=4, sampler=self.sampler)

    def val_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
        return torch.utils.data.DataLoader(data, batch_size=4)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.trained[self.current_epoch] = self.trained.get(self.current_epoch, 0) + len(y)
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.validated.append(self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("wrap", [False, True], ids=["CurriculumSampler", "DistributedCurriculumSampler"])
def test_lightning_trains_every_draw_and_validates_every_epoch(tmp_path, wrap):
    sampler = DistributedCurriculumSampler(shrinking_sampler(), num_replicas=1, rank=0) if wrap else shrinking_sampler()
    module = Counting(sampler)
    trainer = L.Trainer(max_epochs=len(SIZES), reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module)
    assert [module.trained[e] for e in range(len(SIZES))] == SIZES
    assert module.validated == list(range(len(SIZES)))
