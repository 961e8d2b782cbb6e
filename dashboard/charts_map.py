"""Plotly builders for the data map as a tool and the per-layer curves: the region cut-offs
drawn on the map, the density of a million-point map or agreement scatter (one heatmap of
pre-computed bins, ``store.views.density``), the zoom onto a drilled-into region, and the
gradient norm of each layer over steps. Pure: no Streamlit calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: Line style of the cut-offs, and the names their shapes carry (tests find them by name).
CUTOFF_LINE = dict(color="#333", width=1.5, dash="dash")
AMBIGUOUS_SHAPE = "ambiguous cut-off"
EASY_SHAPE = "easy cut-off"
LAYOUT = dict(margin=dict(l=10, r=10, t=48, b=10), template="plotly_white", height=340)
#: What a density's bins can be coloured by: the column of the bins, and its colour scale.
DENSITY_COLOURS = {"samples": ("samples", "Viridis"), "flipped-label share": ("flipped_share", "Reds"),
                   "mean score": ("color_mean", "Viridis")}
#: The name of the density's invisible trace of bin centres (it makes the box tool available).
BIN_CENTRES = "bin centres"


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


def density_figure(bins: pd.DataFrame, x_bins: int, y_bins: int, x_range: tuple[float, float],
                   y_range: tuple[float, float], colour: str, title: str, x_title: str, y_title: str,
                   note: str = "", score_name: str = "score") -> go.Figure:
    """Pre-computed bins (``store.views.density.Density.bins``) as one heatmap of
    ``y_bins`` x ``x_bins`` cells: empty bins blank, the others coloured by ``colour`` (a key of
    ``DENSITY_COLOURS``; samples on a log10 scale). The hover gives each bin's samples,
    flipped-label share and mean score. An invisible point per non-empty bin centre makes
    the box tool available; the browser gets at most 2 · x_bins · y_bins numbers per value."""
    column, scale = DENSITY_COLOURS[colour]
    x_width = (x_range[1] - x_range[0]) / x_bins
    y_width = (y_range[1] - y_range[0]) / y_bins
    x_centres = x_range[0] + (np.arange(x_bins) + 0.5) * x_width
    y_centres = y_range[0] + (np.arange(y_bins) + 0.5) * y_width
    # float32: half the bytes of the figure's base64 arrays; counts stay exact up to 2**24
    z = np.full((y_bins, x_bins), np.nan, dtype=np.float32)
    hover = np.full((y_bins, x_bins, 3), np.nan, dtype=np.float32)
    rows, cols = bins["y_bin"].to_numpy(int), bins["x_bin"].to_numpy(int)
    values = bins[column].to_numpy(float)
    z[rows, cols] = np.log10(values) if colour == "samples" else values
    hover[rows, cols] = bins[["samples", "flipped_share", "color_mean"]].to_numpy(float)
    colorbar = dict(title=colour if colour != "mean score" else f"mean {score_name}", thickness=12)
    if colour == "samples" and len(bins):
        ticks = list(range(0, int(np.ceil(np.log10(values.max()))) + 1))
        colorbar.update(tickvals=ticks, ticktext=[f"{10 ** tick:,}" for tick in ticks])
    figure = go.Figure(go.Heatmap(
        x=x_centres, y=y_centres, z=z, customdata=hover, colorscale=scale, colorbar=colorbar,
        zmin=0 if colour == "flipped-label share" else None, zmax=1 if colour == "flipped-label share" else None,
        hoverongaps=False, name="density",
        hovertemplate=(f"{x_title} %{{x:.3f}}<br>{y_title} %{{y:.3f}}<br>%{{customdata[0]:,}} samples"
                       + ("<br>flipped %{customdata[1]:.1%}" if bins["labelled"].sum() else "")
                       + (f"<br>mean {score_name} %{{customdata[2]:.3f}}" if bins["color_mean"].notna().any()
                          else "") + "<extra></extra>"),
    ))
    figure.add_trace(go.Scattergl(
        x=x_centres[cols].astype(np.float32), y=y_centres[rows].astype(np.float32), mode="markers",
        name=BIN_CENTRES, marker=dict(size=4, opacity=0), hoverinfo="skip", showlegend=False))
    text = title + (f"<br><sup>{note}</sup>" if note else "")
    figure.update_layout(title=dict(text=text, x=0.0, xanchor="left"), dragmode="select",
                         **{**LAYOUT, "height": 480})
    figure.update_xaxes(title_text=x_title, range=list(x_range))
    figure.update_yaxes(title_text=y_title, range=list(y_range))
    return figure


def zoom_to(figure: go.Figure, x_range: tuple[float, float], y_range: tuple[float, float],
            title: str | None = None) -> go.Figure:
    """Show only ``x_range`` x ``y_range`` of ``figure`` (with 2 % margins), retitled if given."""
    x_pad = 0.02 * max(x_range[1] - x_range[0], 1e-9)
    y_pad = 0.02 * max(y_range[1] - y_range[0], 1e-9)
    figure.update_xaxes(range=[x_range[0] - x_pad, x_range[1] + x_pad])
    figure.update_yaxes(range=[y_range[0] - y_pad, y_range[1] + y_pad])
    if title is not None:
        note = figure.layout.title.text.split("<br>", 1)[1] if "<br>" in (figure.layout.title.text or "") else ""
        figure.update_layout(title=dict(text=title + (f"<br>{note}" if note else ""), x=0.0, xanchor="left"))
    return figure
