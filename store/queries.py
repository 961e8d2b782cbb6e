"""Named DuckDB queries over a run's Parquet segments.

Each query runs a ``.sql`` file from ``store/sql`` against the run's tables, registered as
views over the files that exist right now (``store.run_tables``, whose names are
re-exported here). Compaction lives in ``store.compaction``; ``compact_run`` is
re-exported here too.
"""

from __future__ import annotations

import logging

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

# Re-exported: callers have always imported these from here.
from store.compaction import COMPACTION_SETTINGS, compact_run  # noqa: F401
from store.errors import StoreError
from store.files import damaged_file_message, parquet_damage
from store.layout import Store
from store.run_tables import (  # noqa: F401 (re-exported, as above)
    ALL_EPOCHS,
    SHARED_DATABASE,
    load_sql,
    query_run,
    retry_on_vanishing_files,
    run_connection,
)
from store.settings import MONITOR_DATALOADER_FIELD

logger = logging.getLogger(__name__)


# -- named queries -------------------------------------------------------------------


#: The run.json field naming the validation dataloader whose accuracy is the run's: its
#: ``best_val_accuracy`` and its "val" curves (``DynamicsRecorder(monitor_dataloader_idx=)``).
#: Runs that lack it (recorded before several loaders were) monitor loader 0.


def monitored_dataloader(store: Store, run_id: str) -> int:
    """The validation dataloader a run monitors (``MONITOR_DATALOADER_FIELD``; 0 if unset)."""
    return int(store.run_info(run_id).get(MONITOR_DATALOADER_FIELD) or 0)


def _dataloader_idx(store: Store, run_id: str, dataloader_idx: int | None) -> int:
    if dataloader_idx is None:
        return monitored_dataloader(store, run_id)
    if isinstance(dataloader_idx, bool) or not isinstance(dataloader_idx, (int, np.integer)) or dataloader_idx < 0:
        raise ValueError(f"dataloader_idx must be a validation dataloader index >= 0, got {dataloader_idx!r}")
    return int(dataloader_idx)


def epoch_metrics(store: Store, run_id: str, dataloader_idx: int | None = None) -> pd.DataFrame:
    """epoch, train_loss, train_accuracy, val_loss, val_accuracy, time.

    ``val_*`` are those of validation dataloader ``dataloader_idx`` (default: the one the
    run monitors, ``monitored_dataloader``); ``validation_metrics`` has every loader.
    """
    loader = _dataloader_idx(store, run_id, dataloader_idx)
    return query_run(store, run_id, "epoch_metrics", {"dataloader_idx": loader}, tables=("epochs",))


def validation_metrics(store: Store, run_id: str) -> pd.DataFrame:
    """epoch, dataloader_idx, val_loss, val_accuracy, num_samples: one row per epoch and
    validation dataloader (``store/sql/validation_metrics.sql``)."""
    return query_run(store, run_id, "validation_metrics", tables=("epochs",))


def best_val_accuracy(store: Store, run_id: str, dataloader_idx: int | None = None) -> float | None:
    """The best epoch's validation accuracy on ``dataloader_idx`` (default: the monitored
    loader), from the ``epochs`` table; ``None`` when nothing was validated."""
    accuracy = epoch_metrics(store, run_id, dataloader_idx)["val_accuracy"].dropna()
    return float(accuracy.max()) if len(accuracy) else None


def steps(store: Store, run_id: str) -> pd.DataFrame:
    """step, epoch, loss, grad_norm, lr per optimisation step."""
    return query_run(store, run_id, "steps", tables=("steps",))


def layer_grad_norms(store: Store, run_id: str) -> pd.DataFrame:
    return query_run(store, run_id, "layer_grad_norms", tables=("layer_grad_norms",))


def dynamics(store: Store, run_id: str) -> pd.DataFrame:
    """One row per presentation: epoch, step, sample_id, loss, p_true, el2n, correct, ..."""
    return query_run(store, run_id, "dynamics", tables=("presentations",))


def trajectory(store: Store, run_id: str, sample_id: int) -> pd.DataFrame:
    """One sample's presentations over training."""
    return query_run(
        store, run_id, "trajectory", {"sample_id": int(sample_id)}, tables=("presentations",)
    )


def _validate_epochs(epochs: tuple[int, int] | None) -> tuple[int, int]:
    if epochs is None:
        return ALL_EPOCHS
    low, high = (int(epochs[0]), int(epochs[1]))
    if low < 0 or high < low:
        raise ValueError(f"epoch range must be 0 <= first <= last, got {low}..{high}")
    return low, high


#: The per-sample summary's columns (``store/sql/summary.sql``), in order. Which ones hold
#: values depends on the run's output kind (run.json ``output_kind``): a per-sample-loss run
#: has NULL in every column that needs correctness, p_true or the margin; only sequence
#: runs have ``token_accuracy`` and ``token_count``; ``group_id`` only runs whose batches gave groups.
SUMMARY = pa.schema([
    ("sample_id", pa.int64()), ("label", pa.int64()), ("original_label", pa.int64()), ("label_noisy", pa.bool_()),
    ("loss", pa.float64()), ("el2n", pa.float64()), ("grand", pa.float64()), ("grand_last", pa.float64()),
    ("forgetting_events", pa.int64()), ("first_learned_epoch", pa.int32()), ("never_learned", pa.bool_()),
    ("confidence", pa.float64()), ("variability", pa.float64()), ("correctness", pa.float64()),
    ("aum", pa.float64()), ("final_correct", pa.bool_()), ("presentations", pa.int64()), ("group_id", pa.int32()),
    ("token_accuracy", pa.float64()), ("token_count", pa.float64()),
])


def conform_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """A summary materialised before a column existed (``token_accuracy``, ``token_count``:
    summaries written before schema 3; ``group_id`` before schema 4), with that column added
    as missing values, in ``SUMMARY``'s order."""
    for field in SUMMARY:
        if field.name not in frame:
            frame[field.name] = pd.Series(np.nan, index=frame.index, dtype=field.type.to_pandas_dtype()) \
                if pa.types.is_floating(field.type) else pd.Series(pd.NA, index=frame.index, dtype=object)
    return frame[SUMMARY.names + [c for c in frame.columns if c not in SUMMARY.names]]


def run_summary(store: Store, run_id: str, epochs: tuple[int, int] | None = None) -> pd.DataFrame:
    """Per-sample summary of one run (see ``store/sql/summary.sql`` for the definitions):
    the columns of ``SUMMARY``, one row per sample.

    For a finished run over all epochs this reads the summary materialised at compaction.
    """
    epoch_min, epoch_max = _validate_epochs(epochs)
    materialised = store.run_dir(run_id) / "summary.parquet"
    if (epoch_min, epoch_max) == ALL_EPOCHS and materialised.exists():
        try:
            return conform_summary(pd.read_parquet(materialised))
        except (OSError, pa.ArrowException, ValueError) as error:
            if isinstance(error, FileNotFoundError):  # compacted again under us: query the segments
                return run_summary(store, run_id, epochs)
            reason = parquet_damage(materialised) or " ".join(str(error).split())
            raise StoreError(damaged_file_message(materialised, reason)) from error
    return query_run(
        store,
        run_id,
        "summary",
        {"epoch_min": epoch_min, "epoch_max": epoch_max},
        tables=("presentations", "grand"),
    )


SUMMARY_MEAN_COLUMNS = (
    "loss",
    "el2n",
    "grand",
    "grand_last",
    "forgetting_events",
    "first_learned_epoch",
    "confidence",
    "variability",
    "correctness",
    "aum",
    "token_accuracy",
    "token_count",
)
#: Summary columns that only sequence runs fill.
SEQUENCE_COLUMNS = ("token_accuracy", "token_count")


def _same_samples_and_labels(frame: pd.DataFrame, reference: pd.DataFrame) -> bool:
    """Same sample ids in the same order, and the same label where one is recorded (runs
    without class labels, sequences or per-sample losses, have none to compare)."""
    if len(frame) != len(reference):
        return False
    if not np.array_equal(frame["sample_id"].to_numpy(np.int64), reference["sample_id"].to_numpy(np.int64)):
        return False
    mine, theirs = frame["label"].astype("Float64"), reference["label"].astype("Float64")
    both_missing = mine.isna().to_numpy() & theirs.isna().to_numpy()
    equal = (mine.to_numpy(dtype=float, na_value=np.nan) == theirs.to_numpy(dtype=float, na_value=np.nan))
    return bool((equal | both_missing).all())


def sample_summary(
    store: Store, run_ids: str | list[str], epochs: tuple[int, int] | None = None
) -> pd.DataFrame:
    """Per-sample summary over one run or averaged over several (the Data Diet protocol).

    With several runs (e.g. seeds of one task) every score is the mean over runs,
    ``never_learned`` is true only if no run ever learned the sample (missing when no run
    recorded correctness: per-sample-loss runs), ``num_runs`` says how many runs were
    averaged. The runs must share their samples and labels.
    """
    if isinstance(run_ids, str):
        run_ids = [run_ids]
    if not run_ids:
        raise ValueError("sample_summary needs at least one run id")
    frames = [run_summary(store, run_id, epochs) for run_id in run_ids]
    if len(frames) == 1:
        frame = frames[0]
        frame["num_runs"] = 1
        return _with_sample_keys(store, run_ids, frame)
    reference = frames[0][["sample_id", "label", "original_label", "label_noisy"]]
    for run_id, frame in zip(run_ids[1:], frames[1:]):
        if not _same_samples_and_labels(frame, reference):
            raise StoreError(
                f"run {run_id!r} has different samples or labels than {run_ids[0]!r}; "
                "scores can only be averaged over runs of the same task and label noise"
            )
    stacked = pd.concat(frames, ignore_index=True)
    grouped = stacked.groupby("sample_id", sort=True)
    averaged = grouped[list(SUMMARY_MEAN_COLUMNS)].mean()
    # Never learned in every run that recorded correctness; missing where none did.
    never_learned = grouped["never_learned"].all().astype("boolean")
    averaged["never_learned"] = never_learned.where(grouped["never_learned"].count() > 0, pd.NA)
    averaged["final_correct"] = grouped["final_correct"].mean()
    averaged["presentations"] = grouped["presentations"].sum()
    averaged["group_id"] = grouped["group_id"].first()  # the first run's group where runs differ
    # The sequence columns last, as in a single run's summary.
    averaged = averaged[[c for c in averaged.columns if c not in SEQUENCE_COLUMNS] + list(SEQUENCE_COLUMNS)]
    averaged["num_runs"] = grouped.size()
    return _with_sample_keys(store, run_ids, reference.merge(averaged.reset_index(), on="sample_id", how="left"))


def sample_keys(store: Store, run_id: str) -> pd.DataFrame:
    """``sample_id, sample_key`` of a run whose samples have string keys (empty otherwise);
    a ``StoreError`` if one id stands for two keys (a collision two ranks could not see)."""
    keys = query_run(store, run_id, "sample_keys", tables=("sample_keys",))
    check_one_name_per_id(keys, run_id, "sample_id", "sample_key", "sample id {} stands for two keys")
    return keys


def check_one_name_per_id(frame: pd.DataFrame, run_id: str, id_column: str, name_column: str, problem: str) -> None:
    """``StoreError`` when one id of a mapping the ranks wrote separately has two names (a hash
    collision, or ranks that disagree); ``problem`` says so, with ``{}`` for the id."""
    twice = frame[id_column].duplicated(keep=False)
    if twice.any():
        first = frame[twice].head(2)
        raise StoreError(f"run {run_id!r}: {problem.format(int(first[id_column].iloc[0]))} "
                         f"({', '.join(map(repr, first[name_column]))}); rename one of them")


def _with_sample_keys(store: Store, run_ids: list[str], frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``sample_key`` column after ``sample_id`` when a run has string keys."""
    keys = pd.concat([sample_keys(store, run_id) for run_id in run_ids]).drop_duplicates()
    if keys.empty:
        return frame
    frame.insert(1, "sample_key", frame["sample_id"].map(keys.set_index("sample_id")["sample_key"]))
    return frame


# -- compaction ----------------------------------------------------------------------


def runs_table(store: Store) -> pd.DataFrame:
    """One row per run: its metadata and the metrics recorded so far."""
    rows = []
    for run_id in store.run_ids():
        try:
            info = store.run_state(run_id)  # a run whose process is gone reads "interrupted"
        except StoreError as error:
            logger.warning("skipping unreadable run %s: %s", run_id, error)
            continue
        config = info.get("config") or {}
        rows.append(
            {
                "run_id": run_id,
                "name": info.get("name"),
                "status": info.get("status"),
                "task": info.get("task"),
                "model": info.get("model"),
                "seed": info.get("seed"),
                "label_noise": config.get("label_noise", 0.0),
                "epochs_done": info.get("epochs_done", 0),
                "max_epochs": info.get("max_epochs"),
                "best_val_accuracy": info.get("best_val_accuracy"),
                "final_val_accuracy": info.get("final_val_accuracy"),
                "final_train_loss": info.get("final_train_loss"),
                "parent_run_id": info.get("parent_run_id"),
                "curriculum": info.get("curriculum"),
                "created_at": info.get("created_at"),
                "finished_at": info.get("finished_at"),
            }
        )
    columns = [
        "run_id", "name", "status", "task", "model", "seed", "label_noise", "epochs_done",
        "max_epochs", "best_val_accuracy", "final_val_accuracy", "final_train_loss",
        "parent_run_id", "curriculum", "created_at", "finished_at",
    ]
    return pd.DataFrame(rows, columns=columns)


def dataset_inputs(store: Store, key: str, sample_ids: list[int]) -> dict[int, np.ndarray]:
    """Inputs of the given samples from ``<store>/datasets/<key>.parquet`` (empty if absent)."""
    path = store.dataset_path(key)
    if not path.exists() or not sample_ids:
        return {}
    con = duckdb.connect()
    try:
        con.read_parquet(str(path)).create_view("dataset")
        ids = [int(s) for s in sample_ids]
        # The range lets DuckDB skip the row groups (Store.write_dataset) that cannot match.
        frame = con.execute(
            "SELECT sample_id, x, shape FROM dataset "
            "WHERE sample_id BETWEEN $low AND $high AND list_contains($ids, sample_id)",
            {"ids": ids, "low": min(ids), "high": max(ids)},
        ).df()
    finally:
        con.close()
    return {
        int(row.sample_id): np.asarray(row.x, dtype=np.float32).reshape(list(row.shape))
        for row in frame.itertuples()
    }
