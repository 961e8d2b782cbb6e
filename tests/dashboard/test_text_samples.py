"""The run page's sample view shows a text sample (a ``pydoc-lm`` sequence) as its text,
beside its loss trajectory (AppTest)."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard import data, formatting
from store import Store
from training.pydoc_lm import text_dataset_table, text_sequences

from conftest import write_sequence_run
from tests.dashboard.app_pages import app_test, figure_titles, figures, run_clean
from tests.dashboard.test_output_kinds import charts_values

DOCUMENTS = {
    "for": "The “for” statement is used to iterate over the elements of a sequence.".encode(),
    "calls": b"A call calls a callable object (e.g., a function) with a possibly empty series of arguments.",
}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("text") / "store", create=True)
    sequences = text_sequences(DOCUMENTS, 32)
    count, epochs = len(sequences), 3
    rng = np.random.default_rng(5)
    p_true = rng.uniform(0.05, 0.95, size=(count, epochs))
    token_count = np.asarray([int((y != -100).sum()) for y in sequences.y])
    accuracy = rng.integers(0, token_count[:, None] + 1, size=(count, epochs)) / token_count[:, None]
    run_id = write_sequence_run(store, accuracy, token_count, -np.log(p_true), p_true,
                                rng.normal(size=(count, epochs)), finish=True, name="pydoc")
    store.update_run(run_id, task="pydoc-lm")
    store.write_dataset("pydoc-lm", text_dataset_table(sequences))
    return store, run_id, sequences, -np.log(p_true)


def test_the_sample_view_shows_the_sequence_as_text_with_its_loss_trajectory(text_run):
    store, run_id, sequences, loss = text_run
    sample = 2  # sorted topics: "calls" gives sequences 0-2, "for" starts at 3; 2 is calls' last
    at = run_clean(app_test(store, "views/run.py", run=run_id, view="Samples", sample=str(sample)))
    shown = [block.value for block in at.code]
    assert shown == [sequences.text[sample].decode("utf-8")]
    assert any("Text" in m.value and f"{len(sequences.text[sample])} bytes" in m.value for m in at.markdown)
    assert "Input" not in figure_titles(at)  # no line plot of byte values
    trajectory = next(f for f in figures(at) if "Over training" in str(f["layout"].get("title")))
    loss_trace = next(t for t in trajectory["data"] if t.get("name") == "loss")
    np.testing.assert_allclose(charts_values(loss_trace["y"]), loss[sample].astype(np.float32), rtol=1e-6)


def test_a_multibyte_character_cut_at_a_sequence_end_shows_a_replacement_character():
    sequences = text_sequences({"cut": b"a" * 32 + "éé".encode()}, 32)
    first = np.frombuffer(sequences.text[0], dtype=np.uint8).astype(np.float32)  # 32 "a" and half an "é"
    assert formatting.decoded_text(first, "utf-8") == "a" * 32 + "\ufffd"
    second = np.frombuffer(sequences.text[1], dtype=np.uint8).astype(np.float32)
    assert formatting.decoded_text(second, "utf-8") == "éé"  # the next window starts at that byte
    with pytest.raises(ValueError, match=r"byte values in \[0, 255\]"):
        formatting.decoded_text(np.asarray([65.0, 300.0]), "utf-8")


def test_text_encoding_is_read_from_the_dataset_file_only_when_marked(text_run, tmp_path):
    store, _, _, _ = text_run
    root = str(store.root)
    assert data.dataset_text_encoding(root, "pydoc-lm", data.dataset_version(root, "pydoc-lm")) == "utf-8"
    assert data.dataset_text_encoding(root, "mnist1d", 0) is None
