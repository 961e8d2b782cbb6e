"""Table schemas of a run and the store's schema version.

One module owns the segment layout: the columns and types of every table a run writes.
Writers cast to these schemas, so readers can rely on the types and an empty table
still has its columns.
"""

from __future__ import annotations

import pyarrow as pa

#: Version of the on-disk layout. Bump it and add a step to ``store.migrations``.
SCHEMA_VERSION = 4

#: One row per sample presentation (each time a sample is in a training batch),
#: measured on that batch's forward pass before the update.
PRESENTATIONS = pa.schema(
    [
        ("epoch", pa.int32()),
        ("step", pa.int64()),
        ("sample_id", pa.int64()),
        ("label", pa.int32()),
        ("loss", pa.float32()),
        ("p_true", pa.float32()),
        ("el2n", pa.float32()),
        ("correct", pa.bool_()),
        ("pred", pa.int32()),
        ("margin", pa.float32()),
        ("weight", pa.float32()),
        # Last-layer GraNd approximation EL2N * sqrt(||h||^2 + 1); NaN when not recorded.
        ("grand_last", pa.float32()),
        ("rank", pa.int16()),
        # Sequences (logits [B, T, V]): the tokens that count (ignore_index and the loss mask
        # excluded) and the fraction of them predicted correctly; null for other outputs.
        ("token_count", pa.int32()),
        ("token_accuracy", pa.float32()),
        # The group (domain, skill, source) the batch gave the sample, as an id into the
        # run's ``groups`` table; null when the batch gave none.
        ("group_id", pa.int32()),
    ]
)

#: One row per optimisation step (written by rank 0).
STEPS = pa.schema(
    [
        ("step", pa.int64()),
        ("epoch", pa.int32()),
        ("loss", pa.float32()),
        ("grad_norm", pa.float32()),
        ("lr", pa.float64()),
    ]
)

#: Gradient norm of each parameter-owning layer per optimisation step (rank 0).
LAYER_GRAD_NORMS = pa.schema(
    [
        ("step", pa.int64()),
        ("layer", pa.string()),
        ("grad_norm", pa.float32()),
    ]
)

#: Per epoch and split ("train" / "val"): sums over that rank's samples, so ranks
#: combine exactly (loss = loss_sum / num_samples).
EPOCHS = pa.schema(
    [
        ("epoch", pa.int32()),
        ("split", pa.string()),
        # Which validation dataloader a "val" row is about (0, 1, ...); null for "train".
        ("dataloader_idx", pa.int16()),
        ("loss_sum", pa.float64()),
        ("correct_sum", pa.int64()),
        ("num_samples", pa.int64()),
        ("rank", pa.int16()),
        ("time", pa.timestamp("us", tz="UTC")),
    ]
)

#: Exact per-sample gradient norms (GraNd), on the steps chosen by the schedule.
GRAND = pa.schema(
    [
        ("epoch", pa.int32()),
        ("step", pa.int64()),
        ("sample_id", pa.int64()),
        ("grand", pa.float32()),
        ("rank", pa.int16()),
    ]
)

#: Validation accuracy per class (the label of the validation sample) and epoch: sums
#: over that rank's samples. Since schema version 2; migration ``_v1_to_v2`` gives runs
#: compacted before it an empty table.
VAL_CLASSES = pa.schema(
    [
        ("epoch", pa.int32()),
        ("dataloader_idx", pa.int16()),
        ("label", pa.int32()),
        ("correct_sum", pa.int64()),
        ("num_samples", pa.int64()),
        ("rank", pa.int16()),
    ]
)

#: Static per-sample table: the label trained on and the one before injected noise.
SAMPLES = pa.schema(
    [
        ("sample_id", pa.int64()),
        ("label", pa.int64()),
        ("original_label", pa.int64()),
        ("label_noisy", pa.bool_()),
    ]
)

#: Datasets that identify samples by another key than an integer (a string, a path):
#: each key's stable integer ``sample_id`` (``training`` derives it from the key alone, so
#: every rank and every run of the same data agree).
SAMPLE_KEYS = pa.schema(
    [
        ("sample_id", pa.int64()),
        ("sample_key", pa.string()),
    ]
)

#: The names of the groups a run's batches gave their samples (``presentations.group_id``):
#: one row per group, written when the recorder first meets it. Ids are per run.
GROUPS = pa.schema(
    [
        ("group_id", pa.int32()),
        ("group_name", pa.string()),
    ]
)

#: Tables written as append-only segments while a run trains.
SEGMENT_TABLES: dict[str, pa.Schema] = {
    "presentations": PRESENTATIONS,
    "steps": STEPS,
    "layer_grad_norms": LAYER_GRAD_NORMS,
    "epochs": EPOCHS,
    "grand": GRAND,
    "val_classes": VAL_CLASSES,
    "sample_keys": SAMPLE_KEYS,
    "groups": GROUPS,
}

#: Sort order of each table once a run is compacted (per-sample queries read
#: 1.5-2x faster sorted by sample_id, epoch: DESIGN.md).
COMPACT_ORDER: dict[str, tuple[str, ...]] = {
    "presentations": ("sample_id", "epoch", "step"),
    "steps": ("step",),
    "layer_grad_norms": ("step", "layer"),
    "epochs": ("epoch", "split", "dataloader_idx", "rank"),
    "grand": ("sample_id", "epoch", "step"),
    "val_classes": ("epoch", "dataloader_idx", "label", "rank"),
    "sample_keys": ("sample_id",),
    "groups": ("group_id",),
}

#: Keys that identify one presentation across ranks: DistributedSampler pads ranks with
#: duplicate samples, so where several ranks presented the same (epoch, sample_id) only
#: the lowest rank's rows are kept on read (repeats within one rank are real presentations).
DEDUPLICATE_ON: dict[str, tuple[str, ...]] = {
    "presentations": ("epoch", "sample_id"),
    "grand": ("epoch", "sample_id"),
}


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in its order and types; a column the
    table lacks (one added to the schema after the table was written, or one that does not
    apply, such as ``token_count`` outside sequences) is all null."""
    columns = [
        table[field.name].cast(field.type) if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def select_list(schema: pa.Schema, available: list[str], *, cast: bool = False) -> str:
    """A SQL select list that reads ``schema``'s columns from a source with ``available``
    columns, NULL for the missing ones (older files); with ``cast`` every column is cast to
    its schema type. Identifiers come from the schema module, never from input."""
    def column(field: pa.Field) -> str:
        if field.name not in available:
            return f"CAST(NULL AS {_SQL_TYPES[field.type]}) AS {field.name}"
        if cast:
            return f"CAST({field.name} AS {_SQL_TYPES[field.type]}) AS {field.name}"
        return field.name

    return ", ".join(column(field) for field in schema)


_SQL_TYPES = {
    pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}

