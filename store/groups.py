"""Groups (a domain, a skill, a data source) that a run's batches gave their samples, and
the per-group aggregates read from them.

The recorder writes each presentation's ``group_id`` and the run's ``groups`` table
(``store.schema.GROUPS``: ``group_id -> group_name``); a sample's group in the per-sample
summary is the group of its latest presentation that carried one (``store/sql/summary.sql``).
Everything here is DuckDB over the run's files (live segments or compacted), through
``store.queries``:

* ``group_names``: each group id's name; ``with_group_names``: a summary with a ``group``
  column of names;
* ``group_scores``: one row per group, the means of its samples' scores
  (``store/sql/group_scores.sql``), of one run or averaged over runs;
* ``group_step_loss``: the mean loss of each group's presentations per step, or per equal
  bucket of steps (``store/sql/group_steps.sql``);
* ``group_epoch_metrics``: the same per epoch (``store/sql/group_epochs.sql``).

Samples and presentations without a group are left out of the per-group answers.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.queries import check_one_name_per_id, load_sql, query_run, sample_summary
from store.scores import get_score

#: The per-group table's columns after ``group`` and ``group_id`` (``store/sql/group_scores.sql``).
GROUP_SCORE_COLUMNS = (
    "samples", "presentations", "flipped", "never_learned", "loss", "el2n", "grand", "grand_last",
    "forgetting_events", "forgetting_events_total", "first_learned_epoch", "confidence", "variability",
    "correctness", "aum", "final_accuracy", "token_accuracy", "token_count",
)


class NoGroupsError(StoreError):
    """The run's batches gave no groups, so there is nothing to aggregate per group."""


def group_names(store: Store, run_id: str) -> pd.DataFrame:
    """``group_id, group`` of a run (empty when its batches gave no groups); a ``StoreError``
    if one id has two names (two ranks that disagree)."""
    names = query_run(store, run_id, "group_names", tables=("groups",))
    check_one_name_per_id(names, run_id, "group_id", "group_name", "group id {} has two names")
    return pd.DataFrame({"group_id": names["group_id"].astype(np.int64), "group": names["group_name"].astype(object)})


def has_groups(store: Store, run_id: str) -> bool:
    """Whether the run's batches gave any group (its ``groups`` table has a row)."""
    return not group_names(store, run_id).empty


def names_of_runs(store: Store, run_ids: list[str]) -> pd.Series:
    """group_id -> name over several runs (ids derive from names, so runs agree; the first
    run's name wins where they do not)."""
    frames = [group_names(store, run_id) for run_id in run_ids]
    names = pd.concat(frames, ignore_index=True).drop_duplicates("group_id")
    return names.set_index("group_id")["group"]


def name_column(group_id: pd.Series, names: pd.Series) -> pd.Series:
    """The name of each of ``group_id`` (missing where the id is); an id the ``groups``
    table does not name (not written yet) is shown as the id."""
    ids = pd.to_numeric(group_id, errors="coerce")
    mapped = ids.map(names)
    unnamed = mapped.isna() & ids.notna()
    mapped[unnamed] = ids[unnamed].astype(np.int64).astype(str)
    return mapped.astype(object).where(ids.notna(), None)


def with_group_names(store: Store, run_ids: str | list[str], summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (``store.sample_summary``) with a ``group`` column (each sample's group
    name) after ``group_id``; unchanged when no run has groups."""
    run_ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    names = names_of_runs(store, run_ids)
    if names.empty and summary["group_id"].isna().all():
        return summary
    summary = summary.copy()
    summary.insert(summary.columns.get_loc("group_id") + 1, "group", name_column(summary["group_id"], names))
    return summary


def no_groups_message(run_ids: list[str]) -> str:
    runs = ", ".join(map(repr, run_ids))
    return (f"run {runs} recorded no groups" if len(run_ids) == 1 else f"runs {runs} recorded no groups") + (
        "; a batch gives each sample's group under the name 'group' (a dict key or named-tuple field)")


def group_scores(store: Store, run_ids: str | list[str], epochs: tuple[int, int] | None = None) -> pd.DataFrame:
    """One row per group: ``group, group_id`` and ``GROUP_SCORE_COLUMNS``, the means over the
    group's samples of their scores (``store.sample_summary``: of one run, or averaged over
    runs; loss, EL2N, GraNd and token means over ``epochs``), sorted by name.

    A ``NoGroupsError`` when no run's batches gave groups.
    """
    run_ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    names = names_of_runs(store, run_ids)
    summary = sample_summary(store, run_ids, epochs)
    if names.empty and summary["group_id"].isna().all():
        raise NoGroupsError(no_groups_message(run_ids))
    frame = scores_by_group(summary)
    frame.insert(0, "group", name_column(frame["group_id"], names))
    return frame.sort_values("group", kind="stable").reset_index(drop=True)


def scores_by_group(summary: pd.DataFrame) -> pd.DataFrame:
    """``group_id`` and ``GROUP_SCORE_COLUMNS`` of a per-sample summary, aggregated in DuckDB."""
    columns = ["group_id", "label_noisy", "never_learned", "presentations", "final_correct",
               "loss", "el2n", "grand", "grand_last", "forgetting_events", "first_learned_epoch", "confidence",
               "variability", "correctness", "aum", "token_accuracy", "token_count"]
    frame = pd.DataFrame({"sample_id": summary["sample_id"].to_numpy()})
    for column in columns:  # booleans as 0/1 (averaged over runs, final_correct is a fraction)
        values = summary[column].astype(object).where(summary[column].notna(), None)
        frame[column] = pd.to_numeric(values, errors="coerce").astype("Float64")
    con = duckdb.connect()
    try:
        con.register("summary", frame)
        result = con.execute(load_sql("group_scores")).df()
    except duckdb.Error as error:
        raise StoreError(f"cannot aggregate the scores per group: {error}") from error
    finally:
        con.close()
    result["group_id"] = result["group_id"].astype(np.int64)
    for column in ("samples", "presentations", "flipped", "never_learned"):
        result[column] = result[column].fillna(0).astype(np.int64)
    return result[["group_id", *GROUP_SCORE_COLUMNS]]


def rank_groups(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    """Groups sorted hardest first by their mean ``score`` (the registry's direction; groups
    without a value last; ties keep the given order)."""
    spec = get_score(score)
    values = frame[spec.name].astype("float64")
    key = (values if spec.higher_is_harder else -values).fillna(-np.inf).to_numpy()
    return frame.iloc[np.argsort(-key, kind="stable")].reset_index(drop=True)


def group_step_loss(store: Store, run_id: str, max_buckets: int | None = None) -> pd.DataFrame:
    """Per group and step: ``group, group_id, step, step_end, epoch, loss, accuracy,
    presentations``, the means over the group's presentations of that step (``step_end`` =
    ``step``).

    With ``max_buckets`` and more recorded steps than that, the steps are cut into
    ``max_buckets`` equal buckets instead: one row per group and bucket it has presentations
    in, ``step`` .. ``step_end`` the bucket's steps, ``loss`` the mean over all the group's
    presentations in it. Empty when no presentation carried a group.
    """
    if max_buckets is not None and (isinstance(max_buckets, bool) or int(max_buckets) < 1):
        raise ValueError(f"max_buckets must be a positive integer, got {max_buckets!r}")
    bounds = query_run(store, run_id, "group_step_bounds", tables=("presentations",)).iloc[0]
    if pd.isna(bounds["low"]):
        return _named(store, run_id, pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in (
            ("group_id", "int64"), ("step", "int64"), ("step_end", "int64"), ("epoch", "int64"),
            ("loss", "float64"), ("accuracy", "float64"), ("presentations", "int64"))}))
    low, span = int(bounds["low"]), int(bounds["high"]) - int(bounds["low"]) + 1
    buckets = span if max_buckets is None else min(span, int(max_buckets))
    frame = query_run(store, run_id, "group_steps", {"low": low, "span": span, "buckets": buckets},
                      tables=("presentations",))
    # bucket b holds the steps s with floor((s - low) * B / span) = b: from low + ceil(b * span / B)
    bucket = frame.pop("bucket").to_numpy(np.int64)
    frame.insert(1, "step", low + (bucket * span + buckets - 1) // buckets)
    frame.insert(2, "step_end", low + ((bucket + 1) * span + buckets - 1) // buckets - 1)
    return _named(store, run_id, frame)


def group_epoch_metrics(store: Store, run_id: str) -> pd.DataFrame:
    """Per group and epoch: ``group, group_id, epoch, loss, accuracy, token_accuracy,
    presentations`` (means over the group's presentations of that epoch)."""
    return _named(store, run_id, query_run(store, run_id, "group_epochs", tables=("presentations",)))


def _named(store: Store, run_id: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame.insert(0, "group", name_column(frame["group_id"], names_of_runs(store, [run_id])))
    return frame
