"""Curriculum preview figures: pure ``arrays -> plotly Figure`` functions, no ``st.`` calls.

* ``weight_distributions_figure``: the weights of flipped and of clean samples as two
  overlaid histograms over the same bins, each normalised to its own count (so 800
  flipped samples are not drowned by 3,200 clean ones);
* ``class_effect_figure``: each class's share of the training weight beside its share of
  the samples, and the floor below which the page warns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.charts import CLEAN_COLOR, CURRICULUM_LAYOUT, FLIPPED_COLOR

#: histogram bins of the weight distributions
WEIGHT_BINS = 40


def weight_distributions_figure(weight: np.ndarray, flipped: np.ndarray | None) -> go.Figure:
    """Histograms of ``weight`` for flipped (``flipped`` True) and clean samples, overlaid on
    shared bins, as the percentage of each group; one histogram of all samples when
    ``flipped`` is None or marks none."""
    weight = np.asarray(weight, dtype=float)
    high = float(weight.max()) if len(weight) and weight.max() > 0 else 1.0
    size = high / WEIGHT_BINS
    # Bins centred on 0, size, ..., high: with edges on the values themselves (0 and 1 of a
    # hard curriculum) Plotly.js put every sample into the first bin.
    bins = dict(start=-size / 2, end=high + size / 2, size=size)
    figure = go.Figure()
    groups = [("all samples", np.ones(len(weight), dtype=bool), CLEAN_COLOR)]
    if flipped is not None and np.asarray(flipped).any():
        flipped = np.asarray(flipped, dtype=bool)
        groups = [("clean", ~flipped, CLEAN_COLOR), ("flipped", flipped, FLIPPED_COLOR)]
    for name, mask, colour in groups:
        figure.add_trace(go.Histogram(
            x=weight[mask], xbins=bins, histnorm="percent", name=f"{name} ({int(mask.sum()):,})",
            marker_color=colour, opacity=0.6,
        ))
    figure.update_layout(title="Weights (0 = pruned)", barmode="overlay", **CURRICULUM_LAYOUT)
    figure.update_xaxes(title_text="weight")
    figure.update_yaxes(title_text="% of the group")
    return figure


def class_effect_figure(effect: pd.DataFrame, floor: float) -> go.Figure:
    """Per class: share of the samples and share of the training weight (bars), with the
    classes below ``floor`` x their sample share marked in the flipped colour."""
    labels = effect["label"].astype(str)
    colours = np.where(effect["below_floor"].to_numpy(bool), FLIPPED_COLOR, CLEAN_COLOR)
    figure = go.Figure([
        go.Bar(x=labels, y=effect["sample_share"], name="share of samples", marker_color="#BAB0AC"),
        go.Bar(x=labels, y=effect["weight_share"], name="share of training weight", marker_color=colours),
        go.Scatter(x=labels, y=effect["sample_share"] * floor, mode="markers", name=f"floor ({floor:g} x share)",
                   marker=dict(symbol="line-ew-open", size=18, color="black")),
    ])
    figure.update_layout(title="Per class: training weight vs samples", barmode="group", **CURRICULUM_LAYOUT)
    figure.update_xaxes(title_text="class", type="category")
    figure.update_yaxes(title_text="share", tickformat=".0%")
    return figure
