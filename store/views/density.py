"""Million-point views: 2-D binned counts over every sample, and the samples of one box.

The data map (variability x, confidence y) and the score-agreement scatter (run A's score x,
run B's score y) of a big run are drawn from bins, not points: DuckDB counts *all* samples
per bin, with the flipped-label share and the mean of a colour score, and the browser gets
at most ``x_bins`` x ``y_bins`` numbers whatever the run's size. A box (x and y ranges) is
then drilled into: its total count and a deterministic random sample of at most
``max_points`` of its samples (hash of sample_id and ``seed``), which the dashboard draws as
the familiar points map (timings on 1 M samples: benchmarks/results/density.md).

**Rectangular bins, not hexagons.** A bin is ``floor((x - x_start) / width)`` per axis: one
integer key per axis, grouped by DuckDB in one pass; a box drawn along bin edges holds
exactly the samples of the bins inside it, so the counts of the density and of the
drill-down add up; and Plotly draws the grid as one ``Heatmap`` (a z matrix), where
hexagons would need a shape per bin and a box selection would cut them in half.

Bins are half-open ``[start, end)`` except the last on each axis, which also holds its
range's upper end (so the maximum sample is counted). Ranges default to the data's own
minimum and maximum; a degenerate range (every value equal) is widened to one unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.views.connection import cursor, register_summary, score_column, summary_cursor
from store.views.results import Sampled

#: Bins per axis, at most: the density's answer is never over MAX_BINS_PER_AXIS ** 2 rows.
MAX_BINS_PER_AXIS = 200
#: Default bins per axis.
DEFAULT_BINS = 100
#: Points of one drilled-into box, at most, by default.
DEFAULT_REGION_POINTS = 5_000

#: The columns of ``Density.bins``.
BIN_COLUMNS = ("x_bin", "y_bin", "x_start", "x_end", "y_start", "y_end",
               "samples", "labelled", "flipped", "flipped_share", "color_mean")

# The data map's points: every sample with a confidence and a variability.
_MAP_POINTS = """
    SELECT sample_id, label, original_label, label_noisy,
           variability::DOUBLE AS x, confidence::DOUBLE AS y, {color}::DOUBLE AS color_value
    FROM summary
    WHERE confidence IS NOT NULL AND NOT isnan(confidence)
      AND variability IS NOT NULL AND NOT isnan(variability)
"""
# Two runs' values of one score joined on sample_id; label_noisy is run A's.
_AGREEMENT_POINTS = """
    SELECT a.sample_id, a.label_noisy, a.{column}::DOUBLE AS x, b.{column}::DOUBLE AS y,
           NULL::DOUBLE AS color_value
    FROM summary_a AS a JOIN summary_b AS b USING (sample_id)
    WHERE a.{column} IS NOT NULL AND b.{column} IS NOT NULL
      AND NOT isnan(a.{column}::DOUBLE) AND NOT isnan(b.{column}::DOUBLE)
"""


@dataclass(frozen=True)
class Density:
    """Counts of samples per rectangular bin over ``x_range`` x ``y_range``.

    ``bins`` holds the non-empty bins only (``BIN_COLUMNS``): their indices and edges,
    ``samples``, ``labelled`` (samples whose label_noisy is known), ``flipped``,
    ``flipped_share`` (flipped / labelled; NaN without a labelled sample) and
    ``color_mean`` (mean of the colour score over the bin's samples that have one; NaN
    where none has, and always for agreement densities).
    """

    bins: pd.DataFrame
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    x_bins: int
    y_bins: int
    #: samples counted (the sum of ``bins.samples``)
    total: int
    #: samples whose flipped flag is known (0: the run has no label_noisy)
    labelled: int

    @property
    def x_width(self) -> float:
        return (self.x_range[1] - self.x_range[0]) / self.x_bins

    @property
    def y_width(self) -> float:
        return (self.y_range[1] - self.y_range[0]) / self.y_bins


def _check_bins(x_bins: int, y_bins: int) -> None:
    for name, value in (("x_bins", x_bins), ("y_bins", y_bins)):
        if not 1 <= int(value) <= MAX_BINS_PER_AXIS:
            raise ValueError(f"{name} must be between 1 and {MAX_BINS_PER_AXIS}, got {value}")


def _check_box(x_range: tuple[float, float], y_range: tuple[float, float], max_points: int) -> None:
    for name, (low, high) in (("x range", x_range), ("y range", y_range)):
        if not (np.isfinite(low) and np.isfinite(high)) or low > high:
            raise ValueError(f"the {name} must be two finite numbers, low <= high; got {low}, {high}")
    if int(max_points) < 0:
        raise ValueError(f"max_points must be >= 0, got {max_points}")


def _axis_range(low: float | None, high: float | None) -> tuple[float, float]:
    if low is None or high is None:
        return 0.0, 1.0
    low, high = float(low), float(high)
    if high <= low:
        return low - 0.5, low + 0.5
    return low, high


def _density(con: duckdb.DuckDBPyConnection, points_sql: str, x_bins: int, y_bins: int,
             x_range: tuple[float, float] | None, y_range: tuple[float, float] | None) -> Density:
    """Bin ``points_sql`` (columns x, y, label_noisy, color_value) on ``con``."""
    for name, given in (("x range", x_range), ("y range", y_range)):
        if given is not None and not (np.isfinite(given[0]) and np.isfinite(given[1]) and given[0] < given[1]):
            raise ValueError(f"the {name} must be two finite numbers, low < high; got {given[0]}, {given[1]}")
    if x_range is None or y_range is None:
        low_x, high_x, low_y, high_y = con.execute(
            f"WITH points AS ({points_sql}) SELECT min(x), max(x), min(y), max(y) FROM points").fetchone()
        x_range = x_range or _axis_range(low_x, high_x)
        y_range = y_range or _axis_range(low_y, high_y)
    parameters = {"x0": float(x_range[0]), "x1": float(x_range[1]), "y0": float(y_range[0]),
                  "y1": float(y_range[1]), "nx": int(x_bins), "ny": int(y_bins),
                  "dx": (x_range[1] - x_range[0]) / x_bins, "dy": (y_range[1] - y_range[0]) / y_bins}
    bins = con.execute(
        f"""
        WITH points AS ({points_sql}),
        keyed AS (
            SELECT least(floor((x - $x0) / $dx), $nx - 1)::INTEGER AS x_bin,
                   least(floor((y - $y0) / $dy), $ny - 1)::INTEGER AS y_bin,
                   label_noisy, color_value
            FROM points
            WHERE x BETWEEN $x0 AND $x1 AND y BETWEEN $y0 AND $y1
        )
        SELECT x_bin, y_bin,
               $x0 + x_bin * $dx AS x_start, $x0 + (x_bin + 1) * $dx AS x_end,
               $y0 + y_bin * $dy AS y_start, $y0 + (y_bin + 1) * $dy AS y_end,
               count(*) AS samples,
               count(label_noisy) AS labelled,
               count(*) FILTER (WHERE label_noisy) AS flipped,
               avg(color_value) FILTER (WHERE NOT isnan(color_value)) AS color_mean
        FROM keyed
        GROUP BY x_bin, y_bin
        ORDER BY y_bin, x_bin
        """,
        parameters,
    ).df()
    for column in ("samples", "labelled", "flipped"):
        bins[column] = bins[column].astype("int64")
    labelled = bins["labelled"].to_numpy()
    bins["flipped_share"] = np.where(labelled > 0, bins["flipped"] / np.maximum(labelled, 1), np.nan)
    bins["color_mean"] = bins["color_mean"].astype(float)
    return Density(bins[list(BIN_COLUMNS)], (float(x_range[0]), float(x_range[1])),
                   (float(y_range[0]), float(y_range[1])), int(x_bins), int(y_bins),
                   int(bins["samples"].sum()), int(bins["labelled"].sum()))


def _box_points(con: duckdb.DuckDBPyConnection, points_sql: str, columns: str,
                x_range: tuple[float, float], y_range: tuple[float, float], max_points: int, seed: int) -> Sampled:
    """The samples of ``points_sql`` inside the box (inclusive): their count and at most
    ``max_points`` of them (a hash sample), in sample_id order."""
    box = {"x_low": float(x_range[0]), "x_high": float(x_range[1]),
           "y_low": float(y_range[0]), "y_high": float(y_range[1])}
    inside = "x BETWEEN $x_low AND $x_high AND y BETWEEN $y_low AND $y_high"
    total = int(con.execute(f"WITH points AS ({points_sql}) SELECT count(*) FROM points WHERE {inside}",
                            box).fetchone()[0])
    frame = con.execute(
        f"WITH points AS ({points_sql}) SELECT {columns} FROM points WHERE {inside} "
        "ORDER BY hash(sample_id, $seed) LIMIT $limit",
        {**box, "seed": int(seed), "limit": int(max_points)},
    ).df()
    frame = frame.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return Sampled(frame, total, "all" if len(frame) == total else "random sample")


def map_density(store: Store, run_id: str, color: str = "correctness", x_bins: int = DEFAULT_BINS,
                y_bins: int = DEFAULT_BINS, x_range: tuple[float, float] | None = None,
                y_range: tuple[float, float] | None = None) -> Density:
    """The data map as bins: variability (x) against confidence (y) of every sample that has
    both, with the flipped-label share and the mean of ``color`` (a registered score) per bin."""
    _check_bins(x_bins, y_bins)
    points_sql = _MAP_POINTS.format(color=score_column(color))
    con = summary_cursor(store, run_id)
    try:
        return _density(con, points_sql, x_bins, y_bins, x_range, y_range)
    except duckdb.Error as error:
        raise StoreError(f"cannot bin the data map of run {run_id!r}: {error}") from error
    finally:
        con.close()


def map_region_points(store: Store, run_id: str, color: str, variability_range: tuple[float, float],
                      confidence_range: tuple[float, float], max_points: int = DEFAULT_REGION_POINTS,
                      seed: int = 0) -> Sampled:
    """The data map's samples with variability and confidence inside the ranges (inclusive).

    ``total`` counts all of them; the frame holds at most ``max_points`` (a deterministic
    hash sample) with the columns of ``store.views.run.data_map``: sample_id, label,
    original_label, label_noisy, confidence, variability, color_value.
    """
    _check_box(variability_range, confidence_range, max_points)
    points_sql = _MAP_POINTS.format(color=score_column(color))
    columns = ("sample_id, label, original_label, label_noisy, y AS confidence, x AS variability, color_value")
    con = summary_cursor(store, run_id)
    try:
        return _box_points(con, points_sql, columns, variability_range, confidence_range, max_points, seed)
    except duckdb.Error as error:
        raise StoreError(f"cannot read a region of the data map of run {run_id!r}: {error}") from error
    finally:
        con.close()


def _agreement_cursor(store: Store, run_a: str, run_b: str) -> duckdb.DuckDBPyConnection:
    con = cursor()
    for name, run_id in (("summary_a", run_a), ("summary_b", run_b)):
        register_summary(con, store, run_id, name)
    return con


def agreement_density(store: Store, run_a: str, run_b: str, score: str, x_bins: int = DEFAULT_BINS,
                      y_bins: int = DEFAULT_BINS) -> Density:
    """``score`` in run A (x) against run B (y), binned over every sample scored in both
    (joined on sample_id); the flipped share follows run A's label_noisy."""
    _check_bins(x_bins, y_bins)
    points_sql = _AGREEMENT_POINTS.format(column=score_column(score))
    con = _agreement_cursor(store, run_a, run_b)
    try:
        return _density(con, points_sql, x_bins, y_bins, None, None)
    except duckdb.Error as error:
        raise StoreError(f"cannot bin the agreement of runs {run_a!r} and {run_b!r}: {error}") from error
    finally:
        con.close()


def agreement_region_points(store: Store, run_a: str, run_b: str, score: str, a_range: tuple[float, float],
                            b_range: tuple[float, float], max_points: int = DEFAULT_REGION_POINTS,
                            seed: int = 0) -> Sampled:
    """The samples whose ``score`` lies in ``a_range`` in run A and ``b_range`` in run B:
    their count and at most ``max_points`` of them (columns sample_id, label_noisy, value_a,
    value_b, as ``score_agreement``'s points)."""
    _check_box(a_range, b_range, max_points)
    points_sql = _AGREEMENT_POINTS.format(column=score_column(score))
    con = _agreement_cursor(store, run_a, run_b)
    try:
        return _box_points(con, points_sql, "sample_id, label_noisy, x AS value_a, y AS value_b",
                           a_range, b_range, max_points, seed)
    except duckdb.Error as error:
        raise StoreError(f"cannot read a region of the agreement of runs {run_a!r} and {run_b!r}: "
                         f"{error}") from error
    finally:
        con.close()
