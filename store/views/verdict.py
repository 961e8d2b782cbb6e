"""A verdict on a rerun: parent, rerun and difference on every metric, set against the
spread of the parent's sibling seeds.

Pure functions of run.json infos (``Store.run_info``) and of the stored epoch, step and
per-class tables; only :func:`training_totals` reads a run's files.

*Sibling seeds.* A run S is a sibling of the parent P when S is finished, S has another
``seed`` than P, and S has the same :data:`SIBLING_SETTINGS` as P: task, model, planned
epochs (run.json ``max_epochs``), label noise and its seed (so both trained on the same
noisy labels), learning rate, batch size, weight decay, ``keep_steps``, the number of
training processes (``world_size``) and curriculum (by file name; none for a plain run).
Settings that do not change what is trained (name, store, GraNd recording, progress bar,
accelerator) may differ. Runs without a recorded ``config`` have no siblings. Two siblings
with the same seed count once (the first created). The parent and its siblings are the
parent's *seeds*.

*The rule.* A rerun's difference on a metric exceeds seed noise when the parent's seeds
(at least 2 with a value) are further apart than it is not: with 2 seeds, when
``|difference| > |seed A - seed B|`` (outside their range); with 3 or more, when
``|difference| > 2 × std`` (sample standard deviation, ``ddof=1``). A difference equal to
the threshold does not exceed it. With reruns of the same curriculum on several seeds
(:func:`seed_reruns`), the paired mean difference exceeds noise when
``|mean difference| > 2 × std(differences) / sqrt(pairs)`` (two standard errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any, Iterable, Sequence

import duckdb
import numpy as np
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.queries import retry_on_vanishing_files, run_connection


@dataclass(frozen=True)
class Metric:
    """One metric of a run: its key in :func:`run_metrics`, how it is named, its unit
    (``"accuracy"`` a fraction, ``"loss"``, ``"count"``, ``"seconds"``) and which direction
    is better (None: neither, e.g. steps)."""

    name: str
    label: str
    unit: str
    higher_is_better: bool | None


#: The metrics of a verdict, in the order shown.
METRICS: tuple[Metric, ...] = (
    Metric("best_val_accuracy", "Best validation accuracy", "accuracy", True),
    Metric("last_val_accuracy", "Last validation accuracy", "accuracy", True),
    Metric("last_val_loss", "Last validation loss", "loss", False),
    Metric("last_train_accuracy", "Last training accuracy", "accuracy", True),
    Metric("last_train_loss", "Last training loss", "loss", False),
    Metric("epochs", "Epochs", "count", None),
    Metric("steps", "Optimisation steps", "count", None),
    Metric("samples_presented", "Samples presented", "count", None),
    Metric("wall_seconds", "Wall time", "seconds", None),
)
METRIC_BY_NAME = {metric.name: metric for metric in METRICS}

#: The metric the verdict's sentence is about.
HEADLINE_METRIC = "best_val_accuracy"

#: The run settings that siblings share (see the module docstring); ``seed`` is not one.
SIBLING_SETTINGS = ("task", "model", "max_epochs", "label_noise", "label_noise_seed", "lr", "batch_size",
                    "weight_decay", "keep_steps", "world_size", "curriculum")

#: How many standard deviations (3+ seeds) or standard errors (paired) a difference must exceed.
NOISE_MULTIPLIER = 2.0


@dataclass(frozen=True)
class TrainingTotals:
    """What a run trained on in all: optimisation steps (rows of its ``steps`` table) and
    samples presented (training rows of its ``epochs`` table, summed); None when not recorded."""

    steps: int | None
    samples_presented: int | None


STEPS_SQL = "SELECT count(*) AS steps FROM steps"
PRESENTED_SQL = "SELECT sum(num_samples) AS presented FROM epochs WHERE split = 'train'"


def training_totals(store: Store, run_id: str) -> TrainingTotals:
    """The run's :class:`TrainingTotals`, read with DuckDB from its steps and epochs tables."""
    queries = {table: sql for table, sql in (("steps", STEPS_SQL), ("epochs", PRESENTED_SQL))
               if store.table_files(run_id, table)}

    def run() -> dict[str, int | None]:
        con = run_connection(store, run_id, tuple(queries))  # one connection for both counts
        try:
            values = {table: con.execute(sql).fetchone()[0] for table, sql in queries.items()}
        finally:
            con.close()
        return {table: None if value is None else int(value) for table, value in values.items()}

    try:
        counts = retry_on_vanishing_files(run) if queries else {}
    except duckdb.Error as error:
        raise StoreError(f"could not count the steps and samples of run {run_id!r}: {error}") from error
    return TrainingTotals(steps=counts.get("steps"), samples_presented=counts.get("epochs"))


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def wall_seconds(info: dict[str, Any]) -> float | None:
    """Seconds from ``created_at`` to ``finished_at`` in run.json; None when either is missing."""
    try:
        start = datetime.fromisoformat(str(info["created_at"]))
        end = datetime.fromisoformat(str(info["finished_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def run_metrics(info: dict[str, Any], totals: TrainingTotals) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` for one run (its run.json ``info``); None where not recorded."""
    return {
        "best_val_accuracy": _number(info.get("best_val_accuracy")),
        "last_val_accuracy": _number(info.get("final_val_accuracy")),
        "last_val_loss": _number(info.get("final_val_loss")),
        "last_train_accuracy": _number(info.get("final_train_accuracy")),
        "last_train_loss": _number(info.get("final_train_loss")),
        "epochs": _number(info.get("epochs_done")),
        "steps": _number(totals.steps),
        "samples_presented": _number(totals.samples_presented),
        "wall_seconds": wall_seconds(info),
    }


# -- sibling seeds -------------------------------------------------------------------


def training_settings(info: dict[str, Any]) -> tuple | None:
    """The run's values of :data:`SIBLING_SETTINGS`; None for a run without a recorded config."""
    config = info.get("config")
    if not isinstance(config, dict) or "seed" not in config:
        return None
    curriculum = config.get("curriculum")
    values = {
        "task": info.get("task", config.get("task")), "model": info.get("model", config.get("model")),
        "max_epochs": info.get("max_epochs", config.get("epochs")),
        "label_noise": float(config.get("label_noise") or 0.0),
        "label_noise_seed": config.get("label_noise_seed"), "lr": config.get("lr"),
        "batch_size": config.get("batch_size"), "weight_decay": config.get("weight_decay"),
        "keep_steps": bool(config.get("keep_steps")), "world_size": int(info.get("world_size") or 1),
        "curriculum": PurePath(str(curriculum)).name if curriculum else None,
    }
    return tuple(values[key] for key in SIBLING_SETTINGS)


def _seed(info: dict[str, Any]) -> Any:
    return info.get("seed", (info.get("config") or {}).get("seed"))


def _created(info: dict[str, Any]) -> str:
    return str(info.get("created_at") or "")


def sibling_seeds(parent: dict[str, Any], infos: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parent's sibling seeds among ``infos`` (run.json dicts): finished runs with the
    parent's :data:`SIBLING_SETTINGS` and another seed, one per seed (the first created),
    ordered by seed."""
    settings = training_settings(parent)
    if settings is None:
        return []
    chosen: dict[Any, dict[str, Any]] = {}
    for info in sorted(infos, key=_created):
        if (info.get("run_id") == parent.get("run_id") or info.get("status") != "finished"
                or _seed(info) == _seed(parent) or training_settings(info) != settings):
            continue
        chosen.setdefault(_seed(info), info)
    return [chosen[seed] for seed in sorted(chosen, key=_seed_order)]


def _seed_order(seed: Any) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def seed_reruns(rerun: dict[str, Any], parent_ids: Sequence[str],
                infos: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each of ``parent_ids`` (the parent's seeds), its rerun of the same curriculum with
    the same settings as ``rerun`` (:data:`SIBLING_SETTINGS`, curriculum file included):
    the finished run whose ``parent_run_id`` is that parent, the newest where several are.
    ``rerun`` itself stands for its own parent."""
    settings = training_settings(rerun)
    found: dict[str, dict[str, Any]] = {}
    if settings is None:
        return found
    for info in sorted(infos, key=_created):
        parent_id = info.get("parent_run_id")
        if (parent_id in parent_ids and info.get("status") == "finished"
                and training_settings(info) == settings):
            found[parent_id] = info
    if rerun.get("parent_run_id") is not None:
        found[rerun["parent_run_id"]] = rerun
    return {parent_id: found[parent_id] for parent_id in parent_ids if parent_id in found}


# -- the rule ------------------------------------------------------------------------


def noise_threshold(seed_values: Sequence[float | None]) -> float | None:
    """How far apart the parent's seeds are on a metric (see the rule in the module
    docstring): the range of 2 values, 2 × std (``ddof=1``) of 3 or more; None with fewer
    than 2 values (None and NaN values are left out)."""
    values = np.array([v for v in seed_values if v is not None and not math.isnan(v)], dtype=float)
    if len(values) < 2:
        return None
    if len(values) == 2:
        return float(abs(values[0] - values[1]))
    return float(NOISE_MULTIPLIER * values.std(ddof=1))


def exceeds(difference: float | None, threshold: float | None) -> bool | None:
    """``|difference| > threshold``; None when either is unknown."""
    if difference is None or threshold is None or math.isnan(difference):
        return None
    return bool(abs(difference) > threshold)


def _difference(parent: float | None, rerun: float | None) -> float | None:
    return None if parent is None or rerun is None else rerun - parent


def verdict_table(parent: dict[str, float | None], rerun: dict[str, float | None],
                  seeds: Sequence[dict[str, float | None]]) -> pd.DataFrame:
    """One row per metric of :data:`METRICS`: ``metric, parent, rerun, difference`` (rerun −
    parent), the spread of the parent's ``seeds`` (the metrics of the parent and its
    siblings): ``seeds`` (how many have a value), ``seed_mean, seed_std`` (``ddof=1``),
    ``seed_min, seed_max``, and the rule's ``threshold`` and ``exceeds_noise`` (None for
    metrics with no better direction: epochs, steps, samples and wall time follow from the
    settings and the machine, not from the seed)."""
    rows = []
    for metric in METRICS:
        values = [m.get(metric.name) for m in seeds]
        present = np.array([v for v in values if v is not None], dtype=float)
        difference = _difference(parent.get(metric.name), rerun.get(metric.name))
        threshold = noise_threshold(values)
        rows.append({
            "metric": metric.name, "parent": parent.get(metric.name), "rerun": rerun.get(metric.name),
            "difference": difference, "seeds": len(present),
            "seed_mean": float(present.mean()) if len(present) else None,
            "seed_std": float(present.std(ddof=1)) if len(present) > 1 else None,
            "seed_min": float(present.min()) if len(present) else None,
            "seed_max": float(present.max()) if len(present) else None,
            "threshold": threshold,
            "exceeds_noise": exceeds(difference, threshold) if metric.higher_is_better is not None else None,
        })
    return pd.DataFrame(rows).astype({"parent": float, "rerun": float, "difference": float, "seed_mean": float,
                                      "seed_std": float, "seed_min": float, "seed_max": float, "threshold": float})


def paired_table(pairs: Sequence[tuple[dict[str, float | None], dict[str, float | None]]]) -> pd.DataFrame:
    """Reruns vs their parents over several seeds (``pairs``: (parent metrics, rerun
    metrics)), one row per metric: ``metric, pairs`` (with both values), ``parent_mean,
    rerun_mean, mean_difference, std_error`` (std of the differences, ``ddof=1``, / sqrt(pairs)),
    ``threshold`` (2 × std_error) and ``exceeds_noise`` (None as in :func:`verdict_table`);
    NaN and None with fewer than 2 pairs."""
    rows = []
    for metric in METRICS:
        both = [(p[metric.name], r[metric.name]) for p, r in pairs
                if p.get(metric.name) is not None and r.get(metric.name) is not None]
        parents = np.array([p for p, _ in both], dtype=float)
        reruns = np.array([r for _, r in both], dtype=float)
        differences = reruns - parents
        enough = len(both) >= 2
        std_error = float(differences.std(ddof=1) / math.sqrt(len(both))) if enough else None
        mean_difference = float(differences.mean()) if enough else None
        threshold = NOISE_MULTIPLIER * std_error if std_error is not None else None
        rows.append({
            "metric": metric.name, "pairs": len(both),
            "parent_mean": float(parents.mean()) if enough else None,
            "rerun_mean": float(reruns.mean()) if enough else None,
            "mean_difference": mean_difference, "std_error": std_error, "threshold": threshold,
            "exceeds_noise": exceeds(mean_difference, threshold) if metric.higher_is_better is not None else None,
        })
    return pd.DataFrame(rows).astype({"parent_mean": float, "rerun_mean": float, "mean_difference": float,
                                      "std_error": float, "threshold": float})


# -- per class -----------------------------------------------------------------------


def last_epoch_classes(accuracy: pd.DataFrame) -> pd.Series:
    """A run's validation accuracy per class at its last recorded epoch, indexed by label
    (``accuracy``: ``epoch, label, accuracy``, ``store.curriculum.class_accuracy``)."""
    if accuracy.empty:
        return pd.Series(dtype=float, name="accuracy").rename_axis("label")
    last = accuracy[accuracy["epoch"] == accuracy["epoch"].max()]
    return last.set_index("label")["accuracy"].astype(float)


def class_verdict_table(parent: pd.DataFrame, rerun: pd.DataFrame,
                        seeds: Sequence[pd.DataFrame]) -> pd.DataFrame | None:
    """Per class at each run's last epoch: ``label, parent, rerun, difference`` (rerun −
    parent), and over the parent's ``seeds`` (their class-accuracy frames, runs without one
    left out) ``seeds, seed_std`` (``ddof=1``), ``seed_min, seed_max, threshold,
    exceeds_noise``; None when neither parent nor rerun recorded per-class accuracy."""
    parent_last, rerun_last = last_epoch_classes(parent), last_epoch_classes(rerun)
    if parent_last.empty and rerun_last.empty:
        return None
    labels = sorted(set(parent_last.index) | set(rerun_last.index))
    seed_lasts = [last_epoch_classes(frame) for frame in seeds if not frame.empty]
    rows = []
    for label in labels:
        parent_value = float(parent_last[label]) if label in parent_last.index else None
        rerun_value = float(rerun_last[label]) if label in rerun_last.index else None
        values = [float(last[label]) for last in seed_lasts if label in last.index]
        difference = _difference(parent_value, rerun_value)
        threshold = noise_threshold(values)
        rows.append({
            "label": label, "parent": parent_value, "rerun": rerun_value, "difference": difference,
            "seeds": len(values), "seed_std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "seed_min": min(values) if values else None, "seed_max": max(values) if values else None,
            "threshold": threshold, "exceeds_noise": exceeds(difference, threshold),
        })
    return pd.DataFrame(rows).astype({"parent": float, "rerun": float, "difference": float, "seed_std": float,
                                      "seed_min": float, "seed_max": float, "threshold": float})
