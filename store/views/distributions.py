"""How a run's samples spread: score histograms binned in DuckDB, and counts per
cartography region and per number of forgetting events (flipped labels counted apart)."""

from __future__ import annotations

import math

import duckdb
import pandas as pd

from store.errors import StoreError
from store.layout import Store
from store.scores import REGIONS
from store.views.connection import query_summary, score_column, summary_cursor
from store.views.results import Histogram
from store.views.run import run_region_cutoffs

#: Scores whose values are whole numbers: histogram bins are one unit wide (or a multiple).
INTEGER_SCORES = frozenset({"forgetting_events", "first_learned_epoch"})


def region_counts(
    store: Store,
    run_id: str,
    ambiguous_variability: float | None = None,
    easy_confidence: float | None = None,
) -> pd.DataFrame:
    """Samples (and flipped labels) per cartography region, as ``store.cartography_region``
    cuts them; a cut-off not given is the run's own (``run_region_cutoffs``: per-run thirds)."""
    if ambiguous_variability is None or easy_confidence is None:
        cutoffs = run_region_cutoffs(store, run_id)
        if cutoffs is not None:
            ambiguous_variability = cutoffs.ambiguous_variability if ambiguous_variability is None \
                else ambiguous_variability
            easy_confidence = cutoffs.easy_confidence if easy_confidence is None else easy_confidence
    counts = pd.DataFrame({"region": list(REGIONS)})
    if ambiguous_variability is None or easy_confidence is None:  # nothing scored: no region
        counts[["samples", "flipped"]] = 0
        return counts
    frame = query_summary(
        store,
        run_id,
        """
        SELECT
            CASE
                WHEN variability > $ambiguous THEN $ambiguous_name
                WHEN confidence >= $easy THEN $easy_name
                ELSE $hard_name
            END AS region,
            count(*) AS samples,
            count(*) FILTER (WHERE label_noisy) AS flipped
        FROM summary
        WHERE confidence IS NOT NULL AND NOT isnan(confidence)
          AND variability IS NOT NULL AND NOT isnan(variability)
        GROUP BY ALL
        """,
        {
            "ambiguous": float(ambiguous_variability),
            "easy": float(easy_confidence),
            "easy_name": REGIONS[0],
            "ambiguous_name": REGIONS[1],
            "hard_name": REGIONS[2],
        },
    )
    counts = counts.merge(frame, on="region", how="left")
    counts[["samples", "flipped"]] = counts[["samples", "flipped"]].fillna(0).astype("int64")
    return counts


def score_histograms(store: Store, run_id: str, scores: list[str], bins: int = 40) -> dict[str, Histogram]:
    """Counts of each score in equal-width bins, binned in DuckDB; flipped labels counted apart.

    Whole-number scores (forgetting events, first-learned epoch) get bins one unit wide,
    or a whole multiple of it when the range is wider than ``bins``. One cursor, two
    queries for all the scores together.
    """
    if not scores:
        return {}
    values = {score: f"{score_column(score)}::DOUBLE" for score in scores}
    stats_sql = ", ".join(
        f"count(*) FILTER (WHERE {v} IS NULL OR isnan({v})) AS \"missing_{i}\", "
        f"min({v}) FILTER (WHERE NOT isnan({v})) AS \"low_{i}\", "
        f"max({v}) FILTER (WHERE NOT isnan({v})) AS \"high_{i}\""
        for i, v in enumerate(values.values())
    )
    con = summary_cursor(store, run_id)
    try:
        stats = con.execute(f"SELECT count(*) AS total, {stats_sql} FROM summary").df().iloc[0]
        total = int(stats["total"])
        plans: dict[str, tuple[float, float, int]] = {}
        parts, parameters = [], {}
        for i, (score, value) in enumerate(values.items()):
            if int(stats[f"missing_{i}"]) == total:
                continue
            low, high = float(stats[f"low_{i}"]), float(stats[f"high_{i}"])
            if score in INTEGER_SCORES:
                width = float(max(1, math.ceil((high - low + 1) / bins)))
                low -= 0.5
                last_bin = int((high - low) // width)
            else:
                width = (high - low) / bins if high > low else 1.0
                last_bin = bins - 1  # float rounding may put the maximum one bin past the end
            plans[score] = (low, width, last_bin)
            parameters.update({f"low_{i}": low, f"width_{i}": width, f"last_{i}": last_bin})
            parts.append(
                f"SELECT {i} AS score_index, "
                f"least(floor(({value} - $low_{i}) / $width_{i}), $last_{i})::BIGINT AS bin, "
                "count(*) AS samples, count(*) FILTER (WHERE label_noisy) AS flipped "
                f"FROM summary WHERE {value} IS NOT NULL AND NOT isnan({value}) GROUP BY bin"
            )
        counts = (con.execute(" UNION ALL ".join(parts), parameters).df() if parts
                  else pd.DataFrame(columns=["score_index", "bin", "samples", "flipped"]))
    except duckdb.Error as error:
        raise StoreError(f"cannot bin the scores of run {run_id!r}: {error}") from error
    finally:
        con.close()
    histograms = {}
    for i, score in enumerate(values):
        missing = int(stats[f"missing_{i}"])
        if score not in plans:
            empty = pd.DataFrame(columns=["bin_start", "bin_end", "samples", "flipped"])
            histograms[score] = Histogram(empty, score, missing, total)
            continue
        low, width, _ = plans[score]
        frame = counts[counts["score_index"] == i].sort_values("bin").reset_index(drop=True)
        frame["bin_start"] = low + frame["bin"] * width
        frame["bin_end"] = frame["bin_start"] + width
        histograms[score] = Histogram(
            frame[["bin_start", "bin_end", "samples", "flipped"]], score, missing, total)
    return histograms


def score_histogram(store: Store, run_id: str, score: str, bins: int = 40) -> Histogram:
    """One score's histogram (see :func:`score_histograms`)."""
    return score_histograms(store, run_id, [score], bins)[score]


def forgetting_counts(store: Store, run_id: str) -> pd.DataFrame:
    """Samples per number of forgetting events; never-learned samples in their own row.

    Columns ``forgetting_events`` (str: "0", "1", ..., "never learned"), ``samples``,
    ``flipped``. Never-learned samples are reported as such, never as a count (DESIGN.md).
    """
    frame = query_summary(
        store,
        run_id,
        """
        SELECT CASE WHEN never_learned THEN NULL ELSE forgetting_events END AS events,
               count(*) AS samples,
               count(*) FILTER (WHERE label_noisy) AS flipped
        FROM summary
        WHERE never_learned IS NOT NULL
        GROUP BY ALL
        ORDER BY events NULLS LAST
        """,
    )
    frame["forgetting_events"] = [
        "never learned" if pd.isna(events) else str(int(events)) for events in frame["events"]
    ]
    return frame[["forgetting_events", "samples", "flipped"]]
