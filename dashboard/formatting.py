"""How the dashboard writes values: run status and labels, percentages, numbers, and the
tables of runs it shows. Pure functions of plain values and frames (no Streamlit, no store)."""

from __future__ import annotations

from pathlib import Path
import re
from typing import Any, Sequence

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


# -- a rerun's verdict (store.views.verdict's tables) ----------------------------------
# ``metrics`` below are the verdict's metric specs (``name``, ``label``, ``unit``,
# ``higher_is_better``), passed in by the page: units are "accuracy" (a fraction, shown as
# a percentage with one decimal, differences and spreads in percentage points), "loss"
# (three decimals), "count" and "seconds".


def metric_value(value: Any, unit: str) -> str:
    """"84.3 %", "0.778", "1,260", "7 s"; "–" for a missing value."""
    if value is None or pd.isna(value):
        return "–"
    if unit == "accuracy":
        return percent(value, 1)
    if unit == "loss":
        return f"{float(value):.3f}"
    if unit == "seconds":
        return f"{float(value):,.0f} s"
    return f"{float(value):,.0f}"


def metric_change(value: Any, unit: str, signed: bool = True) -> str:
    """A difference or a spread: "+5.9 pp" (percentage points), "-0.346", "-260", "+1 s";
    without a sign when ``signed`` is False (a standard deviation); "–" for a missing value."""
    if value is None or pd.isna(value):
        return "–"
    sign = "+" if signed else ""
    if unit == "accuracy":
        return f"{100 * float(value):{sign}.1f} pp"
    if unit == "loss":
        return f"{float(value):{sign}.3f}"
    suffix = " s" if unit == "seconds" else ""
    return f"{float(value):{sign},.0f}{suffix}"


def _yes_no(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else ("yes" if value else "no")


def verdict_frame(table: pd.DataFrame, metrics: Sequence[Any]) -> pd.DataFrame:
    """The verdict table as shown: one row per metric (readable name), parent, rerun and
    difference in the metric's unit, the parent's seeds' mean, std, min and max and whether
    the difference is beyond seed noise; the seed columns only when there are 2 seeds or more."""
    units = {metric.name: metric.unit for metric in metrics}
    labels = {metric.name: metric.label for metric in metrics}
    rows = []
    for row in table.to_dict("records"):
        unit = units[row["metric"]]
        rows.append({
            "metric": labels[row["metric"]], "parent": metric_value(row["parent"], unit),
            "rerun": metric_value(row["rerun"], unit), "difference": metric_change(row["difference"], unit),
            "seeds mean": metric_value(row["seed_mean"], unit),
            "seeds std": metric_change(row["seed_std"], unit, signed=False),
            "seeds min": metric_value(row["seed_min"], unit), "seeds max": metric_value(row["seed_max"], unit),
            "beyond seed noise": _yes_no(row["exceeds_noise"]),
        })
    shown = pd.DataFrame(rows)
    if table.empty or table["seeds"].max() < 2:
        shown = shown[["metric", "parent", "rerun", "difference"]]
    return shown


def class_verdict_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Per-class validation accuracy (last epoch) as shown: class, parent, rerun (percent),
    difference and the seeds' std (percentage points), their min and max, beyond seed noise;
    the seed columns only when there are 2 seeds or more."""
    shown = pd.DataFrame({
        "class": table["label"].astype(str),
        "parent": [metric_value(v, "accuracy") for v in table["parent"]],
        "rerun": [metric_value(v, "accuracy") for v in table["rerun"]],
        "difference": [metric_change(v, "accuracy") for v in table["difference"]],
        "seeds std": [metric_change(v, "accuracy", False) for v in table["seed_std"]],
        "seeds min": [metric_value(v, "accuracy") for v in table["seed_min"]],
        "seeds max": [metric_value(v, "accuracy") for v in table["seed_max"]],
        "beyond seed noise": [_yes_no(v) for v in table["exceeds_noise"]],
    })
    if table.empty or table["seeds"].max() < 2:
        shown = shown[["class", "parent", "rerun", "difference"]]
    return shown


def paired_frame(table: pd.DataFrame, metrics: Sequence[Any]) -> pd.DataFrame:
    """Reruns vs parents over seeds as shown (``store.views.verdict.paired_table``): one row
    per metric with pairs, the parents' and the reruns' mean, the mean paired difference,
    its standard error and whether it is beyond seed noise."""
    units = {metric.name: metric.unit for metric in metrics}
    labels = {metric.name: metric.label for metric in metrics}
    return pd.DataFrame([{
        "metric": labels[row["metric"]], "pairs": int(row["pairs"]),
        "parents' mean": metric_value(row["parent_mean"], units[row["metric"]]),
        "reruns' mean": metric_value(row["rerun_mean"], units[row["metric"]]),
        "mean difference": metric_change(row["mean_difference"], units[row["metric"]]),
        "standard error": metric_change(row["std_error"], units[row["metric"]], signed=False),
        "beyond seed noise": _yes_no(row["exceeds_noise"]),
    } for row in table.to_dict("records")])


def _amount(value: float, unit: str) -> str:
    """An unsigned size of a difference: "5.9 points", "0.346", "260", "1 s"."""
    if unit == "accuracy":
        return f"{100 * abs(value):.1f} points"
    return metric_change(abs(value), unit, signed=False)


def _direction(difference: float, metric: Any) -> str:
    if metric.higher_is_better is None:
        return "higher" if difference > 0 else "lower"
    return "better" if (difference > 0) == metric.higher_is_better else "worse"


def verdict_sentence(row: dict[str, Any], metric: Any, multiplier: float) -> str:
    """The verdict in one sentence, from the verdict table's ``row`` of ``metric``: the
    rerun's difference, the parent's seeds' spread and whether the difference exceeds it
    (with 2 seeds: outside their range; with 3 or more: beyond ``multiplier`` × their std)."""
    unit, name = metric.unit, metric.label[:1].lower() + metric.label[1:]
    difference = row["difference"]
    if difference is None or pd.isna(difference):
        return f"The {name} of the parent or the rerun was not recorded: no verdict."
    values = f"{metric_value(row['parent'], unit)} → {metric_value(row['rerun'], unit)}"
    if difference == 0:
        start = f"The rerun equals its parent on {name} ({metric_value(row['rerun'], unit)})"
    else:
        start = (f"The rerun is {_amount(difference, unit)} {_direction(difference, metric)} than its parent "
                 f"on {name} ({values})")
    if metric.higher_is_better is None:  # counts and times: no seed noise to weigh
        return start + "."
    seeds = int(row["seeds"])
    if seeds < 2 or row["threshold"] is None or pd.isna(row["threshold"]):
        return (start + "; the parent has no sibling seeds in the store (finished runs with its settings and "
                "another seed), so the difference cannot be set against seed noise.")
    verdict = "the difference exceeds seed noise" if row["exceeds_noise"] else "not distinguishable from seed noise"
    if seeds == 2:
        spread = f"the parent's 2 seeds differ by {_amount(row['threshold'], unit)}"
        rule = "|difference| > the seeds' range"
    else:
        spread = f"the parent's {seeds} seeds have a standard deviation of {_amount(row['seed_std'], unit)}"
        rule = f"|difference| > {multiplier:g} × std = {_amount(row['threshold'], unit)}"
    return f"{start}; {spread}: {verdict} (rule: {rule})."


def paired_sentence(row: dict[str, Any], metric: Any, multiplier: float) -> str:
    """Reruns of one curriculum on several seeds against their parents, in one sentence,
    from the paired table's ``row`` of ``metric``; "" with fewer than 2 pairs."""
    pairs = int(row["pairs"])
    if pairs < 2 or row["mean_difference"] is None or pd.isna(row["mean_difference"]):
        return ""
    unit, name = metric.unit, metric.label[:1].lower() + metric.label[1:]
    difference = float(row["mean_difference"])
    change = ("no different" if difference == 0 else
              f"{_amount(difference, unit)} {_direction(difference, metric)}")
    verdict = "the difference exceeds seed noise" if row["exceeds_noise"] else "not distinguishable from seed noise"
    return (f"Over {pairs} seeds, the reruns of this curriculum average {metric_value(row['rerun_mean'], unit)} "
            f"on {name} against their parents' {metric_value(row['parent_mean'], unit)}: {change} "
            f"(paired, standard error {_amount(row['std_error'], unit)}): {verdict} "
            f"(rule: |mean difference| > {multiplier:g} × standard error = {_amount(row['threshold'], unit)}).")


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


def density_note(total: int, x_bins: int, y_bins: int) -> str:
    """The density's subtitle: "all 1,000,000 samples in 100 × 100 bins"."""
    return f"all {total:,} samples in {x_bins} × {y_bins} bins"


def density_caption(total: int, threshold: int, max_bins: int, max_points: int) -> str:
    """What the density shows and how much reaches the browser."""
    return (f"Every one of the {total:,} samples is counted in DuckDB (runs over {threshold:,} samples are drawn "
            f"as a density): the browser gets at most {max_bins:,} bins, never the points. Drag a box (box tool) "
            f"to see the samples inside it: at most {max_points:,} of them are drawn.")


def region_title(variability: tuple[float, float], confidence: tuple[float, float]) -> str:
    """"Region: variability 0.100–0.200, confidence 0.400–0.600"."""
    return (f"Region: variability {variability[0]:.3f}–{variability[1]:.3f}, "
            f"confidence {confidence[0]:.3f}–{confidence[1]:.3f}")


def region_caption(shown: int, total: int, max_points: int) -> str:
    """"Showing 5,000 of 83,412 samples in this region (a random sample, at most 5,000 are drawn)."."""
    if shown >= total:
        return f"Showing all {total:,} samples in this region (at most {max_points:,} are drawn)."
    return (f"Showing {shown:,} of {total:,} samples in this region (a random sample chosen in DuckDB; at most "
            f"{max_points:,} are drawn): a selection holds the drawn points only.")


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
