"""TrainmapCallback (training.hf) on a real transformers.Trainer with a tiny randomly
initialised GPT-2 (no download): one row per sequence per presentation with the values a
plain-PyTorch reference computes from the same model; validation per epoch; the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from store import Store, dynamics, epoch_metrics  # noqa: E402
from store.queries import steps  # noqa: E402
from training.hf import TrainmapCallback  # noqa: E402

VOCAB, LENGTH, SEQUENCES, BATCH, EPOCHS = 24, 12, 20, 4, 2


class Sequences(torch.utils.data.Dataset):
    """Token sequences with a learnable rule (each token is the previous plus one), labels =
    the tokens (the model shifts them), some positions ignored (-100)."""

    def __init__(self, count, offset=0, with_ids=True):
        rng = np.random.default_rng(offset)
        starts = rng.integers(0, VOCAB, size=count)
        self.tokens = (starts[:, None] + np.arange(LENGTH)[None]) % VOCAB
        self.offset, self.with_ids = offset, with_ids

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, index):
        labels = self.tokens[index].tolist()
        if index % 5 == 0:
            labels[-3:] = [-100] * 3
        item = {"input_ids": self.tokens[index].tolist(), "labels": labels}
        if self.with_ids:
            item["sample_id"] = 1000 + self.offset + index
        return item


def tiny_gpt():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=16, n_layer=1, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


def trainer(tmp_path, callback, train, evaluate=None, learning_rate=5e-3):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        num_train_epochs=EPOCHS, learning_rate=learning_rate, remove_unused_columns=False, report_to=[],
        eval_strategy="epoch" if evaluate is not None else "no", save_strategy="no", logging_strategy="no",
        use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    return transformers.Trainer(model=tiny_gpt(), args=args, train_dataset=train, eval_dataset=evaluate,
                                callbacks=[callback])


@pytest.mark.slow
def test_a_transformers_trainer_records_one_row_per_sequence_and_its_validation(tmp_path):
    callback = TrainmapCallback(tmp_path / "store", run_name="hf", task="counting", grad_norm_every_n_steps=1)
    trainer(tmp_path, callback, Sequences(SEQUENCES), Sequences(8, offset=500)).train()
    store = Store(tmp_path / "store")
    run_id = callback.recorder.run_id
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["output_kind"] == "sequence" and info["epochs_done"] == EPOCHS
    rows = dynamics(store, run_id)
    assert len(rows) == EPOCHS * SEQUENCES
    assert sorted(rows[rows["epoch"] == 0]["sample_id"]) == list(range(1000, 1000 + SEQUENCES))
    # next-token targets: LENGTH - 1 per sequence, and 3 fewer where the labels end in -100
    counts = rows.set_index("sample_id")["token_count"].groupby(level=0).first()
    assert counts.to_dict() == {1000 + i: (LENGTH - 4 if i % 5 == 0 else LENGTH - 1) for i in range(SEQUENCES)}
    step_rows = steps(store, run_id).set_index("step")
    assert step_rows["grad_norm"].notna().all() and (step_rows["lr"] > 0).all()
    assert len(step_rows) == EPOCHS * SEQUENCES // BATCH
    metrics = epoch_metrics(store, run_id)
    assert metrics["epoch"].tolist() == list(range(EPOCHS)) and metrics["val_loss"].notna().all()
    assert metrics["val_loss"].iloc[-1] < metrics["val_loss"].iloc[0]  # it learns the counting rule


@pytest.mark.slow
def test_the_sequence_rows_are_a_plain_pytorch_reference_on_the_same_model(tmp_path):
    """With a zero learning rate the model stays as it was: its per-sequence statistics are
    recomputed here with plain PyTorch (next-token cross-entropy, -100 ignored)."""
    callback = TrainmapCallback(tmp_path / "store", task="counting")
    hf = trainer(tmp_path, callback, Sequences(SEQUENCES), learning_rate=0.0)
    hf.train()
    rows = dynamics(Store(tmp_path / "store"), callback.recorder.run_id)
    data = Sequences(SEQUENCES)
    tokens = torch.tensor(data.tokens)
    labels = torch.tensor([data[i]["labels"] for i in range(SEQUENCES)])
    with torch.no_grad():
        logits = hf.model.eval()(input_ids=tokens).logits[:, :-1].double()
    targets = labels[:, 1:]
    counted = targets != -100
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    loss = (token_loss * counted).sum(1) / counted.sum(1)
    accuracy = ((logits.argmax(-1) == targets) & counted).sum(1) / counted.sum(1)
    for epoch in range(EPOCHS):
        got = rows[rows["epoch"] == epoch].set_index("sample_id").sort_index()
        np.testing.assert_allclose(got["loss"], loss.numpy(), rtol=1e-5)
        np.testing.assert_allclose(got["token_accuracy"], accuracy.numpy(), rtol=1e-6)
        assert got["token_count"].tolist() == counted.sum(1).tolist()


@pytest.mark.slow
def test_a_batch_without_sample_ids_fails_the_run_with_what_to_do(tmp_path):
    callback = TrainmapCallback(tmp_path / "store", task="counting")
    with pytest.raises(ValueError, match=r"no 'sample_id'.*remove_unused_columns=False"):
        trainer(tmp_path, callback, Sequences(SEQUENCES, with_ids=False)).train()
    info = Store(tmp_path / "store").run_info(callback.recorder.run_id)
    assert info["status"] == "failed" and "sample_id" in info["error"]
