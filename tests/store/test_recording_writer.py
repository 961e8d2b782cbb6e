"""RunWriter (store.recording.writer), in this process: each message type reaches its named
method, and what each method writes and when."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from store import Store, StoreError
from store.queries import epoch_metrics
from store.recording.messages import (
    Close,
    Configure,
    EpochTotals,
    Flush,
    RecordEpoch,
    RecordPresentations,
    RecordValidation,
    SpoolFile,
    StepBuffers,
    Sync,
    WriteSegment,
)
from store.recording.writer import HANDLERS, RunWriter

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def writer_for(tmp_path, flush_secs: float = 3600) -> RunWriter:
    store = Store(tmp_path / "store", create=True)
    run_id = store.create_run(name="w", task="custom", model="m", seed=0, config={})
    return RunWriter(Configure(
        store_path=str(store.root), run_id=run_id, layers=("fc1", "fc2"), layer_owner=np.array([0, 0, 1]),
        flush_secs=flush_secs,
    ))


def chunk(epoch: int = 0, chunk: int = 0, rank: int = 0) -> RecordPresentations:
    return RecordPresentations(epoch=epoch, rank=rank, chunk=chunk, columns={
        "step": np.array([2 * epoch, 2 * epoch, 2 * epoch + 1, 2 * epoch + 1]), "sample_id": np.array([10, 11, 12, 13]),
        "label": np.array([0, 0, 1, 1], np.int32), "loss": np.array([0.1, 1.3, 1.3, 0.05], np.float32),
        "correct": np.array([True, False, False, True]),
    })


def epoch(epoch: int = 0, **fields) -> RecordEpoch:
    steps = StepBuffers(
        step_numbers=[2 * epoch, 2 * epoch + 1], step_losses=np.array([0.5, 0.25], dtype=np.float32),
        grad_norm_steps=[2 * epoch], parameter_norms=np.array([[3.0, 4.0, 12.0]]),
        lr_steps=[2 * epoch, 2 * epoch + 1], lrs=[0.1, 0.05],
    )
    values = {"epoch": epoch, "steps": steps, "totals": EpochTotals(2.75, 2.0, 4.0), "time": NOW, **fields}
    return RecordEpoch(**values)


def parts(writer: RunWriter, table: str) -> list[str]:
    return sorted(path.name for path in writer.store.run_dir(writer.run_id).joinpath(table).glob("part-*.parquet"))


def test_each_writer_message_has_its_named_method_and_control_messages_none():
    assert {cls: method.__name__ for cls, method in HANDLERS.items()} == {
        RecordPresentations: "record_presentations",
        RecordEpoch: "record_epoch",
        RecordValidation: "record_validation",
        WriteSegment: "write_segment",
        Flush: "flush",
    }
    assert all(getattr(RunWriter, method.__name__) is method for method in HANDLERS.values())
    assert not {Configure, Sync, Close, SpoolFile} & set(HANDLERS)


def test_handle_runs_the_method_of_the_messages_type(tmp_path, monkeypatch):
    writer = writer_for(tmp_path)
    called = []
    for cls, method in HANDLERS.items():
        monkeypatch.setitem(HANDLERS, cls, lambda self, message, name=method.__name__: called.append((name, message)))
    examples = [chunk(), epoch(), RecordValidation(0, NOW, 1.0, 1, 2), WriteSegment("grand", "p", {}), Flush()]
    for message in examples:
        writer.handle(message)
    names = ["record_presentations", "record_epoch", "record_validation", "write_segment", "flush"]
    assert called == list(zip(names, examples))


def test_a_message_without_a_handler_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="no handler for Sync"):
        writer_for(tmp_path).handle(Sync())


def test_each_chunk_is_written_at_once_as_its_own_segment(tmp_path):
    writer = writer_for(tmp_path, flush_secs=3600)
    writer.handle(chunk(0, 0))
    assert parts(writer, "presentations") == ["part-r00-e000000-c00000.parquet"]
    writer.handle(chunk(0, 1, rank=1))
    writer.handle(chunk(1, 0))
    assert parts(writer, "presentations") == [
        "part-r00-e000000-c00000.parquet", "part-r00-e000001-c00000.parquet", "part-r01-e000000-c00001.parquet",
    ]
    table = pq.read_table(writer.store.run_dir(writer.run_id) / "presentations" / "part-r01-e000000-c00001.parquet")
    assert table.column("sample_id").to_pylist() == [10, 11, 12, 13]
    assert table.column("step").to_pylist() == [0, 0, 1, 1] and table.column("rank").to_pylist() == [1] * 4
    assert table.column("correct").to_pylist() == [True, False, False, True]
    assert table.column("weight").to_pylist() == [1.0] * 4
    assert table.column("p_true").null_count == 4  # not in the chunk: null
    assert parts(writer, "steps") == []  # presentations do not wait for a flush


def test_an_epoch_queues_the_small_tables_until_a_flush(tmp_path):
    writer = writer_for(tmp_path, flush_secs=3600)
    writer.handle(epoch(0, val_loss=0.5, val_accuracy=0.75, best_val_accuracy=0.75))
    class_sums = np.array([[1.0, 2.0], [2.0, 2.0]])
    writer.handle(RecordValidation(0, NOW, loss_sum=1.5, correct_sum=3, count=4, class_sums=class_sums))
    # a second validation dataloader: its own rows, not pooled into the first's
    writer.handle(RecordValidation(0, NOW, 9.0, 1, 4, class_sums=np.array([[0.0, 1.0], [2.0, 2.0]]), dataloader_idx=1))
    assert parts(writer, "steps") == [] and writer.store.run_info(writer.run_id)["epochs_done"] == 0

    writer.handle(Flush())
    name = "part-e000000-e000000-f00000.parquet"
    assert [parts(writer, t) for t in ("steps", "layer_grad_norms", "epochs", "val_classes")] == [[name]] * 4
    run_dir = writer.store.run_dir(writer.run_id)
    steps = pq.read_table(run_dir / "steps" / name).to_pydict()
    assert steps["grad_norm"] == [13.0, None]  # sqrt(3^2 + 4^2 + 12^2) at the sampled step, null after
    assert steps["lr"] == [0.1, 0.05] and steps["loss"] == [0.5, 0.25]
    layers = pq.read_table(run_dir / "layer_grad_norms" / name).to_pydict()
    assert layers == {"step": [0, 0], "layer": ["fc1", "fc2"], "grad_norm": [5.0, 12.0]}
    classes = pq.read_table(run_dir / "val_classes" / name).to_pydict()
    assert classes["correct_sum"] == [1, 2, 0, 1] and classes["num_samples"] == [2, 2, 2, 2]
    assert classes["dataloader_idx"] == [0, 0, 1, 1]
    epochs = pq.read_table(run_dir / "epochs" / name).to_pydict()
    assert list(zip(epochs["split"], epochs["dataloader_idx"], epochs["loss_sum"])) == [
        ("train", None, 2.75), ("val", 0, 1.5), ("val", 1, 9.0)]
    assert epoch_metrics(writer.store, writer.run_id, dataloader_idx=1).loc[0, "val_accuracy"] == 0.25
    metrics = epoch_metrics(writer.store, writer.run_id)
    assert metrics.loc[0, "train_accuracy"] == 0.5 and metrics.loc[0, "train_loss"] == pytest.approx(2.75 / 4)
    assert metrics.loc[0, "val_loss"] == pytest.approx(1.5 / 4)
    info = writer.store.run_info(writer.run_id)
    progress = ("epochs_done", "final_train_loss", "final_train_accuracy", "final_val_accuracy", "best_val_accuracy")
    assert [info[key] for key in progress] == [1, 2.75 / 4, 0.5, 0.75, 0.75]
    writer.handle(Flush())  # nothing queued: no new files
    assert parts(writer, "steps") == [name]


def test_an_epoch_without_a_notion_of_correct_has_no_train_accuracy(tmp_path):
    writer = writer_for(tmp_path, flush_secs=0)
    writer.handle(epoch(0, totals=EpochTotals(loss_sum=8.0, correct_sum=None, count=8.0)))
    info = writer.store.run_info(writer.run_id)
    assert (info["final_train_loss"], info["final_train_accuracy"]) == (1.0, None)
    metrics = epoch_metrics(writer.store, writer.run_id)
    assert metrics.loc[0, "train_loss"] == 1.0 and pd.isna(metrics.loc[0, "train_accuracy"])


def test_with_flush_secs_zero_every_epoch_writes_its_small_tables(tmp_path):
    writer = writer_for(tmp_path, flush_secs=0)
    writer.handle(epoch(0))
    writer.handle(epoch(1))
    assert parts(writer, "steps") == ["part-e000000-e000000-f00000.parquet", "part-e000001-e000001-f00001.parquet"]
    assert writer.store.run_info(writer.run_id)["epochs_done"] == 2


def test_write_segment_writes_its_columns_at_once(tmp_path):
    writer = writer_for(tmp_path)
    columns = {"epoch": np.zeros(2, np.int32), "step": np.array([3, 3]), "sample_id": np.array([10, 11]),
               "grand": np.array([0.5, 1.5], np.float32), "rank": np.zeros(2, np.int16)}
    writer.handle(WriteSegment("grand", "r00-e000000", columns))
    table = pq.read_table(writer.store.run_dir(writer.run_id) / "grand" / "part-r00-e000000.parquet")
    assert table.column("grand").to_pylist() == [0.5, 1.5] and table.schema.field("rank").type == "int16"


@pytest.mark.parametrize(
    "status, pid, failed", [("running", 4242, True), ("running", 1, False), ("finished", 4242, False)]
)
def test_a_run_abandoned_by_its_process_is_marked_failed(tmp_path, status, pid, failed):
    writer = writer_for(tmp_path, flush_secs=0)
    writer.handle(epoch(0))
    writer.store.update_run(writer.run_id, status=status, pid=pid)
    writer.abandoned_by(4242)
    info = writer.store.run_info(writer.run_id)
    assert (info["status"] == "failed") == failed
    if failed:
        assert info["error"] == (
            "the training process (pid 4242) ended without finishing the run (killed, or out of memory?); "
            "the 1 epoch(s) it recorded are kept"
        )
