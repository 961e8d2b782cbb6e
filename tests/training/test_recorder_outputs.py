"""DynamicsRecorder on real Lightning fits, for every output shape: the per-presentation rows
equal a plain-PyTorch recomputation from the outputs each step returned (classification,
a causal sequence model with -100 padding and a loss mask, a per-sample MSE loss); anything
else is refused at the first batch; the recorder holds at most one chunk of statistics, and
syncs with the host only once per chunk."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from store import Store, dynamics, epoch_metrics
from training import DynamicsRecorder
from training.reduce import SEQUENCE_CORRECT_THRESHOLD

NUM_SAMPLES = 51
BATCH = 8


class DictData(torch.utils.data.Dataset):
    """Samples as dicts ``{"x", "y", "sample_id"}``; ids that are not positions."""

    def __init__(self, x, y):
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)
        self.ids = torch.arange(len(self.x)) * 3 + 100

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "sample_id": self.ids[i]}


class Returning(L.LightningModule):
    """``training_step`` returns ``outputs(self, batch)``; every step keeps, before the
    update, what it returned and the batch (for the test's own recomputation)."""

    def __init__(self, model, outputs):
        super().__init__()
        self.model, self.outputs, self.seen = model, outputs, []

    def training_step(self, batch, batch_idx):
        out = self.outputs(self, batch)
        if out is not None:
            kept = {k: v.detach().clone() for k, v in {**batch, **out}.items() if isinstance(v, torch.Tensor)}
            self.seen.append({"epoch": self.current_epoch, "step": self.global_step, **kept})
        return out

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def fit(tmp_path, module, data, epochs=2, recorder=None, callbacks=(), **recorder_kwargs):
    recorder = recorder or DynamicsRecorder(tmp_path / "store", task="tiny", **recorder_kwargs)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[recorder, *callbacks], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True))
    return recorder, Store(tmp_path / "store")


def rows_of(seen, name_values):
    """A reference frame: one row per presentation of every recorded step."""
    frames = []
    for step in seen:
        values = name_values(step)
        frames.append(pd.DataFrame({
            "epoch": step["epoch"], "step": step["step"], "sample_id": step["sample_id"].numpy(),
            **{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in values.items()},
        }))
    return pd.concat(frames, ignore_index=True)


def recorded(store, run_id):
    return dynamics(store, run_id).set_index(["epoch", "step", "sample_id"]).sort_index()


def assert_columns(got, expected, names):
    expected = expected.set_index(["epoch", "step", "sample_id"]).sort_index()
    assert got.index.equals(expected.index)
    for name in names:
        a, b = got[name].to_numpy(), expected[name].to_numpy()
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a.astype(np.float64), b, rtol=2e-5, atol=2e-6, err_msg=name)
        else:
            assert a.tolist() == b.tolist(), name


# -- classification -----------------------------------------------------------------------

def classification_data(y=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_SAMPLES, 6)).astype(np.float32)
    if y is None:
        y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    return DictData(x, y)


def classify(module, batch):
    logits = module.model(batch["x"])
    return {"loss": F.cross_entropy(logits, batch["y"]), "logits": logits}


def classification_reference(step):
    logits, y = step["logits"].double(), step["y"]
    probs = logits.softmax(1)
    onehot = F.one_hot(y, logits.shape[1]).double()
    assigned = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(onehot.bool(), -math.inf).max(1).values
    pred = logits.argmax(1)
    return {
        "label": y, "loss": -logits.log_softmax(1).gather(1, y[:, None]).squeeze(1),
        "p_true": probs.gather(1, y[:, None]).squeeze(1), "el2n": (probs - onehot).norm(dim=1),
        "correct": pred == y, "pred": pred, "margin": assigned - others,
    }


def test_classification_rows_equal_a_plain_pytorch_recomputation(tmp_path):
    torch.manual_seed(0)
    module = Returning(torch.nn.Linear(6, 4), classify)
    recorder, store = fit(tmp_path, module, classification_data(), chunk_rows=5)  # chunks split batches
    got = recorded(store, recorder.run_id)
    expected = rows_of(module.seen, classification_reference)
    assert len(got) == 2 * NUM_SAMPLES
    assert_columns(got, expected, ["label", "loss", "p_true", "el2n", "correct", "pred", "margin"])
    assert (got["weight"] == 1.0).all() and got["token_count"].isna().all() and got["token_accuracy"].isna().all()
    assert store.run_info(recorder.run_id)["output_kind"] == "classification"
    metrics = epoch_metrics(store, recorder.run_id).set_index("epoch")
    per_epoch = expected.groupby("epoch")
    np.testing.assert_allclose(metrics["train_loss"], per_epoch["loss"].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["train_accuracy"], per_epoch["correct"].mean())


# -- sequences ----------------------------------------------------------------------------

VOCAB, LENGTH = 11, 7


class CausalLM(torch.nn.Module):
    """Each position sees the mean embedding of the tokens up to it (causal)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.head = torch.nn.Linear(16, VOCAB)

    def forward(self, tokens):
        h = self.embed(tokens).cumsum(1) / torch.arange(1, tokens.shape[1] + 1)[None, :, None]
        return self.head(torch.tanh(h))


def sequence_data():
    """Inputs and next-token targets; padding (-100) after each sequence's length; the
    sample with length 1 has its only target masked by the loss mask: no counted token."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, size=(NUM_SAMPLES, LENGTH + 1))
    lengths = rng.integers(1, LENGTH + 1, size=NUM_SAMPLES)
    lengths[[3, 20]] = 1
    x, y = tokens[:, :-1].copy(), tokens[:, 1:].copy()
    for i, n in enumerate(lengths):
        x[i, n:] = 0
        y[i, n:] = -100
    return DictData(x, y)


def language_model(module, batch):
    logits = module.model(batch["x"])
    mask = torch.ones_like(batch["y"], dtype=torch.bool)
    mask[:, 0] = False  # the first target is a "prompt" token: not trained on
    token_loss = F.cross_entropy(logits.transpose(1, 2), batch["y"], reduction="none")  # 0 where -100
    counted = mask & (batch["y"] != -100)
    loss = (token_loss * counted).sum() / counted.sum().clamp_min(1)
    return {"loss": loss, "logits": logits, "loss_mask": mask}


def sequence_reference(step):
    logits, y, mask = step["logits"].double(), step["y"], step["loss_mask"]
    rows = {name: [] for name in ("loss", "p_true", "el2n", "margin", "token_count", "token_accuracy", "correct")}
    for seq_logits, seq_y, seq_mask in zip(logits, y, mask):
        keep = (seq_y != -100) & seq_mask
        z, t = seq_logits[keep], seq_y[keep]
        n = len(t)
        rows["token_count"].append(n)
        if n == 0:
            for name in ("loss", "p_true", "el2n", "margin", "token_accuracy"):
                rows[name].append(math.nan)
            rows["correct"].append(None)
            continue
        probs = z.softmax(1)
        onehot = F.one_hot(t, VOCAB).double()
        assigned = z.gather(1, t[:, None]).squeeze(1)
        accuracy = (z.argmax(1) == t).double().mean().item()
        rows["loss"].append((-z.log_softmax(1).gather(1, t[:, None]).squeeze(1)).mean().item())
        rows["p_true"].append(probs.gather(1, t[:, None]).mean().item())
        rows["el2n"].append((probs - onehot).norm(dim=1).mean().item())
        rows["margin"].append((assigned - z.masked_fill(onehot.bool(), -math.inf).max(1).values).mean().item())
        rows["token_accuracy"].append(accuracy)
        rows["correct"].append(accuracy >= SEQUENCE_CORRECT_THRESHOLD)
    return {name: np.asarray(values, dtype=object if name == "correct" else None) for name, values in rows.items()}


def test_sequence_rows_equal_a_plain_pytorch_recomputation_with_padding_and_a_loss_mask(tmp_path):
    torch.manual_seed(0)
    module = Returning(CausalLM(), language_model)
    data = sequence_data()
    recorder, store = fit(tmp_path, module, data)
    got = recorded(store, recorder.run_id)
    no_token = int((data.y[:, 1:] == -100).all(1).sum())  # only the masked first target
    assert no_token >= 2
    expected = rows_of(module.seen, sequence_reference)
    assert len(got) == 2 * NUM_SAMPLES
    assert_columns(got, expected, ["token_count", "loss", "p_true", "el2n", "margin", "token_accuracy"])
    # "correct" is token accuracy >= the threshold; null where no token counted
    want = expected.set_index(["epoch", "step", "sample_id"]).sort_index()["correct"]
    assert [None if pd.isna(v) else bool(v) for v in got["correct"]] == want.tolist()
    assert want.isna().sum() == 2 * no_token and want.notna().any()
    empty = got[got["token_count"] == 0]
    assert len(empty) == 2 * no_token and empty[["loss", "p_true", "el2n", "token_accuracy"]].isna().all().all()
    assert got["label"].isna().all() and got["pred"].isna().all()
    assert store.run_info(recorder.run_id)["output_kind"] == "sequence"
    assert store.run_info(recorder.run_id)["sequence_correct_threshold"] == 0.5  # the dashboard states it
    # the epoch's train loss: the mean over the sequences that have counted tokens
    scored = expected[expected["token_count"] > 0].groupby("epoch")
    metrics = epoch_metrics(store, recorder.run_id).set_index("epoch")
    np.testing.assert_allclose(metrics["train_loss"], scored["loss"].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["train_accuracy"], scored["correct"].apply(lambda c: np.mean(list(c))))


# -- any loss: per_sample_loss ------------------------------------------------------------

def regression_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(NUM_SAMPLES, 3)).astype(np.float32)
    y = np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], axis=1).astype(np.float32)
    return DictData(x, y)


def mse(module, batch):
    per_sample = F.mse_loss(module.model(batch["x"]), batch["y"], reduction="none").mean(1)
    return {"loss": per_sample.mean(), "per_sample_loss": per_sample, "prediction": module.model(batch["x"])}


def test_per_sample_loss_rows_record_the_loss_and_leave_the_rest_null(tmp_path):
    torch.manual_seed(0)
    module = Returning(torch.nn.Linear(3, 2), mse)
    recorder, store = fit(tmp_path, module, regression_data())
    got = recorded(store, recorder.run_id)
    expected = rows_of(module.seen, lambda s: {"loss": ((s["prediction"] - s["y"]) ** 2).double().mean(1)})
    assert len(got) == 2 * NUM_SAMPLES
    assert_columns(got, expected, ["loss"])
    for name in ("label", "p_true", "el2n", "correct", "pred", "margin", "token_count", "token_accuracy"):
        assert got[name].isna().all(), name
    assert store.run_info(recorder.run_id)["output_kind"] == "loss"
    metrics = epoch_metrics(store, recorder.run_id).set_index("epoch")
    np.testing.assert_allclose(metrics["train_loss"], expected.groupby("epoch")["loss"].mean(), rtol=1e-6)
    assert metrics["train_accuracy"].isna().all()
    info = store.run_info(recorder.run_id)
    assert info["status"] == "finished" and info["final_train_accuracy"] is None


# -- refused at the first batch -----------------------------------------------------------

def _with(outputs):
    return lambda module, batch: outputs(module, batch, module.model(batch["x"]))


REFUSALS = {
    "float targets": (
        classification_data(y=np.resize(np.linspace(0.01, 0.98, BATCH), NUM_SAMPLES).astype(np.float32)),
        _with(lambda m, b, z: {"loss": z.sum(), "logits": z}),
        r"logits are float32 \[8, 4\] and targets are float32 \[8\] in \[0\.01, 0\.98\]: for regression, "
        r"multi-label or soft-target losses return 'per_sample_loss' \[8\]",
    ),
    "1-d logits": (
        classification_data(), _with(lambda m, b, z: {"loss": z.sum(), "logits": z[:, 0]}),
        r"logits are float32 \[8\] and targets are int64 \[8\]: one logit per sample \(binary BCE\?\) .*"
        r"return 'per_sample_loss' \[8\]",
    ),
    "sequence logits with one target per sample": (
        classification_data(), _with(lambda m, b, z: {"loss": z.sum(), "logits": z[:, None, :].expand(-1, 5, -1)}),
        r"logits are float32 \[8, 5, 4\] and targets are int64 \[8\]: sequence logits \[B, T, V\] need token "
        r"targets \[B, T\] = \[8, 5\]",
    ),
    "neither logits nor per_sample_loss": (
        classification_data(), _with(lambda m, b, z: {"loss": z.sum()}),
        r"training_step returned keys \['loss'\]; expected training_step to return \{'loss', 'logits'\}",
    ),
    "per_sample_loss of the wrong length": (
        classification_data(), _with(lambda m, b, z: {"loss": z.sum(), "per_sample_loss": z.sum(1)[:4]}),
        r"per_sample_loss is float32 \[4\] for a batch of 8 samples: return one floating loss per sample, shape \[8\]",
    ),
    "labels out of range": (
        classification_data(y=np.arange(NUM_SAMPLES) % 5), _with(lambda m, b, z: {"loss": z.sum(), "logits": z}),
        r"targets are int64 \[8\] in \[0, 4\]; classification targets must be in \[0, 4\)",
    ),
    "NaN loss": (
        classification_data(), _with(lambda m, b, z: {"loss": z.sum(), "logits": z * math.nan}),
        r"the per-sample loss is not finite \(NaN or inf\) for 8 of 8 samples at the first training batch",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_outputs_it_cannot_read_are_refused_at_the_first_batch_and_the_run_fails(tmp_path, case):
    data, outputs, message = REFUSALS[case]
    torch.manual_seed(0)
    module = Returning(torch.nn.Linear(6, 4), outputs)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny")
    with pytest.raises(ValueError, match="^DynamicsRecorder: " + message):
        trainer = L.Trainer(
            max_epochs=2, accelerator="cpu", devices=1, callbacks=[recorder], logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=BATCH))
    assert len(module.seen) == 1  # the first batch
    store = Store(tmp_path / "store")
    info = store.run_info(recorder.run_id)
    assert info["status"] == "failed" and info["epochs_done"] == 0
    assert info["error"].startswith("ValueError: DynamicsRecorder: ") and "\n" not in info["error"]
    assert store.table_files(recorder.run_id, "presentations") == [] and dynamics(store, recorder.run_id).empty
    assert "output_kind" not in info


def test_an_epoch_that_recorded_nothing_fails_the_run_at_its_end(tmp_path):
    def first_epoch_only(module, batch):
        return classify(module, batch) if module.current_epoch == 0 else None  # Lightning skips the batch

    torch.manual_seed(0)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny")
    with pytest.raises(RuntimeError, match="epoch 1 recorded no presentations"):
        fit(tmp_path, Returning(torch.nn.Linear(6, 4), first_epoch_only), classification_data(), recorder=recorder)
    store = Store(tmp_path / "store")
    info = store.run_info(recorder.run_id)
    assert info["status"] == "failed" and "epoch 1 recorded no presentations" in info["error"]
    assert len(dynamics(store, recorder.run_id)) == NUM_SAMPLES  # epoch 0 is kept


# -- bounded memory: at most one chunk held; chunks written while the epoch trains --------

class ChunkProbe(L.Callback):
    """After the recorder's hooks (registered after it): the rows it holds after every
    batch, and the presentations segments of the epoch that a reader sees by then."""

    def __init__(self, recorder):
        self.recorder, self.after_batch, self.at_epoch_end = recorder, [], []

    def _segments(self, trainer):
        self.recorder.drain()  # what the writer was handed is on disk
        folder = self.recorder.store.run_dir(self.recorder.run_id) / "presentations"
        return len(list(folder.glob(f"part-r00-e{trainer.current_epoch:06d}-c*.parquet")))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_batch.append((trainer.current_epoch, self.recorder.buffered_rows, self._segments(trainer)))

    def on_train_epoch_end(self, trainer, pl_module):
        self.at_epoch_end.append(self._segments(trainer))


@pytest.mark.parametrize("chunk_rows", [5, 8, 64])
def test_the_recorder_holds_at_most_one_chunk_and_writes_each_chunk_before_the_epoch_ends(tmp_path, chunk_rows):
    torch.manual_seed(0)
    recorder = DynamicsRecorder(tmp_path / "store", task="tiny", chunk_rows=chunk_rows)
    probe = ChunkProbe(recorder)
    module = Returning(torch.nn.Linear(6, 4), classify)
    fit(tmp_path, module, classification_data(), epochs=3, recorder=recorder, callbacks=[probe])
    sizes = [min(BATCH, NUM_SAMPLES - k * BATCH) for k in range(math.ceil(NUM_SAMPLES / BATCH))]
    seen_rows = np.cumsum(sizes)
    expected = [(epoch, int(rows % chunk_rows), int(rows // chunk_rows)) for epoch in range(3) for rows in seen_rows]
    # the last batch of an epoch: its rest is sent at the epoch end, not before
    assert probe.after_batch == expected
    assert max(held for _, held, _ in probe.after_batch) < chunk_rows
    assert probe.at_epoch_end == [math.ceil(NUM_SAMPLES / chunk_rows)] * 3
    rows = dynamics(Store(tmp_path / "store"), recorder.run_id)
    assert rows.groupby("epoch").size().to_dict() == {0: NUM_SAMPLES, 1: NUM_SAMPLES, 2: NUM_SAMPLES}


@pytest.mark.parametrize("chunk_rows", [0, -1, 2.5, True])
def test_chunk_rows_must_be_a_positive_integer(tmp_path, chunk_rows):
    with pytest.raises(ValueError, match="chunk_rows must be a positive integer"):
        DynamicsRecorder(tmp_path / "store", chunk_rows=chunk_rows)


# -- no host synchronisation per step -----------------------------------------------------

#: Tensor methods that wait for the device (a copy to the host, a value read by Python).
SYNCS = {"item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero", "nonzero_static"}


class SyncSpy(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        boolean_index = name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in (args[1:2] if len(args) > 1 else ())
        )
        to_host = name == "to" and args[0].device.type != "cpu" and any(str(a) == "cpu" for a in args[1:])
        if name in SYNCS or boolean_index or to_host:
            self.syncs.append(name)
        return func(*args, **kwargs)


class SpiedRecorder(DynamicsRecorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.per_batch = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        chunks = self.recorder.chunks_sent
        with SyncSpy() as spy:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.per_batch.append((spy.syncs, self.recorder.chunks_sent - chunks))


@pytest.mark.parametrize("kind", ["classification", "sequence", "loss"])
def test_no_host_sync_per_step_only_one_copy_per_chunk(tmp_path, kind):
    model, outputs, data = {
        "classification": (torch.nn.Linear(6, 4), classify, classification_data()),
        "sequence": (CausalLM(), language_model, sequence_data()),
        "loss": (torch.nn.Linear(3, 2), mse, regression_data()),
    }[kind]
    recorder = SpiedRecorder(tmp_path / "store", task="tiny", chunk_rows=12)
    fit(tmp_path, Returning(model, outputs), data, recorder=recorder)
    first, *later = recorder.per_batch
    assert first[0]  # the first batch reads the targets' range and checks the loss: syncs, once
    assert sum(chunks for _, chunks in later) > 3
    for syncs, chunks in later:
        assert syncs == ["cpu", "numpy"] * chunks  # one device-to-host copy per full chunk, nothing else


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_per_step_on_a_gpu(tmp_path):
    class Guarded(DynamicsRecorder):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            chunk_ends = self.buffered_rows + len(batch["sample_id"]) >= self.chunk_rows
            guard = self.output_kind is not None and not chunk_ends
            torch.cuda.set_sync_debug_mode("error" if guard else "default")
            try:
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            finally:
                torch.cuda.set_sync_debug_mode("default")

    recorder = Guarded(tmp_path / "store", task="tiny", chunk_rows=20)
    trainer = L.Trainer(
        max_epochs=2, accelerator="gpu", devices=1, callbacks=[recorder], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    torch.manual_seed(0)
    trainer.fit(Returning(torch.nn.Linear(6, 4), classify),
                torch.utils.data.DataLoader(classification_data(), batch_size=BATCH))
    assert len(dynamics(Store(tmp_path / "store"), recorder.run_id)) == 2 * NUM_SAMPLES
