"""The ``pydoc-lm`` data: sequences, next-byte targets, padding, the split by topic, groups,
the unigram baseline and the dataset file the dashboard reads."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from training import pydoc_lm
from training.pydoc_lm import (
    IGNORE_INDEX,
    byte_sequences,
    load_pydoc_lm,
    pydoc_documents,
    split_topics,
    text_dataset_table,
    text_sequences,
    topic_kind,
    unigram_bits,
)

T = pydoc_lm.SEQUENCE_LENGTH


@pytest.fixture(scope="module")
def task():
    return load_pydoc_lm()


@pytest.fixture(scope="module")
def documents():
    return pydoc_documents()


def test_a_short_text_by_hand():
    x, y = byte_sequences(b"abcdefg", 3)  # 6 targets: 2 sequences, none padded
    assert x.tolist() == [[97, 98, 99], [100, 101, 102]]
    assert y.tolist() == [[98, 99, 100], [101, 102, 103]]
    x, y = byte_sequences(b"abcde", 3)  # 4 targets: the second sequence holds one
    assert x.tolist() == [[97, 98, 99], [100, 0, 0]]
    assert y.tolist() == [[98, 99, 100], [101, -100, -100]]
    assert byte_sequences(b"a", 3)[0].shape == (0, 3)


def test_sequence_count_is_ceil_of_targets_per_topic(task, documents):
    held = set(task.val.topics)
    train_docs = {name: text for name, text in documents.items() if name not in held}
    expected = sum(math.ceil((len(text) - 1) / T) for text in train_docs.values())
    assert len(task.train) == expected
    assert task.train.x.shape == task.train.y.shape == (expected, T)
    assert Counter(task.train.topics) == {name: math.ceil((len(t) - 1) / T) for name, t in train_docs.items()}


def test_targets_are_the_next_bytes_and_only_the_last_sequence_of_a_topic_is_padded(task, documents):
    for split in (task.train, task.val):
        topics = np.asarray(split.topics)
        for name in sorted(set(split.topics)):
            rows = np.flatnonzero(topics == name)
            text = np.frombuffer(documents[name], dtype=np.uint8)
            x, y = split.x[rows].reshape(-1), split.y[rows].reshape(-1)
            counted = len(text) - 1
            assert (x[:counted] == text[:-1]).all() and (y[:counted] == text[1:]).all()
            assert (y[counted:] == IGNORE_INDEX).all() and (x[counted:] == 0).all()
            assert len(y) - counted < T  # padding only inside the last sequence


def test_the_stored_text_is_the_inputs_and_the_last_target(task):
    for row in range(0, len(task.train), 97):
        counted = task.train.y[row] != IGNORE_INDEX
        expected = bytes(task.train.x[row][counted].tolist()) + bytes([task.train.y[row][counted][-1]])
        assert task.train.text[row] == expected


def test_validation_holds_whole_topics_disjoint_from_training(task, documents):
    train_topics, val_topics = set(task.train.topics), set(task.val.topics)
    assert not train_topics & val_topics
    assert train_topics | val_topics == set(documents)
    sizes = {name: len(text) for name, text in documents.items()}
    for group in pydoc_lm.GROUPS:
        group_bytes = sum(size for name, size in sizes.items() if topic_kind(name) == group)
        held = sum(sizes[name] for name in val_topics if topic_kind(name) == group)
        assert 0 < held <= 2 * pydoc_lm.VAL_FRACTION * group_bytes, group


def test_the_split_rule_on_sizes_by_hand():
    # One group ("other"), 10 topics of 10 bytes: target 10 % of 100 bytes = one topic.
    sizes = {f"topic{i}": 10 for i in range(10)}
    train, val = split_topics(sizes, 0.1, seed=3)
    assert len(val) == 1 and len(train) == 9
    # A topic alone over twice the target is skipped for the next.
    sizes = {"huge": 1000, **{f"small{i}": 30 for i in range(10)}}  # target 130
    train, val = split_topics(sizes, 0.1, seed=0)
    assert "huge" not in val and 130 <= 30 * len(val) <= 260
    assert split_topics(sizes, 0.1, seed=0) == (train, val)


def test_groups_follow_the_name_rules():
    assert [topic_kind(n) for n in ("for", "with", "else", "assignment", "function")] == ["statements"] * 5
    assert [topic_kind(n) for n in ("in", "lambda", "await", "atom-literals", "calls")] == ["expressions"] * 5
    assert [topic_kind(n) for n in ("typesseq", "bltin-null-object", "string-methods")] == ["types"] * 3
    assert [topic_kind(n) for n in ("specialnames", "numeric-types", "customization")] == ["data-model"] * 3
    assert [topic_kind(n) for n in ("debugger", "strings", "execmodel")] == ["other"] * 3


def test_groups_are_deterministic_and_per_sequence(task):
    again = load_pydoc_lm.__wrapped__()
    assert again.train.groups == task.train.groups and again.val.topics == task.val.topics
    assert task.train.groups == tuple(topic_kind(name) for name in task.train.topics)
    assert set(task.train.groups) == set(pydoc_lm.GROUPS)


def test_unigram_bits_against_a_direct_count(task):
    counts = Counter(task.train.y[task.train.y != IGNORE_INDEX].tolist())
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
    assert unigram_bits(task.train) == pytest.approx(entropy, rel=1e-12)
    val_counts = Counter(task.val.y[task.val.y != IGNORE_INDEX].tolist())
    cross = -sum(c * math.log2((counts.get(b, 0) + 1) / (total + 256)) for b, c in val_counts.items())
    assert unigram_bits(task.train, task.val) == pytest.approx(cross / sum(val_counts.values()), rel=1e-12)
    assert 3.0 < entropy < 8.0  # text, not noise or one repeated byte


def test_dataset_table_holds_each_sequence_text_and_its_encoding():
    sequences = text_sequences({"a": "héllo wörld".encode(), "b": b"xy"}, 4)
    table = text_dataset_table(sequences)
    assert table.column("sample_id").to_pylist() == list(range(len(sequences)))
    assert [bytes(int(v) for v in x) for x in table.column("x").to_pylist()] == list(sequences.text)
    assert table.column("shape").to_pylist() == [[len(t)] for t in sequences.text]
    assert table.schema.metadata[pydoc_lm.DATASET_ENCODING_KEY] == b"utf-8"
    assert b"".join(t[:-1] for t in sequences.text[:-1]) + sequences.text[-2][-1:] == "héllo wörld".encode()
