"""DynamicsRecorder on a tiny real Lightning training: rows, ids, checkpoints, DDP."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

import lightning as L
from store import Store, dynamics, epoch_metrics, run_summary, runs_table
from store.queries import layer_grad_norms, steps
from training import DynamicsRecorder
from training.module import Classifier, IndexedDataset

NUM_SAMPLES = 51  # odd: DistributedSampler pads one duplicate on 2 ranks


def tiny_data(num_samples: int = NUM_SAMPLES):
    generator = np.random.default_rng(0)
    x = generator.normal(size=(num_samples, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    # sample ids that are not positions, to catch position/id mix-ups
    return IndexedDataset(x, y, sample_ids=np.arange(num_samples) * 3 + 100)


class ConstantLR(Classifier):
    """Resuming with more epochs than the first fit needs a schedule without a fixed end."""

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def tiny_module(cls=Classifier) -> Classifier:
    torch.manual_seed(0)
    return cls(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), lr=1e-2)


def loaders(dataset, batch_size=8):
    val = torch.utils.data.TensorDataset(dataset.x[:20], dataset.y[:20])
    return (
        torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True),
        torch.utils.data.DataLoader(val, batch_size=10),
    )


def trainer(recorder, epochs, **kwargs):
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[recorder], logger=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False), enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, **kwargs,
    )


def test_records_every_presentation_once_per_epoch(tmp_path):
    dataset = tiny_data()
    recorder = DynamicsRecorder(tmp_path / "store", run_name="tiny", task="tiny")
    train_loader, val_loader = loaders(dataset)
    trainer(recorder, 3).fit(tiny_module(), train_loader, val_loader)
    store = Store(tmp_path / "store")
    rows = dynamics(store, recorder.run_id)
    expected_ids = sorted(dataset.sample_ids.tolist())
    for epoch in range(3):
        epoch_rows = rows[rows["epoch"] == epoch]
        assert len(epoch_rows) == NUM_SAMPLES
        assert sorted(epoch_rows["sample_id"].tolist()) == expected_ids
    # the recorded label is the one in the batch, and scores are consistent with it
    labels = dict(zip(dataset.sample_ids.tolist(), dataset.y.tolist()))
    assert (rows["label"] == rows["sample_id"].map(labels)).all()
    assert np.allclose(rows["p_true"], np.exp(-rows["loss"]), rtol=1e-4)
    assert ((rows["pred"] == rows["label"]) == rows["correct"]).all()
    assert (rows["weight"] == 1.0).all()
    info = store.run_info(recorder.run_id)
    assert info["status"] == "finished" and info["epochs_done"] == 3 and info["compacted"]
    metrics = epoch_metrics(store, recorder.run_id)
    assert metrics["epoch"].tolist() == [0, 1, 2]
    # the train accuracy per epoch is the mean of that epoch's recorded correctness
    per_epoch = rows.groupby("epoch")["correct"].mean().to_numpy()
    assert np.allclose(metrics["train_accuracy"].to_numpy(), per_epoch)
    assert metrics["val_accuracy"].between(0, 1).all()
    step_rows = steps(store, recorder.run_id)
    assert len(step_rows) == 3 * int(np.ceil(NUM_SAMPLES / 8))
    assert (step_rows["lr"] > 0).all()
    recorded = step_rows.loc[step_rows["grad_norm"].notna()]  # every 10th step by default
    assert recorded["step"].tolist() == [0, 10, 20] and (recorded["grad_norm"] > 0).all()
    layers = layer_grad_norms(store, recorder.run_id)
    assert set(layers["layer"]) == {"model.0", "model.2"}
    # the global norm is the root of the sum of squared per-layer norms
    per_step = layers.groupby("step")["grad_norm"].apply(lambda v: float(np.sqrt((v.astype(float) ** 2).sum())))
    assert np.allclose(recorded.set_index("step")["grad_norm"].sort_index(), per_step.sort_index(), rtol=1e-4)
    summary = run_summary(store, recorder.run_id)
    assert len(summary) == NUM_SAMPLES and (summary["presentations"] == 3).all()


def test_weights_in_the_batch_are_recorded(tmp_path):
    dataset = tiny_data()
    dataset.weights = torch.linspace(0.5, 1.5, NUM_SAMPLES)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny")
    train_loader, _ = loaders(dataset)
    trainer(recorder, 1, limit_val_batches=0).fit(tiny_module(), train_loader)
    rows = dynamics(Store(tmp_path / "store"), recorder.run_id)
    expected = dict(zip(dataset.sample_ids.tolist(), dataset.weights.tolist()))
    assert np.allclose(rows["weight"], rows["sample_id"].map(expected), rtol=1e-6)


def test_checkpoint_round_trip_continues_the_same_run(tmp_path):
    dataset = tiny_data()
    train_loader, val_loader = loaders(dataset)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny")
    first = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, callbacks=[recorder, checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    first.fit(tiny_module(ConstantLR), train_loader, val_loader)
    run_id = recorder.run_id
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    saved = next(v for k, v in state.items() if k.startswith("DynamicsRecorder"))
    assert saved == {"run_id": run_id, "epochs_recorded": 2, "best_val_accuracy": recorder.best_val_accuracy}

    resumed = DynamicsRecorder(tmp_path / "store", task="tiny")
    trainer(resumed, 4).fit(tiny_module(ConstantLR), train_loader, val_loader, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.run_id == run_id
    assert resumed.epochs_recorded == 4
    store = Store(tmp_path / "store")
    assert store.run_ids() == [run_id]
    rows = dynamics(store, run_id)
    assert rows.groupby("epoch").size().to_dict() == {e: NUM_SAMPLES for e in range(4)}
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["epochs_done"] == 4 and info["compacted"]


def test_failed_training_marks_the_run_failed_and_keeps_its_epochs(tmp_path):
    class Exploding(Classifier):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    torch.manual_seed(0)
    module = Exploding(torch.nn.Linear(6, 4), lr=1e-2)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny")
    train_loader, _ = loaders(tiny_data())
    with pytest.raises(RuntimeError, match="boom"):
        trainer(recorder, 3, limit_val_batches=0).fit(module, train_loader)
    store = Store(tmp_path / "store")
    info = store.run_info(recorder.run_id)
    assert info["status"] == "failed" and "boom" in info["error"]
    assert len(dynamics(store, recorder.run_id)) == NUM_SAMPLES  # epoch 0 is kept


def test_batches_without_sample_ids_get_a_clear_error(tmp_path):
    class NoIds(Classifier):
        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.model(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits}

    dataset = torch.utils.data.TensorDataset(torch.zeros(8, 6), torch.zeros(8, dtype=torch.long))
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny")
    with pytest.raises(ValueError, match="sample_id"):
        trainer(recorder, 1, limit_val_batches=0).fit(
            NoIds(torch.nn.Linear(6, 4), lr=1e-2), torch.utils.data.DataLoader(dataset, batch_size=4)
        )


def test_store_path_that_is_a_file_is_rejected(tmp_path):
    from store.errors import StoreError

    path = tmp_path / "a_file"
    path.write_text("keep me")
    with pytest.raises(StoreError, match="is a file"):
        DynamicsRecorder(path)
    assert path.read_text() == "keep me"


@pytest.mark.slow
def test_ddp_two_cpu_processes_record_each_sample_once(tmp_path):
    dataset = tiny_data()
    # chunks of 7 presentations: each rank (26 presentations an epoch) writes 4 segments an epoch
    recorder = DynamicsRecorder(str(tmp_path / "store"), task="tiny", chunk_rows=7)
    train_loader, val_loader = loaders(dataset)
    ddp = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[recorder],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    ddp.fit(tiny_module(), train_loader, val_loader)
    store = Store(tmp_path / "store")
    (run_id,) = store.run_ids()
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["world_size"] == 2
    rows = dynamics(store, run_id)
    for epoch in range(2):
        ids = rows.loc[rows["epoch"] == epoch, "sample_id"]
        assert sorted(ids.tolist()) == sorted(dataset.sample_ids.tolist())
    # both ranks wrote rows: the compacted table keeps each rank's samples
    raw = pd.read_parquet(store.run_dir(run_id) / "presentations.parquet")
    assert set(raw["rank"]) == {0, 1}
    metrics = epoch_metrics(store, run_id)
    assert metrics["epoch"].tolist() == [0, 1]
    # the train totals are summed over both ranks (26 presentations each, one a padding duplicate)
    epochs = pd.read_parquet(store.run_dir(run_id) / "epochs.parquet")
    assert epochs.loc[epochs["split"] == "train", "num_samples"].tolist() == [52, 52]
    assert store.run_info(run_id)["output_kind"] == "classification"
    table = runs_table(store)
    assert table.loc[0, "epochs_done"] == 2


class GradNormReference(L.Callback):
    """Per step, float64 gradient norms of each layer and the learning rate, taken from the
    same gradients the recorder sees (registered after it)."""

    def __init__(self):
        self.layers: dict[int, dict[str, float]] = {}
        self.lrs: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        per_layer: dict[str, float] = {}
        for name, parameter in pl_module.named_parameters():
            layer = name.rsplit(".", 1)[0]
            per_layer[layer] = per_layer.get(layer, 0.0) + float(parameter.grad.double().square().sum())
        self.layers[trainer.global_step] = {k: v**0.5 for k, v in per_layer.items()}
        self.lrs[trainer.global_step] = optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("every", [1, 4])
def test_step_gradient_norms_and_learning_rate_are_exact(tmp_path, every):
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", grad_norm_every_n_steps=every)
    reference = GradNormReference()
    train_loader, _ = loaders(tiny_data())
    fit = trainer(recorder, 3)
    fit.callbacks.append(reference)
    fit.fit(tiny_module(), train_loader)
    store = Store(tmp_path / "store")
    sampled = list(range(0, 21, every))  # 7 steps per epoch (51 / 8), 3 epochs
    per_layer = layer_grad_norms(store, recorder.run_id)
    assert sorted(set(per_layer["step"])) == sampled
    assert len(per_layer) == 2 * len(sampled)  # two Linear layers
    expected = per_layer.apply(lambda r: reference.layers[r["step"]][r["layer"]], axis=1)
    np.testing.assert_allclose(per_layer["grad_norm"], expected, rtol=1e-5)
    rows = steps(store, recorder.run_id).set_index("step")
    assert list(rows.index) == list(range(21))
    assert list(rows.index[rows["grad_norm"].notna()]) == sampled
    global_norm = [sum(v**2 for v in reference.layers[s].values()) ** 0.5 for s in sampled]
    np.testing.assert_allclose(rows.loc[sampled, "grad_norm"], global_norm, rtol=1e-5)
    # the learning rate at every step, whatever the norms' interval
    np.testing.assert_allclose(rows["lr"], [reference.lrs[s] for s in rows.index])
    assert (rows["lr"].diff().dropna() != 0).any()  # the one-cycle schedule moves it
    # unrecorded norms are SQL nulls, so DuckDB's aggregates skip them
    files = [str(path) for path in store.table_files(recorder.run_id, "steps")]
    nulls, mean = duckdb.connect().execute(
        "SELECT count(*) FILTER (WHERE grad_norm IS NULL), avg(grad_norm) FROM read_parquet($files)",
        {"files": files},
    ).fetchone()
    assert nulls == 21 - len(sampled)
    assert mean == pytest.approx(np.mean(global_norm), rel=1e-5)


def test_no_gradient_norms_still_records_the_learning_rate(tmp_path):
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", record_grad_norms=False)
    train_loader, _ = loaders(tiny_data())
    trainer(recorder, 1).fit(tiny_module(), train_loader)
    store = Store(tmp_path / "store")
    rows = steps(store, recorder.run_id)
    assert len(rows) == 7 and rows["grad_norm"].isna().all()
    assert rows["lr"].notna().all() and (rows["lr"] > 0).all()
    assert layer_grad_norms(store, recorder.run_id).empty


@pytest.mark.parametrize("every", [0, -1, 2.5, True])
def test_grad_norm_every_n_steps_must_be_a_positive_integer(tmp_path, every):
    with pytest.raises(ValueError, match="grad_norm_every_n_steps must be a positive integer"):
        DynamicsRecorder(tmp_path / "store", grad_norm_every_n_steps=every)


class TablesAtEpochEnd(L.Callback):
    """After the recorder's epoch end (registered after it): wait for its writer, then
    count what a reader of the store sees, per table, for the epochs so far."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.seen: list[dict[str, int]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.recorder.drain()
        store, run_id = Store(self.recorder.store_path), self.recorder.run_id
        self.seen.append({
            "presentations": len(dynamics(store, run_id)),
            "steps": len(steps(store, run_id)),
            "layer_grad_norms": len(layer_grad_norms(store, run_id)),
            "epochs": len(epoch_metrics(store, run_id)),
            "epochs_done": store.run_info(run_id).get("epochs_done", 0),
        })


@pytest.mark.parametrize("flush_secs", [0, 3600])
def test_when_each_table_becomes_readable(tmp_path, flush_secs):
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", flush_secs=flush_secs, grad_norm_every_n_steps=1)
    probe = TablesAtEpochEnd(recorder)
    fit = trainer(recorder, 3)
    fit.callbacks.append(probe)
    train_loader, _ = loaders(tiny_data())
    fit.fit(tiny_module(), train_loader)
    # presentations: at the end of every epoch, whatever flush_secs says
    assert [seen["presentations"] for seen in probe.seen] == [NUM_SAMPLES, 2 * NUM_SAMPLES, 3 * NUM_SAMPLES]
    small = [(s["steps"], s["layer_grad_norms"], s["epochs"], s["epochs_done"]) for s in probe.seen]
    if flush_secs == 0:  # every epoch: 7 steps, 2 layers, one train row per epoch
        assert small == [(7, 14, 1, 1), (14, 28, 2, 2), (21, 42, 3, 3)]
    else:  # buffered until the end of training
        assert small == [(0, 0, 0, 0)] * 3
    store = Store(tmp_path / "store")
    assert len(steps(store, recorder.run_id)) == 21
    assert len(layer_grad_norms(store, recorder.run_id)) == 42
    assert store.run_info(recorder.run_id)["epochs_done"] == 3


def test_a_checkpoint_writes_what_it_says_was_recorded(tmp_path):
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", flush_secs=3600)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    probe = TablesAtEpochEnd(recorder)
    fit = trainer(recorder, 2, enable_checkpointing=True, default_root_dir=tmp_path)
    fit.callbacks += [checkpoint, probe]  # Lightning runs checkpoint callbacks last
    train_loader, _ = loaders(tiny_data())
    fit.fit(tiny_module(), train_loader)
    # nothing small at epoch 0's end; its checkpoint, saved next, wrote epoch 0's rows;
    # epoch 1's rows wait for its own checkpoint
    assert [(s["steps"], s["epochs_done"]) for s in probe.seen] == [(0, 0), (7, 1)]


def test_resuming_from_an_earlier_checkpoint_drops_the_rows_recorded_after_it(tmp_path):
    dataset = tiny_data()
    train_loader, val_loader = loaders(dataset)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", grad_norm_every_n_steps=1)
    first = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, callbacks=[recorder, checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    first.fit(tiny_module(ConstantLR), train_loader, val_loader)
    after_epoch_0 = next((tmp_path / "ckpt").glob("epoch=0-*.ckpt"))
    resumed = DynamicsRecorder(tmp_path / "store", task="tiny", grad_norm_every_n_steps=1)
    trainer(resumed, 2).fit(tiny_module(ConstantLR), train_loader, val_loader, ckpt_path=str(after_epoch_0))
    assert resumed.run_id == recorder.run_id
    store = Store(tmp_path / "store")
    rows = dynamics(store, recorder.run_id)
    # epochs 1 and 2 of the first fit are gone; epoch 1 is the resumed fit's
    assert rows.groupby("epoch").size().to_dict() == {0: NUM_SAMPLES, 1: NUM_SAMPLES}
    step_rows = steps(store, recorder.run_id)
    assert list(step_rows["step"]) == list(range(14))
    per_layer = layer_grad_norms(store, recorder.run_id)
    assert len(per_layer) == 28 and not per_layer.duplicated(["step", "layer"]).any()
    metrics = epoch_metrics(store, recorder.run_id)
    assert sorted(metrics["epoch"]) == [0, 1]


def test_flush_secs_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match="flush_secs must be >= 0"):
        DynamicsRecorder(tmp_path / "store", flush_secs=-1)
