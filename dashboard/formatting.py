"""How the dashboard writes values: run status and labels, percentages, numbers, and the
tables of runs it shows. Pure functions of plain values and frames (no Streamlit, no store)."""

from __future__ import annotations

from pathlib import Path
import re
from typing import Any

import numpy as np
import pandas as pd


def status_label(status: str | None, epochs_done: Any, max_epochs: Any) -> str:
    """"running · epoch 3/20", "finished", "failed", "interrupted"."""
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


# -- what a run's output kind allows (run.json "output_kind") ------------------------


#: How each output kind (run.json "output_kind") is named on a page.
KIND_LABELS = {"classification": "classification", "sequence": "sequences (one row per sequence)",
               "loss": "per-sample loss only"}


def kind_label(kind: str) -> str:
    """"per-sample loss only", "sequences (one row per sequence)", "classification"."""
    return KIND_LABELS.get(kind, kind)


def correct_definition(kind: str, sequence_threshold: Any = None) -> str:
    """When a presentation counts as *correct*, the basis of forgetting events, the
    first-learned epoch and correctness, for a run of output ``kind``.

    Sequences: token accuracy ≥ the run's ``sequence_correct_threshold`` (run.json).
    """
    if kind == "sequence":
        if sequence_threshold is None or pd.isna(sequence_threshold):
            threshold = "the recorder's threshold (not written in this run's run.json)"
        else:
            threshold = f"{float(sequence_threshold):g}"
        return f"A sequence counts as correct when its token accuracy ≥ {threshold}."
    if kind == "loss":
        return ("This run recorded only a per-sample loss, so no presentation counts as correct or "
                "incorrect: forgetting events, the first-learned epoch and correctness are not defined.")
    return "A sample counts as correct when its highest logit is the one of its given label."


#: What a run must record to get p(label), named in the messages below.
RECORD_PROBABILITIES = ("return `logits` with class targets `[B]` (or token targets `[B, T]` for "
                        "sequences) from `training_step` instead of only `per_sample_loss`")


def data_map_unavailable(kind: str) -> str:
    """The one sentence the data map shows when the run has no confidence to plot."""
    if kind == "loss":
        return ("The data map is not available for this run: it plots each sample's mean and spread of "
                "p(label) over training, and this run recorded only a per-sample loss; to get it, "
                f"{RECORD_PROBABILITIES}.")
    return "No sample has been presented yet."


def unrecorded_scores_note(kind: str, missing: list[str]) -> str:
    """Which registered scores a run of output ``kind`` cannot have (``missing``), and why;
    empty for classification runs and when nothing is missing."""
    if kind == "classification" or not missing:
        return ""
    names = ", ".join(name.replace("_", " ") for name in missing)
    if kind == "loss":
        return (f"Not available for this run ({names}): they need p(label), the margin or "
                f"correctness, and this run recorded only a per-sample loss; to get them, {RECORD_PROBABILITIES}.")
    return f"Not recorded in this run: {names}."


def decoded_text(values: np.ndarray, encoding: str) -> str:
    """A text sample stored as its byte values (floats or integers in [0, 255]) as text; a
    byte sequence cut inside a multi-byte character shows U+FFFD there."""
    data = np.asarray(values).reshape(-1)
    if data.size and (np.any(data < 0) or np.any(data > 255) or np.any(data != np.round(data))):
        raise ValueError(f"a text sample holds byte values in [0, 255]; got values in [{data.min()}, {data.max()}]")
    return data.astype(np.uint8).tobytes().decode(encoding, errors="replace")


#: Characters Streamlit's Markdown reads as syntax anywhere in a line (CommonMark emphasis,
#: code, links and images, HTML, tables, strikethrough; ``:`` for its icons and colours, ``$``
#: for maths); ``#``, ``+``, ``-`` and ``1.`` only at the start of a line.
_MARKDOWN_INLINE = set("\\`*_[]<>~|!:$")


def md_text(value: Any) -> str:
    """A stored value (a run name, an error, a task) as literal text inside Markdown: every
    character Markdown would read as syntax is escaped, so a name like ``![x](http://host/)``
    shows as typed and fetches nothing. Line breaks become spaces."""
    text = " ".join(str(value).splitlines())
    escaped = "".join("\\" + char if char in _MARKDOWN_INLINE else char for char in text)
    head = re.match(r"[#+=-]|\d+[.)]", escaped)
    if head:  # a heading, a list item or a numbered item at the start
        escaped = escaped[: head.end() - 1] + "\\" + escaped[head.end() - 1:]
    return escaped
