"""Plotly builders for the data map as a tool and the per-layer curves: the region cut-offs
drawn on the map, and the gradient norm of each layer over steps. Pure: no Streamlit calls."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

#: Line style of the cut-offs, and the names their shapes carry (tests find them by name).
CUTOFF_LINE = dict(color="#333", width=1.5, dash="dash")
AMBIGUOUS_SHAPE = "ambiguous cut-off"
EASY_SHAPE = "easy cut-off"
LAYOUT = dict(margin=dict(l=10, r=10, t=48, b=10), template="plotly_white", height=340)


def add_region_cutoffs(figure: go.Figure, ambiguous_variability: float, easy_confidence: float) -> go.Figure:
    """Draw the cartography cut-offs on a data map (x variability, y confidence): a vertical
    line at ``ambiguous_variability`` (ambiguous to its right) and, left of it, a horizontal
    line at ``easy_confidence`` (easy-to-learn above, hard-to-learn below); each region named."""
    figure.add_shape(type="line", name=AMBIGUOUS_SHAPE, xref="x", yref="paper",
                     x0=ambiguous_variability, x1=ambiguous_variability, y0=0, y1=1, line=CUTOFF_LINE)
    figure.add_shape(type="line", name=EASY_SHAPE, xref="x", yref="y",
                     x0=0, x1=ambiguous_variability, y0=easy_confidence, y1=easy_confidence, line=CUTOFF_LINE)
    labels = (
        ("easy-to-learn", ambiguous_variability / 2, min(easy_confidence + 0.5 * (1 - easy_confidence), 0.98)),
        ("hard-to-learn", ambiguous_variability / 2, easy_confidence / 2),
        ("ambiguous", ambiguous_variability, 0.5),
    )
    for text, x, y in labels:
        figure.add_annotation(text=f"<b>{text}</b>", x=x, y=y, xref="x", yref="y", showarrow=False,
                              xanchor="left" if text == "ambiguous" else "center", xshift=6 if text == "ambiguous" else 0,
                              font=dict(size=12, color="#333"), bgcolor="rgba(255,255,255,0.7)")
    return figure


def layer_grad_norm_figure(layers: pd.DataFrame, note: str = "") -> go.Figure:
    """Gradient norm of each layer (one line per layer, in layer order) against the step, log y.

    ``layers`` has step, layer, grad_norm (``store.views.run.layer_grad_norm_curves``).
    """
    figure = go.Figure()
    for layer, part in layers.groupby("layer", sort=True):
        part = part.sort_values("step")
        figure.add_trace(go.Scatter(x=part["step"], y=part["grad_norm"], mode="lines", name=str(layer)))
    title = "Gradient norm per layer" + (f"<br><sup>{note}</sup>" if note else "")
    figure.update_layout(title=dict(text=title, x=0.0, xanchor="left"),
                         legend=dict(orientation="h", y=-0.2), **{**LAYOUT, "height": 380})
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text="gradient norm", type="log")
    return figure
