"""Plotly figure builders: a DataFrame in, a ``go.Figure`` out, no Streamlit calls.

Point scatters use WebGL (``Scattergl``: thousands of markers); lines use SVG
(``Scatter``: a line is one path however many points it joins, and every WebGL chart
costs the browser a drawing context of its own, drawn in software by a headless or
GPU-less browser; ``benchmarks/bench_pages.py`` measures it). Callers pass frames that are already sampled or
aggregated server-side (``store.views``), and the builders say so in the title when
the frame holds only part of the data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.charts_map import add_region_cutoffs

#: Colours: clean / flipped labels, and one per region.
CLEAN_COLOR = "#4C78A8"
FLIPPED_COLOR = "#E45756"
REGION_COLORS = {"easy-to-learn": "#54A24B", "ambiguous": "#F58518", "hard-to-learn": "#E45756"}
RUN_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D")

LAYOUT = dict(margin=dict(l=10, r=10, t=48, b=10), template="plotly_white", height=340)


def sampling_note(shown: int, total: int, unit: str = "samples", method: str = "random sample") -> str:
    """"showing 20,000 of 50,000 samples (random sample)", or "" when everything is shown."""
    if shown >= total:
        return ""
    return f"showing {shown:,} of {total:,} {unit} ({method})"


def _title(text: str, note: str = "") -> dict:
    if note:
        text = f"{text}<br><sup>{note}</sup>"
    return dict(text=text, x=0.0, xanchor="left")


def epoch_figure(epochs: pd.DataFrame, metric: str) -> go.Figure:
    """Train and validation ``metric`` ("loss" or "accuracy") per epoch."""
    figure = go.Figure()
    for split, dash in (("train", "solid"), ("val", "dot")):
        column = f"{split}_{metric}"
        if column in epochs and epochs[column].notna().any():
            figure.add_trace(go.Scatter(
                x=epochs["epoch"], y=epochs[column], mode="lines+markers",
                name="validation" if split == "val" else "train", line=dict(dash=dash),
            ))
    figure.update_layout(title=_title(metric.capitalize()), **LAYOUT)
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text=metric)
    return figure


def step_figure(steps: pd.DataFrame, column: str, title: str, note: str = "",
                log_y: bool = False) -> go.Figure:
    """One per-step series (loss, gradient norm, learning rate) against the step."""
    # gradient norms are recorded every n-th step only: draw the recorded ones, joined
    recorded = steps.loc[steps[column].notna()] if column in steps else steps
    figure = go.Figure(go.Scatter(x=recorded["step"], y=recorded[column], mode="lines", name=column))
    figure.update_layout(title=_title(title, note), showlegend=False, **LAYOUT)
    if recorded.empty and not steps.empty:  # e.g. a run recorded with --grad-norm-every 0
        figure.add_annotation(text="not recorded in this run", showarrow=False, xref="paper", yref="paper",
                              x=0.5, y=0.5)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=column.replace("_", " "), type="log" if log_y else "linear")
    return figure


def data_map_figure(points: pd.DataFrame, color: str, total: int | None = None,
                    method: str = "random sample", selected_sample: int | None = None,
                    cutoffs: tuple[float, float] | None = None) -> go.Figure:
    """Dataset cartography: variability (x) against confidence (y), coloured by ``color``.

    ``points`` has sample_id, label, original_label, label_noisy, confidence, variability,
    color_value. Clean labels are circles in one trace, flipped labels crosses in a second,
    the selected sample a ring in a third; ``customdata`` carries the sample_id.
    ``cutoffs`` (ambiguous variability, easy confidence) are drawn as dashed lines.
    """
    total = len(points) if total is None else total
    figure = go.Figure()
    colour_range = (points["color_value"].min(), points["color_value"].max()) if len(points) else (0, 1)
    # Sequences and per-sample losses have no class label: the hover then leaves it out.
    has_labels = bool(points["label"].notna().any()) if len(points) else False
    label_hover = "label %{customdata[1]} (original %{customdata[2]})<br>" if has_labels else ""
    for flipped, symbol, name in ((False, "circle", "given label"), (True, "x", "flipped label")):
        part = points[points["label_noisy"].fillna(False).astype(bool) == flipped]
        if flipped and part.empty:
            continue
        labels = [part[column].astype(object).where(part[column].notna(), None)
                  for column in ("label", "original_label")]
        figure.add_trace(go.Scattergl(
            x=part["variability"], y=part["confidence"], mode="markers", name=name,
            customdata=np.stack([part["sample_id"].astype(object), *labels], axis=-1)
            if len(part) else None,
            marker=dict(
                symbol=symbol, size=6 if flipped else 5, opacity=0.75,
                color=part["color_value"], colorscale="Viridis",
                cmin=colour_range[0], cmax=colour_range[1],
                colorbar=dict(title=color.replace("_", " "), thickness=12) if not flipped else None,
                showscale=not flipped,
            ),
            hovertemplate=("sample %{customdata[0]}<br>" + label_hover + "variability %{x:.3f}<br>"
                           "confidence %{y:.3f}<extra>" + name + "</extra>"),
        ))
    if selected_sample is not None:
        chosen = points[points["sample_id"] == selected_sample]
        if not chosen.empty:
            figure.add_trace(go.Scattergl(
                x=chosen["variability"], y=chosen["confidence"], mode="markers",
                name=f"sample {selected_sample}", hoverinfo="skip",
                marker=dict(symbol="circle-open", size=16, color="#111", line=dict(width=2)),
            ))
    note = sampling_note(len(points), total, method=method)
    figure.update_layout(title=_title("Data map", note), legend=dict(orientation="h", y=-0.15),
                         **{**LAYOUT, "height": 480})
    figure.update_xaxes(title_text="variability")
    figure.update_yaxes(title_text="confidence", range=[-0.02, 1.02])
    if cutoffs is not None:
        add_region_cutoffs(figure, *cutoffs)
    return figure


def histogram_figure(bins: pd.DataFrame, score: str, missing: int = 0) -> go.Figure:
    """Pre-binned counts (bin_start, bin_end, samples, flipped) as stacked bars."""
    figure = go.Figure()
    centers = (bins["bin_start"] + bins["bin_end"]) / 2
    widths = bins["bin_end"] - bins["bin_start"]
    clean = bins["samples"] - bins["flipped"]
    figure.add_trace(go.Bar(x=centers, y=clean, width=widths, name="given label",
                            marker_color=CLEAN_COLOR))
    if bins["flipped"].sum() > 0:
        figure.add_trace(go.Bar(x=centers, y=bins["flipped"], width=widths, name="flipped label",
                                marker_color=FLIPPED_COLOR))
    note = f"{missing:,} samples without a value" if missing else ""
    figure.update_layout(title=_title(score.replace("_", " "), note), barmode="stack",
                         bargap=0.02, showlegend=False, **{**LAYOUT, "height": 260})
    figure.update_xaxes(title_text=score.replace("_", " "))
    figure.update_yaxes(title_text="samples")
    return figure


def forgetting_figure(counts: pd.DataFrame) -> go.Figure:
    """Samples per number of forgetting events (a category axis, never learned last)."""
    figure = go.Figure()
    clean = counts["samples"] - counts["flipped"]
    figure.add_trace(go.Bar(x=counts["forgetting_events"], y=clean, name="given label",
                            marker_color=CLEAN_COLOR))
    if counts["flipped"].sum() > 0:
        figure.add_trace(go.Bar(x=counts["forgetting_events"], y=counts["flipped"],
                                name="flipped label", marker_color=FLIPPED_COLOR))
    figure.update_layout(title=_title("Forgetting events"), barmode="stack", **LAYOUT)
    figure.update_xaxes(title_text="forgetting events", type="category")
    figure.update_yaxes(title_text="samples")
    return figure


def region_figure(counts: pd.DataFrame) -> go.Figure:
    """Samples per cartography region (bars coloured by region)."""
    figure = go.Figure(go.Bar(
        x=counts["region"], y=counts["samples"], text=counts["samples"], textposition="auto",
        marker_color=[REGION_COLORS.get(region, CLEAN_COLOR) for region in counts["region"]],
    ))
    figure.update_layout(title=_title("Samples per region"), **{**LAYOUT, "height": 260})
    figure.update_xaxes(title_text="region")
    figure.update_yaxes(title_text="samples")
    return figure


def input_figure(x: np.ndarray, title: str) -> go.Figure:
    """A sample's input: a line for a 1-D signal, a heatmap for an image."""
    x = np.asarray(x)
    if x.ndim == 1:
        figure = go.Figure(go.Scatter(x=np.arange(len(x)), y=x, mode="lines+markers"))
        figure.update_xaxes(title_text="position")
        figure.update_yaxes(title_text="value")
    else:
        image = x.reshape(x.shape[-2], x.shape[-1]) if x.ndim > 2 else x
        figure = go.Figure(go.Heatmap(z=image, colorscale="Greys", showscale=False))
        figure.update_yaxes(autorange="reversed", scaleanchor="x", title_text="row")
        figure.update_xaxes(title_text="column")
    figure.update_layout(title=_title(title), **{**LAYOUT, "height": 300})
    return figure


#: The panels of a sample's trajectory, in order: (column, title, y range). A panel is drawn
#: only when the run recorded its column (a per-sample-loss run: loss alone).
TRAJECTORY_PANELS = (
    ("p_true", "p(given label)", (-0.05, 1.05)),
    ("loss", "loss", None),
    ("el2n", "EL2N", None),
    ("token_accuracy", "token accuracy", (-0.05, 1.05)),
    ("correct", "correct", (-0.1, 1.1)),
)


def trajectory_panels(trajectory: pd.DataFrame) -> list[tuple[str, str, tuple[float, float] | None]]:
    """The ``TRAJECTORY_PANELS`` whose column holds a value in ``trajectory``."""
    return [panel for panel in TRAJECTORY_PANELS
            if panel[0] in trajectory and trajectory[panel[0]].notna().any()]


def trajectory_figure(trajectory: pd.DataFrame, title: str = "Trajectory") -> go.Figure:
    """One sample over training: p_true, loss, EL2N, token accuracy (sequences) and
    correctness per epoch, one panel each for those recorded (at least the loss's)."""
    panels = trajectory_panels(trajectory) or [TRAJECTORY_PANELS[1]]
    figure = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.06,
                           subplot_titles=[label for _, label, _ in panels])
    for index, (column, label, y_range) in enumerate(panels, start=1):
        values = trajectory[column].astype("Float64").to_numpy(dtype=float, na_value=np.nan) \
            if column in trajectory else []
        figure.add_trace(go.Scatter(
            x=trajectory["epoch"], y=values, mode="lines+markers", name=label,
            line=dict(shape="hv") if column == "correct" else None,
        ), row=1, col=index)
        figure.update_xaxes(title_text="epoch", row=1, col=index)
        if y_range is not None:
            figure.update_yaxes(range=list(y_range), row=1, col=index)
        if column == "correct":
            figure.update_yaxes(tickvals=[0, 1], ticktext=["no", "yes"], row=1, col=index)
    figure.update_layout(title=_title(title), showlegend=False, **{**LAYOUT, "height": 280})
    return figure


def compare_epochs_figure(curves: pd.DataFrame, column: str, labels: dict[str, str]) -> go.Figure:
    """One per-epoch metric (e.g. val_accuracy) of several runs overlaid, one trace per run."""
    figure = go.Figure()
    for index, (run_id, part) in enumerate(curves.groupby("run_id", sort=False)):
        figure.add_trace(go.Scatter(
            x=part["epoch"], y=part[column], mode="lines+markers", name=labels.get(run_id, run_id),
            line=dict(color=RUN_COLORS[index % len(RUN_COLORS)]),
        ))
    pretty = column.replace("_", " ").replace("val ", "validation ")
    figure.update_layout(title=_title(pretty), legend=dict(orientation="h", y=-0.25), **LAYOUT)
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text=pretty)
    return figure


def compare_steps_figure(steps_by_run: Sequence[tuple[str, pd.DataFrame]], column: str) -> go.Figure:
    """A per-step series of several runs overlaid (already bucketed server-side)."""
    figure = go.Figure()
    for index, (label, steps) in enumerate(steps_by_run):
        figure.add_trace(go.Scatter(x=steps["step"], y=steps[column], mode="lines", name=label,
                                    line=dict(color=RUN_COLORS[index % len(RUN_COLORS)])))
    figure.update_layout(title=_title(column.replace("_", " ") + " per step"),
                         legend=dict(orientation="h", y=-0.25), **LAYOUT)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text=column.replace("_", " "))
    return figure


def agreement_figure(points: pd.DataFrame, score: str, label_a: str, label_b: str,
                     total: int | None = None, method: str = "random sample") -> go.Figure:
    """Score in run A (x) against run B (y), one point per sample; flipped labels marked."""
    total = len(points) if total is None else total
    figure = go.Figure()
    for flipped, symbol, name, color in ((False, "circle", "given label", CLEAN_COLOR),
                                         (True, "x", "flipped label", FLIPPED_COLOR)):
        part = points[points["label_noisy"].astype(bool) == flipped]
        if flipped and part.empty:
            continue
        figure.add_trace(go.Scattergl(
            x=part["value_a"], y=part["value_b"], mode="markers", name=name,
            customdata=part["sample_id"],
            marker=dict(symbol=symbol, size=5, opacity=0.6, color=color),
            hovertemplate="sample %{customdata}<br>A %{x:.3f}<br>B %{y:.3f}<extra></extra>",
        ))
    note = sampling_note(len(points), total, method=method)
    pretty = score.replace("_", " ")
    figure.update_layout(title=_title(f"{pretty}: run A vs run B", note),
                         legend=dict(orientation="h", y=-0.2), **{**LAYOUT, "height": 440})
    figure.update_xaxes(title_text=f"{pretty} — {label_a}")
    figure.update_yaxes(title_text=f"{pretty} — {label_b}")
    return figure


#: How the curriculum page's data map draws each weight group: colour, marker, size.
WEIGHT_GROUP_STYLES = {"kept": ("#9bbcd8", "circle", 4), "down-weighted": ("#f2a541", "diamond", 6),
                       "pruned": ("#d62728", "x", 6)}
CURRICULUM_LAYOUT = dict(height=420, margin=dict(l=40, r=10, t=40, b=40))


def weight_map_figure(points: pd.DataFrame, sizes: dict[str, int]) -> go.Figure:
    """The data map of what a curriculum keeps, down-weights and prunes.

    ``points`` has sample_id, confidence, variability, label_noisy and ``group`` (already
    sampled server-side, ``store.views.weight_map_points``); ``sizes`` the full size of each
    group, said in the legend. One WebGL trace per group; ``customdata`` carries the sample_id.
    """
    figure = go.Figure()
    for name, (colour, symbol, size) in WEIGHT_GROUP_STYLES.items():
        part = points[points["group"] == name]
        if part.empty:
            continue
        figure.add_trace(go.Scattergl(
            x=part["variability"], y=part["confidence"], mode="markers", name=f"{name} ({sizes[name]})",
            marker=dict(color=colour, symbol=symbol, size=size, opacity=0.8),
            customdata=np.stack([part["sample_id"], part["label_noisy"].astype(int)], axis=-1),
            hovertemplate="sample %{customdata[0]}<br>flipped %{customdata[1]}<extra>" + name + "</extra>",
        ))
    figure.update_layout(title="Data map: what the curriculum drops", legend=dict(orientation="h", y=-0.15),
                         **CURRICULUM_LAYOUT)
    figure.update_xaxes(title_text="variability")
    figure.update_yaxes(title_text="confidence", range=[-0.02, 1.02])
    return figure


def weight_loss_figure(loss: np.ndarray, weight: np.ndarray, bins: int = 40) -> go.Figure:
    """Where a curriculum's kept, down-weighted and pruned samples lie by mean loss: the
    data map's stand-in for runs without p(label) (a per-sample-loss run). One stacked
    histogram trace per weight group, coloured as on the data map, counts in the legend."""
    loss, weight = np.asarray(loss, dtype=float), np.asarray(weight, dtype=float)
    group = np.where(weight == 0, "pruned", np.where(weight < 1, "down-weighted", "kept"))
    finite = np.isfinite(loss)
    low, high = (loss[finite].min(), loss[finite].max()) if finite.any() else (0.0, 1.0)
    size = (high - low) / bins if high > low else 1.0
    figure = go.Figure()
    for name, (colour, _, _) in WEIGHT_GROUP_STYLES.items():
        values = loss[(group == name) & finite]
        if len(values) == 0:
            continue
        figure.add_trace(go.Histogram(x=values, name=f"{name} ({len(values)})", marker_color=colour,
                                      xbins=dict(start=low, end=high + size, size=size)))
    figure.update_layout(title="Loss: what the curriculum drops", barmode="stack",
                         legend=dict(orientation="h", y=-0.15), **CURRICULUM_LAYOUT)
    figure.update_xaxes(title_text="mean loss")
    figure.update_yaxes(title_text="samples")
    return figure
