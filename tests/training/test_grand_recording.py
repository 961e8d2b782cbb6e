"""GrandRecording (training/grand/recording.py): GraNd fused with the training step, the
loss-scale check, deferred steps, and a real Lightning run."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grand_reference import (
    LOSSES,
    FakeTrainer,
    assert_close,
    fused_step,
    labels,
    make_net,
    randn,
    reference,
)
from training.grand import GrandRecording, GrandSchedule, per_sample_grad_norms, per_sample_grad_norms_by_layer
from training.grand.logs import forget_warnings


@pytest.fixture(autouse=True)
def _fresh_warnings():
    forget_warnings()
    yield
    forget_warnings()


# -- fused with the training step ---------------------------------------------------------


@pytest.mark.parametrize("reduction", ["weighted_mean", "mean", "sum"])
@pytest.mark.parametrize("numpy_on_cpu", [True, False])
def test_fused_norms_match_reference(reduction, numpy_on_cpu, monkeypatch):
    monkeypatch.setattr(GrandRecording, "numpy_on_cpu", numpy_on_cpu)
    x, y = randn(8, 12).double(), labels(3, 8)
    weights = torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0, 0.25, 1.0, 1.0], dtype=torch.float64)
    if reduction != "weighted_mean":
        weights = torch.ones(8, dtype=torch.float64)
    expected = reference(make_net(), x, y)
    rows, sqnorm = fused_step(make_net(), x, y, weights, LOSSES[reduction], loss_reduction=reduction)
    assert_close(torch.from_numpy(rows["grand"]), expected, 1e-5)  # stored as float32
    assert rows["sample_id"].tolist() == list(range(100, 108))
    assert rows["epoch"].dtype == np.int32 and rows["step"].dtype == np.int64
    assert rows["sample_id"].dtype == np.int64 and rows["grand"].dtype == np.float32 and rows["rank"].dtype == np.int16
    assert sqnorm is not None and sqnorm.shape == (8,)


def test_fused_online_weights_computed_inside_the_step():
    # weights that the batch does not carry (online reweighting): read off the gradient
    x, y = randn(8, 12).double(), labels(3, 8)

    def loss_fn(logits, y, w):
        losses = F.cross_entropy(logits, y, reduction="none")
        online = torch.softmax(losses.detach(), 0) * len(y)
        return (online * losses).mean()

    rows, _ = fused_step(make_net(), x, y, torch.ones(8, dtype=torch.float64), loss_fn)
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


def test_fused_zero_weight_samples_get_an_exact_extra_pass():
    x, y = randn(8, 12).double(), labels(3, 8)
    weights = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    rows, _ = fused_step(make_net(), x, y, weights, LOSSES["weighted_mean"])
    grand = torch.from_numpy(rows["grand"])
    assert bool((grand > 0).all())
    assert_close(grand, reference(make_net(), x, y), 1e-5)


def test_fused_other_loss_falls_back_and_stays_exact(caplog):
    x, y = randn(8, 12).double(), labels(3, 8)

    def smoothed(logits, y, w):
        return F.cross_entropy(logits, y, label_smoothing=0.1)

    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(make_net(), x, y, torch.ones(8, dtype=torch.float64), smoothed)
    assert "not weighted_mean cross-entropy" in caplog.text
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


def test_fused_mean_declared_but_weighted_is_caught(caplog):
    x, y = randn(8, 12).double(), labels(3, 8)
    weights = torch.linspace(0.5, 2, 8, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, _ = fused_step(make_net(), x, y, weights, LOSSES["weighted_mean"], loss_reduction="mean")
    assert "fallback" in caplog.text
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(), x, y), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_grad_and_step_bit_identical(dtype):
    x, y = randn(8, 12).to(dtype), labels(3, 8)
    weights = torch.linspace(0.5, 2, 8, dtype=dtype)
    plain, fused = make_net(dtype), make_net(dtype)
    LOSSES["weighted_mean"](plain(x), y, weights).backward()
    fused_step(fused, x, y, weights, LOSSES["weighted_mean"])
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a.grad, b.grad)
    for model in (plain, fused):
        torch.optim.AdamW(model.parameters(), lr=0.1).step()
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.equal(a, b)


def test_fused_float32_close_to_float64_reference():
    x, y = randn(8, 12), labels(3, 8)
    rows, _ = fused_step(make_net(torch.float32), x, y, torch.ones(8), LOSSES["weighted_mean"])
    assert_close(torch.from_numpy(rows["grand"]), reference(make_net(torch.float64), x.double(), y), 1e-4)


def test_unscheduled_step_arms_nothing():
    model = make_net()
    recording = GrandRecording(GrandSchedule.parse("epochs:3"))
    trainer = FakeTrainer()
    recording.setup(trainer, model, "fit")
    x, y = randn(8, 12).double(), labels(3, 8)
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    recording.on_train_batch_start(trainer, model, (x, y, torch.arange(8)), 0)
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before  # only the head's hook
    LOSSES["mean"](model(x), y, None).backward()
    recording.on_after_backward(trainer, model)
    recording.on_train_batch_end(trainer, model, {}, (x, y, torch.arange(8)), 0)
    assert recording.take_rows() is None
    assert recording.last_layer_sqnorm() is not None  # grand_last is every step


def test_last_layer_sqnorm_gives_last_layer_grad_norm():
    model = make_net()
    x, y = randn(8, 12).double(), labels(3, 8)
    _, sqnorm = fused_step(model, x, y, torch.ones(8, dtype=torch.float64), LOSSES["mean"], schedule="off")
    torch.manual_seed(0)
    head = make_net()[-1]
    # EL2N * sqrt(||h||^2 + 1) equals the head's exact per-sample gradient norm
    features = make_net()[:-1](x)
    p = torch.softmax(head(features), 1)
    el2n = (p - F.one_hot(y, 3)).norm(dim=1)
    assert torch.allclose(sqnorm.double(), features.pow(2).sum(1).detach(), rtol=1e-6)
    head_only = per_sample_grad_norms_by_layer(make_net(), x, y)["6"]
    assert_close(el2n * torch.sqrt(features.pow(2).sum(1) + 1), head_only.detach())


# -- a real Lightning run -----------------------------------------------------------------


@pytest.mark.slow
def test_lightning_run_writes_grand_rows(tmp_path):
    import lightning as L

    from store import Store
    from training import DynamicsRecorder
    from training.module import Classifier, IndexedDataset

    generator = np.random.default_rng(0)
    x = generator.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    ids = np.arange(40) * 7 + 3
    dataset = IndexedDataset(x, y, sample_ids=ids)
    dataset.weights[5] = 0.0  # a weight-0 sample: scored by the extra exact pass
    dataset.weights[6] = 2.5
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    initial = copy.deepcopy(net)
    module = Classifier(net, lr=1e-2)

    class Snapshot(L.Callback):
        """The weights and batch of one scheduled step, before its update."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 1:
                self.step = trainer.global_step
                self.model = copy.deepcopy(pl_module.model)
                self.batch = [t.clone() for t in batch]

    snapshot = Snapshot()
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", grand=GrandRecording(GrandSchedule.parse("init+epochs:0,2")))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, logger=False, callbacks=[snapshot, recorder],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, loader)

    store = Store(tmp_path / "store")
    import duckdb

    run_dir = store.run_dir(recorder.run_id)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{run_dir}/grand*.parquet')").df()
    assert sorted(rows["epoch"].unique().tolist()) == [-1, 0, 2]
    for epoch, group in rows.groupby("epoch"):
        assert len(group) == 40
        assert sorted(group["sample_id"].tolist()) == sorted(ids.tolist())
        assert np.isfinite(group["grand"]).all() and (group["grand"] > 0).all()
    init = rows[rows["epoch"] == -1].set_index("sample_id").loc[ids, "grand"].to_numpy()
    expected_init = per_sample_grad_norms(initial, torch.as_tensor(x), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(init, expected_init, rtol=1e-5)
    step_rows = rows[rows["step"] == snapshot.step].set_index("sample_id")
    bx, by, bids, _ = snapshot.batch
    expected = per_sample_grad_norms(snapshot.model, bx, by).numpy()
    np.testing.assert_allclose(step_rows.loc[bids.numpy(), "grand"].to_numpy(), expected, rtol=1e-5)

    from store import run_summary

    summary = run_summary(store, recorder.run_id)
    assert summary["grand"].notna().all() and summary["grand_last"].notna().all()
    # the summary averages scheduled epochs >= 0, never the initialisation rows
    mean = rows[rows["epoch"] >= 0].groupby("sample_id")["grand"].mean()
    np.testing.assert_allclose(summary.set_index("sample_id").loc[mean.index, "grand"], mean, rtol=1e-5)


# -- deferred checks (several steps) ---------------------------------------------------------


def run_steps(loss_fns, weights_list, verify_steps=1, reduction="weighted_mean"):
    """Train make_net() for len(loss_fns) fused steps; return (rows, expected per step)."""
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recording = GrandRecording(GrandSchedule.parse("all"), loss_reduction=reduction)
    recording.verify_steps = verify_steps
    trainer = FakeTrainer()
    recording.setup(trainer, model, "fit")
    expected = {}
    for step, (loss_fn, weights) in enumerate(zip(loss_fns, weights_list)):
        trainer.global_step = step
        n = 8 if step % 2 == 0 else 5  # a smaller last batch, as at the end of an epoch
        x, y = randn(n, 12).double() + step, labels(3, n)
        ids = torch.arange(n) + 10 * step
        batch = (x, y, ids, weights[:n])
        expected[step] = reference(copy.deepcopy(model), x, y)
        optimizer.zero_grad()
        recording.on_train_batch_start(trainer, model, batch, 0)
        loss_fn(model(x), y, weights[:n]).backward()
        recording.on_after_backward(trainer, model)
        optimizer.step()
        recording.on_train_batch_end(trainer, model, {}, batch, 0)
    return recording.take_rows(), expected


def rows_of(rows, step):
    mask = rows["step"] == step
    return torch.from_numpy(rows["grand"][mask]), rows["sample_id"][mask]


@pytest.mark.parametrize("reduction", ["weighted_mean", "mean"])
def test_deferred_steps_match_reference(reduction):
    weights = torch.linspace(0.5, 2, 8, dtype=torch.float64) if reduction == "weighted_mean" else torch.ones(8, dtype=torch.float64)
    loss = LOSSES[reduction]
    rows, expected = run_steps([loss] * 5, [weights] * 5, reduction=reduction)
    assert sorted(set(rows["step"].tolist())) == [0, 1, 2, 3, 4]
    for step, norms in expected.items():
        got, ids = rows_of(rows, step)
        assert ids.tolist() == (np.arange(len(norms)) + 10 * step).tolist()
        assert_close(got, norms, 1e-5)


def test_deferred_step_failing_the_loss_check_is_dropped_not_wrong(caplog):
    smoothed = lambda logits, y, w: F.cross_entropy(logits, y, label_smoothing=0.2)  # noqa: E731
    plain = LOSSES["weighted_mean"]
    ones = torch.ones(8, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="training.grand"):
        rows, expected = run_steps([plain, plain, smoothed, plain, plain], [ones] * 5)
    assert "not weighted_mean cross-entropy" in caplog.text
    steps = set(rows["step"].tolist())
    assert 2 not in steps and {0, 1}.issubset(steps)
    for step in steps:
        assert_close(rows_of(rows, step)[0], expected[step], 1e-5)


def test_deferred_zero_weight_set_inside_the_step_is_scored_exactly():
    def zero_inside(logits, y, w):
        inner = torch.ones_like(w)
        inner[1] = 0.0
        return (inner * F.cross_entropy(logits, y, reduction="none")).mean()

    plain = LOSSES["weighted_mean"]
    ones = torch.ones(8, dtype=torch.float64)
    rows, expected = run_steps([plain, plain, zero_inside, zero_inside, plain], [ones] * 5)
    for step, norms in expected.items():
        got, ids = rows_of(rows, step)
        assert len(ids) == len(norms)
        assert_close(got, norms, 1e-5)


def test_deferred_batch_weight_zero_is_scored_immediately():
    weights = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    rows, expected = run_steps([LOSSES["weighted_mean"]] * 4, [weights] * 4)
    for step, norms in expected.items():
        assert_close(rows_of(rows, step)[0], norms, 1e-5)
