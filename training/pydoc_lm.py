"""The ``pydoc-lm`` task: next-byte prediction on the help text every CPython ships.

The text is ``pydoc_data.topics.topics`` (topic name -> the help text ``help("for")``
prints), so nothing is downloaded and every install has it. Its exact content follows the
Python version.

* **Sequences.** Each topic's text is UTF-8 encoded and cut into consecutive, non-overlapping
  windows of ``sequence_length`` bytes; a window's targets are the next bytes
  (``y[t] = x[t + 1]``), the last target of a window being the first byte of the next
  window. A topic of ``L`` bytes gives ``ceil((L - 1) / T)`` sequences; the last one is
  padded with byte 0 in ``x`` and ``IGNORE_INDEX`` (-100) in ``y``. A sequence never spans
  two topics, so each sequence has one topic and one group.
* **Validation split: by topic.** Whole topics are held out, so the validation text is help
  text the model never trained on: the validation loss measures how well the model predicts
  unseen documents of the same kind, not how well it remembers the neighbouring windows of a
  page it trained on (a split by sequence would put the windows of one page on both sides).
  The split is stratified by group so every group is validated on: within each group, the
  topics are taken in the order of a permutation seeded by ``SPLIT_SEED``; a topic goes to
  validation while the group's validation bytes are below ``VAL_FRACTION`` of the group's
  bytes, unless it alone would take them past twice that (then the next one is tried).
* **Groups** (``topic_kind``): the kind of help a topic is, from its name alone; first
  matching rule wins:

  ============  =======================================================================
  expressions   the name starts with ``atom-`` or is one of ``EXPRESSION_TOPICS`` (the
                Language Reference's chapter on expressions: operators, displays, calls)
  statements    the name is a Python keyword (``keyword.iskeyword``: ``for``, ``with``)
                or one of ``STATEMENT_TOPICS`` (assignment, compound statements, ``def``)
  types         the name starts with ``types`` or ``bltin-`` or ends with ``-methods``
                (the built-in types and their methods)
  data-model    the name starts with ``special`` or ends with ``-types`` or is one of
                ``DATA_MODEL_TOPICS`` (special methods that customise or emulate types)
  other         everything else (literals and identifiers, the execution model, the
                debugger, format strings)
  ============  =======================================================================
"""

from __future__ import annotations

import functools
import keyword
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from store.settings import DATASET_ENCODING_KEY

#: Target value of padding positions (``torch.nn.functional.cross_entropy``'s default).
IGNORE_INDEX = -100
#: Bytes: the vocabulary of a byte-level model.
VOCAB_SIZE = 256
SEQUENCE_LENGTH = 128
VAL_FRACTION = 0.1
SPLIT_SEED = 0

GROUPS = ("statements", "expressions", "types", "data-model", "other")
EXPRESSION_TOPICS = frozenset({
    "attribute-references", "await", "binary", "bitwise", "booleans", "calls", "comparisons",
    "conversions", "dict", "exprlists", "in", "lambda", "lists", "operator-summary", "power",
    "shifting", "slicings", "subscriptions", "unary",
})
STATEMENT_TOPICS = frozenset({"assignment", "augassign", "compound", "function"})
DATA_MODEL_TOPICS = frozenset({"attribute-access", "context-managers", "customization"})

#: Schema metadata of the task's dataset file (``<store>/datasets/pydoc-lm.parquet``): its
#: ``x`` holds byte values, which the dashboard shows as UTF-8 text (one home for the key:
#: ``store.settings``).
DATASET_ENCODING = b"utf-8"


def topic_kind(name: str) -> str:
    """The group of a help topic, from its name alone (the rules in the module docstring)."""
    if name.startswith("atom-") or name in EXPRESSION_TOPICS:
        return "expressions"
    if keyword.iskeyword(name) or name in STATEMENT_TOPICS:
        return "statements"
    if name.startswith(("types", "bltin-")) or name.endswith("-methods"):
        return "types"
    if name.startswith("special") or name.endswith("-types") or name in DATA_MODEL_TOPICS:
        return "data-model"
    return "other"


def byte_sequences(text: bytes, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One document's inputs and next-byte targets, int64 ``[ceil((len - 1) / T), T]``;
    the last sequence is padded (byte 0 in x, ``IGNORE_INDEX`` in y). A text of fewer than
    two bytes has nothing to predict and gives no sequence."""
    if sequence_length < 1:
        raise ValueError(f"sequence length must be a positive integer, got {sequence_length}")
    data = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    count = max(math.ceil((len(data) - 1) / sequence_length), 0)
    x = np.zeros((count, sequence_length), dtype=np.int64)
    y = np.full((count, sequence_length), IGNORE_INDEX, dtype=np.int64)
    inputs, targets = data[:-1], data[1:]
    x.reshape(-1)[: len(inputs)] = inputs
    y.reshape(-1)[: len(targets)] = targets
    return x, y


@dataclass(frozen=True)
class TextSequences:
    """Fixed-length byte sequences of some topics: ``x``, ``y`` int64 ``[N, T]``; per
    sequence its topic, its group (``topic_kind``) and ``text``, the bytes it covers
    (its inputs and its last target: what the dashboard shows)."""

    x: np.ndarray
    y: np.ndarray
    topics: tuple[str, ...]
    groups: tuple[str, ...]
    text: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.x)


def text_sequences(documents: dict[str, bytes], sequence_length: int) -> TextSequences:
    """The sequences of ``documents`` (name -> bytes), in the order of the sorted names."""
    xs, ys, topics, texts = [], [], [], []
    for name in sorted(documents):
        text = documents[name]
        x, y = byte_sequences(text, sequence_length)
        xs.append(x)
        ys.append(y)
        topics += [name] * len(x)
        texts += [text[i * sequence_length: (i + 1) * sequence_length + 1] for i in range(len(x))]
    empty = np.zeros((0, sequence_length), dtype=np.int64)
    return TextSequences(
        x=np.concatenate(xs) if xs else empty,
        y=np.concatenate(ys) if ys else empty,
        topics=tuple(topics),
        groups=tuple(topic_kind(name) for name in topics),
        text=tuple(texts),
    )


def split_topics(sizes: dict[str, int], val_fraction: float = VAL_FRACTION,
                 seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """(train, validation) topic names, sorted: whole topics held out per group (the rule in
    the module docstring), from ``sizes`` (topic name -> bytes)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    validation: list[str] = []
    for group in GROUPS:
        names = sorted(name for name in sizes if topic_kind(name) == group)
        target = val_fraction * sum(sizes[name] for name in names)
        taken = 0
        for position in rng.permutation(len(names)):
            name = names[int(position)]
            if taken >= target:
                break
            if taken + sizes[name] <= 2 * target:
                validation.append(name)
                taken += sizes[name]
    held_out = set(validation)
    return sorted(name for name in sizes if name not in held_out), sorted(held_out)


@dataclass(frozen=True)
class PydocLM:
    """The task's data: training and validation sequences and its tuned settings."""

    train: TextSequences
    val: TextSequences
    sequence_length: int
    vocab_size: int = VOCAB_SIZE
    default_lr: float = 6e-3
    default_batch_size: int = 16
    name: str = "pydoc-lm"


def pydoc_documents() -> dict[str, bytes]:
    """The help topics of this Python as UTF-8 bytes (``pydoc_data.topics.topics``)."""
    from pydoc_data.topics import topics

    return {name: text.encode("utf-8") for name, text in topics.items()}


@functools.lru_cache(maxsize=None)
def load_pydoc_lm(sequence_length: int = SEQUENCE_LENGTH) -> PydocLM:
    """The task's sequences, split by topic (cached per process)."""
    documents = pydoc_documents()
    train_names, val_names = split_topics({name: len(text) for name, text in documents.items()})
    return PydocLM(
        train=text_sequences({name: documents[name] for name in train_names}, sequence_length),
        val=text_sequences({name: documents[name] for name in val_names}, sequence_length),
        sequence_length=sequence_length,
    )


def unigram_bits(train: TextSequences, evaluated: TextSequences | None = None) -> float:
    """The unigram baseline in bits per byte: the cross-entropy of the counted target bytes
    of ``evaluated`` under the byte frequencies of ``train``'s counted targets,
    ``-sum_b q(b) log2 p(b)``. Without ``evaluated`` it is the entropy of the training
    bytes' distribution. ``p`` is add-one smoothed when ``evaluated`` is given (a byte never
    seen in training would otherwise cost infinitely many bits)."""
    train_counts = np.bincount(train.y[train.y != IGNORE_INDEX], minlength=VOCAB_SIZE).astype(np.float64)
    if evaluated is None:
        p = train_counts / train_counts.sum()
        seen = p > 0
        return float(-(p[seen] * np.log2(p[seen])).sum())
    p = (train_counts + 1.0) / (train_counts.sum() + VOCAB_SIZE)
    q = np.bincount(evaluated.y[evaluated.y != IGNORE_INDEX], minlength=VOCAB_SIZE).astype(np.float64)
    return float(-(q * np.log2(p)).sum() / q.sum())


def text_dataset_table(sequences: TextSequences) -> pa.Table:
    """The dataset file of the task's training sequences for the dashboard's sample view:
    ``sample_id`` (the position), ``x`` the bytes each covers (as floats, the dataset
    files' type), ``shape`` ``[bytes]``, marked as UTF-8 in the schema metadata."""
    lengths = [len(text) for text in sequences.text]
    values = np.frombuffer(b"".join(sequences.text), dtype=np.uint8).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    table = pa.table({
        "sample_id": pa.array(np.arange(len(sequences)), pa.int64()),
        "x": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32())),
        "shape": pa.array([[length] for length in lengths], pa.list_(pa.int32())),
    })
    return table.replace_schema_metadata({DATASET_ENCODING_KEY: DATASET_ENCODING})
