"""Cached reads for the million-point views: the data map and the score-agreement scatter as
bins over every sample once a run is past ``density_threshold()`` samples, and the samples of
the box the user drills into (``store.views.density``).

Cached like ``dashboard.data``: every read takes the store root, the run id(s) and the run's
version as explicit arguments.
"""

from __future__ import annotations

import os

import streamlit as st

from store.layout import Store
from store.views import density as density_views
from store.views.density import DEFAULT_BINS, Density
from store.views.results import Sampled

__all__ = [
    "DENSITY_BINS", "DENSITY_THRESHOLD", "Density", "REGION_MAX_POINTS", "THRESHOLD_VARIABLE",
    "agreement_density", "agreement_region_points", "density_threshold", "map_density", "map_region_points",
]

#: Above this many samples the data map and the agreement scatter are drawn as bins; at or
#: below it every sample is a point (the points scatter's own cap, ``data.MAX_SCATTER_POINTS``).
DENSITY_THRESHOLD = 20_000
#: The environment variable that overrides ``DENSITY_THRESHOLD`` (a positive integer).
THRESHOLD_VARIABLE = "TRAINMAP_DENSITY_THRESHOLD"
#: Bins per axis of a density: the browser gets at most DENSITY_BINS² cells.
DENSITY_BINS = DEFAULT_BINS
#: Points of a drilled-into region sent to the browser, at most.
REGION_MAX_POINTS = 5_000


def density_threshold() -> int:
    """``DENSITY_THRESHOLD``, or the positive integer in ``$TRAINMAP_DENSITY_THRESHOLD``."""
    text = os.environ.get(THRESHOLD_VARIABLE, "").strip()
    if not text:
        return DENSITY_THRESHOLD
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{THRESHOLD_VARIABLE} must be a positive whole number of samples, got {text!r}")
    return value


@st.cache_data(show_spinner=False, max_entries=32)
def map_density(root: str, run_id: str, version: tuple, color: str, bins: int = DENSITY_BINS) -> Density:
    """The data map of every sample binned (``store.views.density.map_density``)."""
    del version
    return density_views.map_density(Store(root), run_id, color, bins, bins)


@st.cache_data(show_spinner=False, max_entries=32)
def map_region_points(root: str, run_id: str, version: tuple, color: str,
                      variability_range: tuple[float, float], confidence_range: tuple[float, float],
                      max_points: int = REGION_MAX_POINTS) -> Sampled:
    """The samples of a box of the data map: their count and at most ``max_points`` of them."""
    del version
    return density_views.map_region_points(Store(root), run_id, color, variability_range, confidence_range,
                                           max_points)


@st.cache_data(show_spinner=False, max_entries=32)
def agreement_density(root: str, run_a: str, version_a: tuple, run_b: str, version_b: tuple, score: str,
                      bins: int = DENSITY_BINS) -> Density:
    """Two runs' ``score`` binned over every sample scored in both."""
    del version_a, version_b
    return density_views.agreement_density(Store(root), run_a, run_b, score, bins, bins)


@st.cache_data(show_spinner=False, max_entries=32)
def agreement_region_points(root: str, run_a: str, version_a: tuple, run_b: str, version_b: tuple, score: str,
                            a_range: tuple[float, float], b_range: tuple[float, float],
                            max_points: int = REGION_MAX_POINTS) -> Sampled:
    """The samples of a box of the agreement density: their count and at most ``max_points``."""
    del version_a, version_b
    return density_views.agreement_region_points(Store(root), run_a, run_b, score, a_range, b_range, max_points)
