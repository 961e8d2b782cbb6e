"""The framework-free Recorder (training.recording_session): a plain PyTorch loop and Lightning
Fabric record the same rows as the Lightning callback on the same data and seed; groups;
its refusals."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from store import Store, dynamics, epoch_metrics
from store.queries import layer_grad_norms, steps
from training import DynamicsRecorder, Recorder

NUM_SAMPLES, BATCH, EPOCHS, LR = 40, 8, 3, 0.2
COLUMNS = ["epoch", "step", "sample_id", "label", "loss", "p_true", "el2n", "correct", "pred", "margin", "weight"]


def data():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(NUM_SAMPLES, 5)), dtype=torch.float32)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    ids = torch.arange(NUM_SAMPLES) * 7 + 3
    groups = ["web" if i % 3 else "code" for i in range(NUM_SAMPLES)]
    return x, y, ids, groups


def batches(with_groups=False):
    """The same batches, in the same order, for every loop (no shuffling)."""
    x, y, ids, groups = data()
    for start in range(0, NUM_SAMPLES, BATCH):
        part = slice(start, start + BATCH)
        batch = {"x": x[part], "y": y[part], "sample_id": ids[part]}
        if with_groups:
            batch["group"] = groups[part]
        yield batch


def network():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = network()

    def training_step(self, batch, batch_idx):
        logits = self.net(batch["x"])
        return {"loss": F.cross_entropy(logits, batch["y"]), "logits": logits}

    def validation_step(self, batch, batch_idx):
        logits = self.net(batch["x"])
        return {"loss": F.cross_entropy(logits, batch["y"]), "logits": logits}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def lightning_run(store, with_groups=False):
    recorder = DynamicsRecorder(store, run_name="lightning", task="tiny", grad_norm_every_n_steps=2)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, callbacks=[recorder], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    as_loader = lambda items: torch.utils.data.DataLoader(list(items), batch_size=None)  # batches as they are
    trainer.fit(Module(), as_loader(batches(with_groups)), as_loader(batches()))
    return recorder.run_id


def train_and_record(rec, model, optimizer, backward, with_groups=False, outputs_as_dict=False):
    """The loop a user writes around a Recorder: the same batches and steps as Lightning's."""
    step = 0
    for epoch in range(EPOCHS):
        for batch in batches(with_groups):
            logits = model(batch["x"])
            loss = F.cross_entropy(logits, batch["y"])
            optimizer.zero_grad()
            backward(loss)
            outputs = {"loss": loss, "logits": logits} if outputs_as_dict else logits
            rec.log_batch(batch["sample_id"], outputs, batch["y"], step=step, epoch=epoch, groups=batch.get("group"))
            rec.log_step(step, loss=loss, lr=optimizer.param_groups[0]["lr"])
            optimizer.step()
            step += 1
        with torch.no_grad():
            for batch in batches():
                rec.log_validation(model(batch["x"]), batch["y"])
        rec.end_epoch()


def plain_run(store, with_groups=False):
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    with Recorder(store, run_name="plain", task="tiny", model=model, grad_norm_every_n_steps=2,
                  max_epochs=EPOCHS) as rec:
        train_and_record(rec, model, optimizer, lambda loss: loss.backward(), with_groups)
    return rec.run_id


def fabric_run(store):
    fabric = L.Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = fabric.setup(model, optimizer)
    with Recorder(store, run_name="fabric", task="tiny", model=model, grad_norm_every_n_steps=2,
                  rank=fabric.global_rank, world_size=fabric.world_size) as rec:
        train_and_record(rec, model, optimizer, fabric.backward, outputs_as_dict=True)
    return rec.run_id


def rows(store, run_id):
    return dynamics(store, run_id)[COLUMNS].sort_values(["epoch", "step", "sample_id"]).reset_index(drop=True)


@pytest.mark.slow
def test_a_plain_loop_and_fabric_record_the_rows_the_lightning_callback_records(tmp_path):
    store_path = tmp_path / "store"
    runs = {"lightning": lightning_run(store_path), "plain": plain_run(store_path), "fabric": fabric_run(store_path)}
    store = Store(store_path)
    reference = rows(store, runs["lightning"])
    assert len(reference) == EPOCHS * NUM_SAMPLES
    reference_epochs = epoch_metrics(store, runs["lightning"])
    reference_steps = steps(store, runs["lightning"])
    reference_norms = layer_grad_norms(store, runs["lightning"])
    for name in ("plain", "fabric"):
        run_id = runs[name]
        assert store.run_info(run_id)["status"] == "finished" and store.run_info(run_id)["epochs_done"] == EPOCHS
        got = rows(store, run_id)
        pd.testing.assert_frame_equal(got, reference, check_exact=False, rtol=1e-5, atol=1e-6, obj=name)
        metrics = epoch_metrics(store, run_id)
        for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(metrics[column], reference_epochs[column], rtol=1e-5, err_msg=f"{name} {column}")
        got_steps = steps(store, run_id)
        assert got_steps["step"].tolist() == reference_steps["step"].tolist() == list(range(EPOCHS * NUM_SAMPLES // BATCH))
        for column in ("loss", "lr", "grad_norm"):
            np.testing.assert_allclose(got_steps[column], reference_steps[column], rtol=1e-5, err_msg=f"{name} {column}")
        norms = layer_grad_norms(store, run_id)
        assert len(norms) == len(reference_norms) > 0
        np.testing.assert_allclose(norms["grad_norm"], reference_norms["grad_norm"], rtol=1e-5)


def presentations_groups(store, run_id):
    """Each presentation's group name, read from the run's compacted files."""
    folder = store.run_dir(run_id)
    presentations = pq.read_table(folder / "presentations.parquet", columns=["sample_id", "group_id"]).to_pandas()
    groups = pq.read_table(folder / "groups.parquet").to_pandas().drop_duplicates()
    assert groups["group_id"].is_unique
    return presentations.merge(groups, on="group_id", how="left")


@pytest.mark.slow
def test_groups_given_by_name_are_recorded_per_presentation_with_their_names(tmp_path):
    store_path = tmp_path / "store"
    runs = [lightning_run(store_path, with_groups=True), plain_run(store_path, with_groups=True)]
    _, _, ids, groups = data()
    expected = dict(zip(ids.tolist(), groups))
    store = Store(store_path)
    ids_by_run = []
    for run_id in runs:
        table = presentations_groups(store, run_id)
        assert len(table) == EPOCHS * NUM_SAMPLES and table["group_name"].notna().all()
        assert (table["group_name"] == table["sample_id"].map(expected)).all()
        ids_by_run.append(dict(zip(table["group_name"], table["group_id"])))
    assert ids_by_run[0] == ids_by_run[1]  # a group's id comes from its name: the same in every run
    # a run without groups has a null group_id and an empty groups table
    plain = plain_run(store_path)
    assert presentations_groups(store, plain)["group_id"].isna().all()


def test_integer_groups_are_their_own_ids_and_names(tmp_path):
    x, y, ids, _ = data()
    with Recorder(tmp_path / "store", task="tiny") as rec:
        logits = torch.zeros(NUM_SAMPLES, 3)
        rec.log_batch(ids, logits, y.clamp(max=2), step=0, groups=torch.arange(NUM_SAMPLES) % 4)
        rec.end_epoch()
    table = presentations_groups(Store(tmp_path / "store"), rec.run_id)
    assert (table["group_id"] == (table["sample_id"] - 3) // 7 % 4).all()
    assert (table["group_name"] == table["group_id"].astype(str)).all()


def test_a_per_sample_loss_from_a_plain_loop(tmp_path):
    x, _, ids, _ = data()
    target = x[:, :2].sum(1, keepdim=True)
    model = torch.nn.Linear(5, 1)
    with Recorder(tmp_path / "store", task="regression") as rec:
        for epoch in range(2):
            losses = F.mse_loss(model(x), target, reduction="none").mean(1)
            rec.log_batch(ids, losses, step=epoch)
            rec.end_epoch()
    got = dynamics(Store(tmp_path / "store"), rec.run_id)
    assert len(got) == 2 * NUM_SAMPLES and got["p_true"].isna().all() and got["correct"].isna().all()
    first = got[got["epoch"] == 0].set_index("sample_id")["loss"].sort_index()
    np.testing.assert_allclose(first.to_numpy(), losses.detach().numpy()[np.argsort(ids.numpy())], rtol=1e-6)
    assert Store(tmp_path / "store").run_info(rec.run_id)["output_kind"] == "loss"


def test_an_interrupt_ends_the_run_interrupted_and_keeps_its_epochs(tmp_path):
    x, y, ids, _ = data()
    with pytest.raises(KeyboardInterrupt):
        with Recorder(tmp_path / "store", task="tiny") as rec:
            rec.log_batch(ids, torch.zeros(NUM_SAMPLES, 4), y, step=0)
            rec.end_epoch()
            rec.log_batch(ids[:8], torch.zeros(8, 4), y[:8], step=1)
            raise KeyboardInterrupt
    store = Store(tmp_path / "store")
    info = store.run_info(rec.run_id)
    assert info["status"] == "interrupted" and info["error"].startswith("interrupted by SIGINT (Ctrl-C)")
    assert info["epochs_done"] == 1 and len(dynamics(store, rec.run_id)) == NUM_SAMPLES  # the half epoch dropped


def test_misuse_is_refused_with_one_line_saying_what_to_do(tmp_path):
    x, y, ids, _ = data()
    rec = Recorder(tmp_path / "store", task="tiny")
    with pytest.raises(RuntimeError, match=r"not started; use `with Recorder\(...\) as rec:`"):
        rec.log_batch(ids, torch.zeros(NUM_SAMPLES, 4), y, step=0)
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())
    with pytest.raises(ValueError, match="epoch=1, but epoch 0 is being recorded; call end_epoch"):
        with Recorder(tmp_path / "store", task="tiny") as rec:
            rec.log_batch(ids, torch.zeros(NUM_SAMPLES, 4), y, step=0, epoch=1)
    store = Store(tmp_path / "store")
    info = store.run_info(rec.run_id)
    assert info["status"] == "failed" and "end_epoch" in info["error"]
    with pytest.raises(ValueError, match="targets are float32"):  # refused at the first batch
        with Recorder(tmp_path / "store", task="tiny") as rec:
            rec.log_batch(ids, torch.zeros(NUM_SAMPLES, 4), y.float(), step=0)
    assert store.run_info(rec.run_id)["status"] == "failed"
    with pytest.raises(ValueError, match="give every batch of a run its groups, or none"):
        with Recorder(tmp_path / "store", task="tiny") as rec:
            rec.log_batch(ids[:4], torch.zeros(4, 4), y[:4], step=0, groups=["a"] * 4)
            rec.log_batch(ids[4:8], torch.zeros(4, 4), y[4:8], step=1)
    with pytest.raises(ValueError, match="'group' must hold one group per sample"):
        with Recorder(tmp_path / "store", task="tiny") as rec:
            rec.log_batch(ids[:4], torch.zeros(4, 4), y[:4], step=0, groups=[0.5] * 4)
    with pytest.raises(RuntimeError, match="call end_epoch\\(\\) before finishing"):
        with Recorder(tmp_path / "store", task="tiny") as rec:
            rec.log_batch(ids[:4], torch.zeros(4, 4), y[:4], step=0)
    assert store.run_info(rec.run_id)["status"] == "failed"


def _rank_loop(rank, world_size, port, store_path):
    """One rank of a plain torch.distributed (gloo) loop: each rank logs its half of the samples."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        x, y, ids, groups = data()
        mine = slice(rank, NUM_SAMPLES, world_size)
        model = network()
        with Recorder(store_path, run_name="ddp", task="tiny", model=model) as rec:
            for epoch in range(2):
                logits = model(x[mine])
                loss = F.cross_entropy(logits, y[mine])
                loss.backward()
                rec.log_batch(ids[mine], logits, y[mine], step=epoch, groups=groups[mine])
                rec.log_step(epoch, loss=loss, lr=0.1)
                rec.log_validation(model(x[:10]).detach(), y[:10])
                rec.end_epoch()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_of_a_plain_distributed_loop_record_one_run(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store_path = tmp_path / "store"
    mp.spawn(_rank_loop, args=(2, port, str(store_path)), nprocs=2, join=True)
    store = Store(store_path)
    (run_id,) = store.run_ids()  # rank 0 created it, rank 1 learnt its id
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["epochs_done"] == 2 and info["world_size"] == 2
    got = dynamics(store, run_id)
    _, _, ids, groups = data()
    for epoch in range(2):
        assert sorted(got[got["epoch"] == epoch]["sample_id"]) == sorted(ids.tolist())
    metrics = epoch_metrics(store, run_id)
    # the epoch's train loss is over both ranks' samples, not rank 0's alone
    np.testing.assert_allclose(metrics["train_loss"], got.groupby("epoch")["loss"].mean(), rtol=1e-5)
    table = presentations_groups(store, run_id)
    assert (table["group_name"] == table["sample_id"].map(dict(zip(ids.tolist(), groups)))).all()
