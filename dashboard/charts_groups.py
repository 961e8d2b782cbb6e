"""Plotly figure builders for groups (a domain, a skill, a source): a DataFrame in, a
``go.Figure`` out, no Streamlit calls.

The frames are already aggregated in DuckDB (``store.views.groups``): bucket means of each
group's loss over steps, means per epoch, and five numbers per group for a box.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import LAYOUT, RUN_COLORS, sampling_note


def group_colors(groups: list[str]) -> dict[str, str]:
    """A colour per group name (sorted by name, repeating after eight), so that every figure
    of a run draws a group in the same colour."""
    return {group: RUN_COLORS[position % len(RUN_COLORS)] for position, group in enumerate(sorted(groups))}


def _title(text: str, note: str = "") -> dict:
    return dict(text=f"{text}<br><sup>{note}</sup>" if note else text, x=0.0, xanchor="left")


def group_loss_figure(curves: pd.DataFrame, total: int | None = None, groups: list[str] | None = None) -> go.Figure:
    """Mean loss of each group's presentations against the step, one line per group.

    ``curves`` has group, step, loss (``store.views.group_loss_curves``); ``total``: the
    (group, step) pairs they stand for, said in the title when the frame holds fewer points
    (bucket means); ``groups``: every group of the run (for the colours).
    """
    colors = group_colors(list(curves["group"].unique()) if groups is None else groups)
    figure = go.Figure()
    for group, rows in curves.groupby("group", sort=True):
        # SVG, not WebGL: a line is one path however many bucket means it joins, and each
        # WebGL chart costs the browser a context of its own (benchmarks/results/pages.md)
        figure.add_trace(go.Scatter(x=rows["step"], y=rows["loss"], mode="lines", name=str(group),
                                    line=dict(color=colors[group])))
    note = sampling_note(len(curves), len(curves) if total is None else total, "points",
                         "means over equal step buckets")
    figure.update_layout(title=_title("Loss per group and step", note), legend_title_text="group", **LAYOUT)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text="mean loss")
    return figure


def group_epoch_figure(epochs: pd.DataFrame, metric: str = "loss", groups: list[str] | None = None) -> go.Figure:
    """``metric`` (loss, accuracy, token_accuracy) of each group per epoch, one line per group;
    ``groups``: every group of the run (for the colours)."""
    colors = group_colors(list(epochs["group"].unique()) if groups is None else groups)
    figure = go.Figure()
    for group, rows in epochs.groupby("group", sort=True):
        figure.add_trace(go.Scatter(x=rows["epoch"], y=rows[metric], mode="lines+markers", name=str(group),
                                    line=dict(color=colors[group])))
    label = metric.replace("_", " ")
    figure.update_layout(title=_title(f"{label.capitalize()} per group and epoch"), legend_title_text="group",
                         **LAYOUT)
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text=f"mean {label}")
    return figure


def group_box_figure(boxes: pd.DataFrame, score: str, groups: list[str] | None = None) -> go.Figure:
    """Each group's spread of a per-sample ``score`` as a box: quartiles, median and mean,
    whiskers at the minimum and maximum (``store.views.group_score_boxes``). ``groups``: every
    group of the run, so that colours match its other figures when a group has no value."""
    colors = group_colors(list(boxes["group"]) if groups is None else groups)
    figure = go.Figure()
    for row in boxes.itertuples():
        figure.add_trace(go.Box(
            name=str(row.group), x=[str(row.group)], q1=[row.q1], median=[row.median], q3=[row.q3],
            lowerfence=[row.low], upperfence=[row.high], mean=[row.mean], boxpoints=False,
            marker_color=colors[row.group],
            hovertext=f"{row.samples:,} samples",
        ))
    label = score.replace("_", " ")
    figure.update_layout(title=_title(f"{label.capitalize()} per group", "per sample; whiskers: min and max"),
                         showlegend=False, **LAYOUT)
    figure.update_yaxes(title_text=label)
    return figure
