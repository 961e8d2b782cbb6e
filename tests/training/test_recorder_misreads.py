"""No silent misreads (issue 17, point 4), on real Lightning fits of tiny data: gradient
accumulation, several validation loaders, batches with extra fields, string sample ids."""

from __future__ import annotations

import copy
import io
from typing import NamedTuple

import lightning as L
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from store import Store, dynamics, epoch_metrics
from store.queries import best_val_accuracy, run_connection, steps, validation_metrics
from training import DynamicsRecorder
from training.sample_keys import key_id

FEATURES, CLASSES = 5, 3


def separable(num_samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = np.random.default_rng(seed)
    y = np.arange(num_samples) % CLASSES
    x = generator.normal(scale=0.3, size=(num_samples, FEATURES)).astype(np.float32)
    x[np.arange(num_samples), y] += 3.0
    return torch.as_tensor(x), torch.as_tensor(y)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, CLASSES))


class Plain(L.LightningModule):
    """Mean cross-entropy, SGD; batches are read by position up to the sample id."""

    def __init__(self, model: torch.nn.Module, lr: float = 0.1) -> None:
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch, batch_idx):
        logits = self.model(batch[0])
        return {"loss": F.cross_entropy(logits, batch[1]), "logits": logits}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        logits = self.model(batch[0])
        return {"loss": F.cross_entropy(logits, batch[1]), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fit(module, recorder, train, val=None, epochs=2, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[recorder], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, **kwargs,
    )
    trainer.fit(module, train, val)
    return trainer


class Rows(Dataset):
    """Items ``(x, y, sample_id, group)``: a 4th element that is not a weight."""

    def __init__(self, x, y, ids, extra=None) -> None:
        self.x, self.y, self.ids, self.extra = x, y, ids, extra

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        item = (self.x[i], self.y[i], self.ids[i])
        return item if self.extra is None else (*item, self.extra[i])


# -- gradient accumulation ------------------------------------------------------------


def test_accumulation_one_steps_row_per_optimizer_step_with_the_true_loss(tmp_path):
    x, y = separable(24)
    ids = torch.arange(24) * 10 + 1
    k, batch_size, epochs = 4, 4, 2  # 6 micro-batches per epoch: groups of 4 and of 2
    model = net()
    reference_model = copy.deepcopy(model)
    recorder = DynamicsRecorder(tmp_path / "store", run_name="accumulate", grad_norm_every_n_steps=1)
    loader = DataLoader(Rows(x, y, ids), batch_size=batch_size)
    fit(Plain(model), recorder, loader, epochs=epochs, accumulate_grad_batches=k)

    # plain PyTorch: micro-batch losses, (loss / k).backward(), a step after k (or the epoch's last)
    optimizer = torch.optim.SGD(reference_model.parameters(), lr=0.1)
    step_losses, presentation_rows = {}, []
    step = 0
    for epoch in range(epochs):
        batches = [(x[i:i + batch_size], y[i:i + batch_size], ids[i:i + batch_size]) for i in range(0, 24, batch_size)]
        for position, (bx, by, bids) in enumerate(batches):
            logits = reference_model(bx)
            losses = F.cross_entropy(logits, by, reduction="none")
            loss = losses.mean()
            (loss / k).backward()
            step_losses.setdefault(step, []).append(float(loss))
            presentation_rows += [(epoch, step, int(i), float(v)) for i, v in zip(bids, losses.detach())]
            if (position + 1) % k == 0 or position == len(batches) - 1:
                optimizer.step()
                optimizer.zero_grad()
                step += 1
    store = Store(tmp_path / "store")
    recorded = steps(store, recorder.run_id)
    assert recorded["step"].tolist() == [0, 1, 2, 3] == sorted(step_losses)
    assert recorded["epoch"].tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(recorded["loss"], [np.mean(step_losses[s]) for s in range(4)], rtol=1e-5)
    assert recorded["lr"].tolist() == [0.1] * 4 and recorded["grad_norm"].notna().all()
    rows = dynamics(store, recorder.run_id).sort_values(["epoch", "step", "sample_id"])
    expected = pd.DataFrame(presentation_rows, columns=["epoch", "step", "sample_id", "loss"]).sort_values(
        ["epoch", "step", "sample_id"])
    assert len(rows) == 2 * 24
    assert rows["step"].tolist() == expected["step"].tolist()
    assert rows["sample_id"].tolist() == expected["sample_id"].tolist()
    np.testing.assert_allclose(rows["loss"], expected["loss"], rtol=1e-5, atol=1e-6)


# -- several validation loaders --------------------------------------------------------


class ValidationReference(L.Callback):
    """Plain-PyTorch accuracy and loss of each validation set, at each validation."""

    def __init__(self, sets) -> None:
        self.sets, self.rows = sets, []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        with torch.no_grad():
            for k, (vx, vy) in enumerate(self.sets):
                logits = pl_module.model(vx)
                correct = (logits.argmax(1) == vy)
                self.rows.append({
                    "epoch": trainer.current_epoch, "dataloader_idx": k,
                    "val_loss": float(F.cross_entropy(logits, vy, reduction="sum") / len(vy)),
                    "val_accuracy": float(correct.double().mean()),
                    "per_label": [(int(c), int(correct[vy == c].sum()), int((vy == c).sum())) for c in range(CLASSES)],
                })


@pytest.mark.parametrize("monitor", [0, 1])
def test_two_validation_loaders_are_recorded_apart(tmp_path, monitor):
    x, y = separable(30)
    vx, vy = separable(24, seed=1)
    shuffled = vy[torch.as_tensor(np.random.default_rng(2).permutation(len(vy)))]
    sets = [(vx, vy), (vx, shuffled)]
    reference = ValidationReference(sets)
    kwargs = {} if monitor == 0 else {"monitor_dataloader_idx": monitor}
    recorder = DynamicsRecorder(tmp_path / "store", run_name="two-val", **kwargs)
    train = DataLoader(Rows(x, y, torch.arange(30)), batch_size=6, shuffle=True)
    vals = [DataLoader(TensorDataset(a, b), batch_size=7) for a, b in sets]
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, callbacks=[reference, recorder], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(Plain(net(), lr=0.5), train, vals)

    store = Store(tmp_path / "store")
    expected = pd.DataFrame(reference.rows).sort_values(["epoch", "dataloader_idx"]).reset_index(drop=True)
    recorded = validation_metrics(store, recorder.run_id)
    assert list(zip(recorded.epoch, recorded.dataloader_idx)) == list(zip(expected.epoch, expected.dataloader_idx))
    np.testing.assert_allclose(recorded["val_accuracy"], expected["val_accuracy"], rtol=1e-12)
    np.testing.assert_allclose(recorded["val_loss"], expected["val_loss"], rtol=1e-5)
    assert recorded["num_samples"].tolist() == [24] * 6
    by_loader = expected.groupby("dataloader_idx")["val_accuracy"]
    assert by_loader.max()[0] == 1.0 and by_loader.max()[1] < 0.75  # separable vs shuffled labels

    # the monitored loader is the run's "val": best accuracy, final accuracy, curves
    mine = expected[expected.dataloader_idx == monitor]
    info = store.run_info(recorder.run_id)
    assert info["monitor_dataloader_idx"] == monitor
    assert info["best_val_accuracy"] == recorder.best_val_accuracy == pytest.approx(mine["val_accuracy"].max())
    assert info["final_val_accuracy"] == pytest.approx(mine["val_accuracy"].iloc[-1])
    assert best_val_accuracy(store, recorder.run_id) == pytest.approx(mine["val_accuracy"].max())
    np.testing.assert_allclose(epoch_metrics(store, recorder.run_id)["val_accuracy"], mine["val_accuracy"])

    con = run_connection(store, recorder.run_id, ("val_classes",))
    classes = con.execute(
        "SELECT epoch, dataloader_idx, label, sum(correct_sum), sum(num_samples) FROM val_classes "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    con.close()
    assert classes == [
        (row.epoch, row.dataloader_idx, label, correct, count)
        for row in expected.itertuples() for label, correct, count in row.per_label
    ]


# -- batches with extra fields -----------------------------------------------------------


def test_a_fourth_element_that_is_a_group_is_not_recorded_as_weight(tmp_path):
    x, y = separable(20)
    group = torch.tensor([3.0, 5.0] * 10)  # looks like a weight, is a subgroup label
    recorder = DynamicsRecorder(tmp_path / "store", run_name="group")
    fit(Plain(net()), recorder, DataLoader(Rows(x, y, torch.arange(20) + 50, group), batch_size=5), epochs=1)
    rows = dynamics(Store(tmp_path / "store"), recorder.run_id)
    assert len(rows) == 20 and sorted(rows["sample_id"]) == list(range(50, 70))
    assert rows["weight"].tolist() == [1.0] * 20


class WeightedItem(NamedTuple):
    """A documented named-tuple batch: the weight is read by its name."""

    x: torch.Tensor
    y: torch.Tensor
    sample_id: torch.Tensor
    group: torch.Tensor
    weight: torch.Tensor


class WeightedRows(Rows):
    def __getitem__(self, i):
        return WeightedItem(self.x[i], self.y[i], self.ids[i], torch.tensor(i % 2), self.extra[i])


class WeightedMean(Plain):
    """Uses the batch's weights in its loss and does not return them."""

    def training_step(self, batch, batch_idx):
        logits = self.model(batch.x)
        loss = (batch.weight * F.cross_entropy(logits, batch.y, reduction="none")).mean()
        return {"loss": loss, "logits": logits}


def test_a_named_tuple_batch_records_its_weight_field(tmp_path):
    x, y = separable(20)
    weights = torch.linspace(0.0, 2.0, 20)
    recorder = DynamicsRecorder(tmp_path / "store", run_name="named")
    loader = DataLoader(WeightedRows(x, y, torch.arange(20) * 2, weights), batch_size=5, shuffle=True)
    fit(WeightedMean(net()), recorder, loader, epochs=2)
    rows = dynamics(Store(tmp_path / "store"), recorder.run_id)
    assert len(rows) == 40
    expected = weights.numpy()[(rows["sample_id"].to_numpy() // 2)]
    np.testing.assert_allclose(rows["weight"], expected, rtol=1e-6)


# -- string sample ids -----------------------------------------------------------------


class Keyed(Dataset):
    """Samples named by strings, as a dataset of files would name them."""

    def __init__(self, x, y, keys) -> None:
        self.x, self.y, self.keys = x, y, keys

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], self.keys[i]


KEYS = [f"shard-{i % 3}/img_{i:04d}.png" for i in range(18)]


def keyed_run(store_path, seed: int) -> str:
    x, y = separable(len(KEYS))
    torch.manual_seed(seed)
    recorder = DynamicsRecorder(store_path, run_name=f"keys-{seed}", seed=seed)
    fit(Plain(net()), recorder, DataLoader(Keyed(x, y, KEYS), batch_size=4, shuffle=True), epochs=2)
    return recorder.run_id


@pytest.mark.slow
def test_string_ids_are_stable_across_runs_and_shown_by_trainmap_scores(tmp_path, capsys):
    from training.cli.main import main

    store_path = tmp_path / "store"
    first, second = keyed_run(store_path, 0), keyed_run(store_path, 1)
    store = Store(store_path)
    expected = {key_id(key): key for key in KEYS}
    for run_id in (first, second):
        assert store.run_info(run_id)["status"] == "finished"
        keys = pq.read_table(store.run_dir(run_id) / "sample_keys.parquet").to_pandas()
        assert dict(zip(keys.sample_id, keys.sample_key)) == expected and len(keys) == len(KEYS)
        assert sorted(dynamics(store, run_id)["sample_id"].unique()) == sorted(expected)
        assert main(["scores", "--run", run_id, "--store", str(store_path)]) == 0
        shown = pd.read_csv(io.StringIO(capsys.readouterr().out))
        assert len(shown) == len(KEYS)
        assert dict(zip(shown.sample_id, shown.sample_key)) == expected
    assert main(["scores", "--run", first, "--run", second, "--store", str(store_path)]) == 0
    averaged = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert dict(zip(averaged.sample_id, averaged.sample_key)) == expected
    assert averaged["num_runs"].tolist() == [2] * len(KEYS)


def test_a_sample_key_collision_fails_the_run_loudly(tmp_path, monkeypatch):
    import training.sample_keys as sample_keys

    real = sample_keys.key_id
    monkeypatch.setattr(sample_keys, "key_id", lambda key: real(KEYS[0]) if key in KEYS[:2] else real(key))
    x, y = separable(len(KEYS))
    recorder = DynamicsRecorder(tmp_path / "store", run_name="collide")
    with pytest.raises(sample_keys.SampleKeyCollision, match="both map to sample_id"):
        fit(Plain(net()), recorder, DataLoader(Keyed(x, y, KEYS), batch_size=6), epochs=1)
    info = Store(tmp_path / "store").run_info(recorder.run_id)
    assert info["status"] == "failed" and "both map to sample_id" in info["error"]
