"""How the dashboard writes values: run status and labels, percentages, numbers, and the
tables of runs it shows. Pure functions of plain values and frames (no Streamlit, no store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def status_label(status: str | None, epochs_done: Any, max_epochs: Any) -> str:
    """"running · epoch 3/20", "finished", "failed"."""
    if status == "running":
        done = 0 if pd.isna(epochs_done) else int(epochs_done)
        total = "?" if max_epochs is None or pd.isna(max_epochs) else int(max_epochs)
        return f"running · epoch {done}/{total}"
    return str(status or "unknown")


def percent(value: Any, digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{100 * float(value):.{digits}f} %"


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def runs_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table as shown: status with live progress, parent by name, newest first."""
    if runs.empty:
        return runs
    names = dict(zip(runs["run_id"], runs["name"]))
    shown = pd.DataFrame({
        "name": runs["name"],
        "status": [status_label(s, d, m) for s, d, m in
                   zip(runs["status"], runs["epochs_done"], runs["max_epochs"])],
        "task": runs["task"],
        "model": runs["model"],
        "seed": runs["seed"],
        "label noise": runs["label_noise"].astype(float),
        "epochs": runs["epochs_done"],
        "best val acc": runs["best_val_accuracy"].astype(float),
        "parent run": [names.get(parent, parent) if parent else None for parent in runs["parent_run_id"]],
        "curriculum": [Path(c).name if isinstance(c, str) and c else None for c in runs["curriculum"]],
        "created": runs["created_at"],
        "run_id": runs["run_id"],
    })
    return shown.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def compare_table(infos: dict[str, dict[str, Any]], short: dict[str, str], names: dict[str, str]) -> pd.DataFrame:
    """The compare page's table: one row per run (``infos``: run_id -> run.json), shown by
    its ``short`` name, its parent by name where ``names`` knows it."""
    return pd.DataFrame([{
        "run": short[run_id],
        "status": status_label(info.get("status"), info.get("epochs_done"), info.get("max_epochs")),
        "task": info.get("task"), "model": info.get("model"), "seed": info.get("seed"),
        "label noise": (info.get("config") or {}).get("label_noise", 0.0),
        "best val acc": info.get("best_val_accuracy"),
        "final val acc": info.get("final_val_accuracy"),
        "parent run": names.get(info.get("parent_run_id"), info.get("parent_run_id")),
        "run_id": run_id,
    } for run_id, info in infos.items()])


def outcome_table(infos: dict[str, dict[str, Any]], labels: dict[str, str]) -> pd.DataFrame:
    """Final numbers of a parent and its rerun (``infos``: run_id -> run.json), by ``labels``."""
    return pd.DataFrame([{
        "run": labels[run_id], "best val acc": info.get("best_val_accuracy"),
        "final val acc": info.get("final_val_accuracy"), "final val loss": info.get("final_val_loss"),
        "epochs": info.get("epochs_done"),
    } for run_id, info in infos.items()])
