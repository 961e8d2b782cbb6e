"""DuckDB queries behind the dashboard: small, aggregated answers from big runs.

A run of 50,000 samples x 200 epochs has 10 M presentation rows; pandas alone needs
~1.3 s and ~0.5 GB to load it (DESIGN.md). So every view here asks DuckDB for what a
chart shows and nothing more: binned histograms, region counts, a deterministic random
sample of at most ``max_points`` points for a scatter, bucketed step curves, top-k
tables. Per-sample views read the materialised ``summary.parquet`` of a compacted run;
for a run that is still training the summary is derived from its live segments
(``store/sql/summary.sql``) once per version of its files.

Score names are checked against the registry ``store.scores.SCORES`` before they are
used as column names; every value goes in as a ``$parameter``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from store.errors import StoreError
from store.layout import Store
from store.queries import epoch_metrics, run_summary
from store.scores import (
    DEFAULT_AMBIGUOUS_VARIABILITY,
    DEFAULT_EASY_CONFIDENCE,
    REGIONS,
    SCORES,
    get_score,
)

logger = logging.getLogger(__name__)

#: Scores whose values are whole numbers: histogram bins are one unit wide (or a multiple).
INTEGER_SCORES = frozenset({"forgetting_events", "first_learned_epoch"})

#: Default cap on points sent to the browser by one scatter.
DEFAULT_MAX_POINTS = 20_000


@dataclass(frozen=True)
class Sampled:
    """A frame that may hold only part of the rows: ``shown`` of ``total``."""

    frame: pd.DataFrame
    total: int
    #: how the shown rows were chosen ("all", "random sample", "bucket means", ...)
    method: str

    @property
    def shown(self) -> int:
        return len(self.frame)

    @property
    def is_partial(self) -> bool:
        return self.shown < self.total


@dataclass(frozen=True)
class Histogram:
    """Counts per bin (``bin_start``, ``bin_end``, ``samples``, ``flipped``)."""

    bins: pd.DataFrame
    score: str
    #: samples with no value for the score (not recorded, or never learned)
    missing: int
    total: int


@dataclass(frozen=True)
class Agreement:
    """How two runs agree on one score, sample by sample."""

    score: str
    #: Spearman rank correlation over samples scored in both runs (ties: average ranks)
    spearman: float | None
    common_samples: int
    top_k: int
    #: fraction of the k hardest samples of run A that are among the k hardest of run B
    top_k_overlap: float | None
    points: Sampled


# -- versions and the per-sample summary ---------------------------------------------


def run_version(store: Store, run_id: str) -> tuple[tuple[str, int, int], ...]:
    """(relative path, mtime_ns, size) of every file of a run: changes when it is written.

    Cheap (one directory walk); dashboards key their caches on it so that a live run
    refreshes and a finished one is read once.
    """
    run_path = store.run_dir(run_id)
    entries = []
    for path in sorted(run_path.rglob("*")):
        if path.name.endswith(".tmp"):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # a segment compacted away while we listed
            continue
        if path.is_file():
            entries.append((str(path.relative_to(run_path)), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


@functools.lru_cache(maxsize=8)
def _live_summary(root: str, run_id: str, version: tuple) -> pa.Table:
    del version  # part of the cache key only
    frame = run_summary(Store(root), run_id)
    return pa.Table.from_pandas(frame, preserve_index=False)


#: One in-memory database per process; each query runs on its own cursor (a cheap,
#: thread-safe connection to it) with the run's files registered cursor-locally.
_DATABASE = duckdb.connect()


def _cursor() -> duckdb.DuckDBPyConnection:
    return _DATABASE.cursor()


def _register_summary(con: duckdb.DuckDBPyConnection, store: Store, run_id: str, name: str) -> None:
    """Make ``name`` the run's per-sample summary on this cursor (materialised or live)."""
    materialised = store.run_dir(run_id) / "summary.parquet"
    if materialised.exists():
        con.register(name, con.read_parquet(str(materialised)))
    else:
        con.register(name, _live_summary(str(store.root), run_id, run_version(store, run_id)))


def _summary_connection(store: Store, run_id: str) -> duckdb.DuckDBPyConnection:
    """A cursor with a view ``summary``: one row per training sample of the run."""
    con = _cursor()
    _register_summary(con, store, run_id, "summary")
    return con


def _query(store: Store, run_id: str, sql: str, parameters: dict[str, Any] | None = None) -> pd.DataFrame:
    con = _summary_connection(store, run_id)
    try:
        return con.execute(sql, parameters or {}).df()
    except duckdb.Error as error:
        raise StoreError(f"dashboard query failed on run {run_id!r}: {error}") from error
    finally:
        con.close()


def _column(score: str) -> str:
    """The score's column name, quoted; only registered scores get here."""
    return f'"{get_score(score).name}"'


def _hardness_sql(score: str) -> str:
    """SQL for the registry's "larger is harder" key of ``score`` (see store.scores.hardness)."""
    spec = get_score(score)
    value = f"{_column(score)}::DOUBLE"
    key = value if spec.higher_is_harder else f"-{value}"
    if spec.never_learned_hardest:
        key = f"CASE WHEN never_learned THEN 'inf'::DOUBLE ELSE {key} END"
    return key


# -- run-level views -----------------------------------------------------------------


def sample_count(store: Store, run_id: str) -> int:
    """Training samples of the run (rows of its summary)."""
    return int(_query(store, run_id, "SELECT count(*) AS n FROM summary")["n"].iloc[0])


def recorded_scores(store: Store, run_id: str) -> list[str]:
    """Registered scores that have at least one value in this run (e.g. no GraNd unless scheduled)."""
    names = list(SCORES)
    selects = ", ".join(
        f"count({_column(name)}) FILTER (WHERE NOT isnan({_column(name)}::DOUBLE)) AS \"{name}\""
        for name in names
    )
    counts = _query(store, run_id, f"SELECT {selects} FROM summary").iloc[0]
    return [name for name in names if int(counts[name]) > 0]


def step_curves(store: Store, run_id: str, max_points: int = 2_000) -> Sampled:
    """Loss, gradient norm and learning rate per step; bucket means past ``max_points`` steps."""
    files = store.table_files(run_id, "steps")
    empty = pd.DataFrame(columns=["step", "epoch", "loss", "grad_norm", "lr"])
    if not files:
        return Sampled(empty, 0, "all")
    con = _cursor()
    try:
        con.register("steps", con.read_parquet([str(path) for path in files]))
        total = int(con.execute("SELECT count(*) FROM steps").fetchone()[0])
        if total <= max_points:
            frame = con.execute(
                "SELECT step, epoch, loss, grad_norm, lr FROM steps ORDER BY step"
            ).df()
            return Sampled(frame, total, "all")
        frame = con.execute(
            """
            WITH bounds AS (SELECT min(step) AS low, max(step) AS high FROM steps)
            SELECT
                min(step) AS step, min(epoch) AS epoch, avg(loss) AS loss,
                avg(grad_norm) AS grad_norm, avg(lr) AS lr
            FROM steps, bounds
            GROUP BY floor((step - low) * $buckets / (high - low + 1))
            ORDER BY step
            """,
            {"buckets": int(max_points)},
        ).df()
        return Sampled(frame, total, "bucket means")
    except duckdb.Error as error:
        raise StoreError(f"cannot read the steps of run {run_id!r}: {error}") from error
    finally:
        con.close()


def data_map(
    store: Store,
    run_id: str,
    color: str = "correctness",
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> Sampled:
    """Dataset-cartography points: variability, confidence and ``color`` per sample.

    At most ``max_points`` samples, a deterministic random sample (hash of sample_id and
    ``seed``) when there are more. Samples not presented yet are left out.
    """
    color_column = _column(color)
    where = "confidence IS NOT NULL AND NOT isnan(confidence)"
    total = int(_query(store, run_id, f"SELECT count(*) AS n FROM summary WHERE {where}")["n"].iloc[0])
    frame = _query(
        store,
        run_id,
        f"""
        SELECT sample_id, label, original_label, label_noisy, confidence, variability,
               {color_column}::DOUBLE AS color_value
        FROM summary
        WHERE {where}
        ORDER BY hash(sample_id, $seed)
        LIMIT $limit
        """,
        {"seed": int(seed), "limit": int(max_points)},
    )
    frame = frame.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return Sampled(frame, total, "all" if len(frame) == total else "random sample")


def region_counts(
    store: Store,
    run_id: str,
    ambiguous_variability: float = DEFAULT_AMBIGUOUS_VARIABILITY,
    easy_confidence: float = DEFAULT_EASY_CONFIDENCE,
) -> pd.DataFrame:
    """Samples (and flipped labels) per cartography region, as ``store.cartography_region`` cuts them."""
    frame = _query(
        store,
        run_id,
        """
        SELECT
            CASE
                WHEN variability >= $ambiguous THEN $ambiguous_name
                WHEN confidence >= $easy THEN $easy_name
                ELSE $hard_name
            END AS region,
            count(*) AS samples,
            count(*) FILTER (WHERE label_noisy) AS flipped
        FROM summary
        WHERE confidence IS NOT NULL AND NOT isnan(confidence)
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
    counts = pd.DataFrame({"region": list(REGIONS)}).merge(frame, on="region", how="left")
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
    values = {score: f"{_column(score)}::DOUBLE" for score in scores}
    stats_sql = ", ".join(
        f"count(*) FILTER (WHERE {v} IS NULL OR isnan({v})) AS \"missing_{i}\", "
        f"min({v}) FILTER (WHERE NOT isnan({v})) AS \"low_{i}\", "
        f"max({v}) FILTER (WHERE NOT isnan({v})) AS \"high_{i}\""
        for i, v in enumerate(values.values())
    )
    con = _summary_connection(store, run_id)
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


def summary_overview(store: Store, run_id: str) -> dict[str, Any]:
    """samples, sample_id_min, sample_id_max and recorded_scores of a run, in one query."""
    names = list(SCORES)
    counts = ", ".join(
        f"count({_column(name)}) FILTER (WHERE NOT isnan({_column(name)}::DOUBLE)) AS \"{name}\""
        for name in names
    )
    row = _query(store, run_id, "SELECT count(*) AS samples, min(sample_id) AS low, "
                 f"max(sample_id) AS high, {counts} FROM summary").iloc[0]
    samples = int(row["samples"])
    return {
        "samples": samples,
        "sample_id_min": None if samples == 0 else int(row["low"]),
        "sample_id_max": None if samples == 0 else int(row["high"]),
        "recorded_scores": [name for name in names if int(row[name]) > 0],
    }


def forgetting_counts(store: Store, run_id: str) -> pd.DataFrame:
    """Samples per number of forgetting events; never-learned samples in their own row.

    Columns ``forgetting_events`` (str: "0", "1", ..., "never learned"), ``samples``,
    ``flipped``. Never-learned samples are reported as such, never as a count (DESIGN.md).
    """
    frame = _query(
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


TABLE_COLUMNS = ("loss", "el2n", "forgetting_events", "confidence", "aum")


def hardest_samples(store: Store, run_id: str, score: str, limit: int = 20) -> pd.DataFrame:
    """The ``limit`` hardest samples by ``score``, in the registry's direction.

    Never-learned samples come first for scores that say so; samples without a value last;
    ties keep sample_id order (as ``store.rank_hardest``).
    """
    columns = ["sample_id", "label", "original_label", "label_noisy", get_score(score).name]
    columns += [name for name in TABLE_COLUMNS if name not in columns]
    columns += ["never_learned"]
    select = ", ".join(f'"{name}"' for name in columns)
    key = _hardness_sql(score)
    return _query(
        store,
        run_id,
        f"""
        SELECT {select}
        FROM summary
        ORDER BY CASE WHEN isnan({key}) THEN NULL ELSE {key} END DESC NULLS LAST, sample_id
        LIMIT $limit
        """,
        {"limit": int(limit)},
    )


def sample_record(store: Store, run_id: str, sample_id: int) -> dict[str, Any] | None:
    """One sample's summary row (labels and every score), or None if the run lacks it."""
    frame = _query(
        store, run_id, "SELECT * FROM summary WHERE sample_id = $sample_id",
        {"sample_id": int(sample_id)},
    )
    if frame.empty:
        return None
    return frame.iloc[0].to_dict()


def sample_id_range(store: Store, run_id: str) -> tuple[int, int] | None:
    frame = _query(store, run_id, "SELECT min(sample_id) AS low, max(sample_id) AS high FROM summary")
    if frame["low"].isna().iloc[0]:
        return None
    return int(frame["low"].iloc[0]), int(frame["high"].iloc[0])


# -- comparing runs ------------------------------------------------------------------


def epoch_curves(store: Store, run_ids: list[str]) -> pd.DataFrame:
    """Per-epoch metrics of several runs stacked, with a ``run_id`` column."""
    frames = []
    for run_id in run_ids:
        frame = epoch_metrics(store, run_id)
        frame.insert(0, "run_id", run_id)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", "epoch", "train_loss", "train_accuracy",
                                     "val_loss", "val_accuracy", "time"])
    return pd.concat(frames, ignore_index=True)


def score_agreement(
    store: Store,
    run_a: str,
    run_b: str,
    score: str,
    top_fraction: float = 0.1,
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
) -> Agreement:
    """Per-sample agreement of ``score`` between two runs, joined on sample_id.

    Spearman's rho is the Pearson correlation of average ranks of the registry's hardness
    key (so never-learned samples rank hardest where the score says so); top-k overlap is
    |hardest_k(A) ∩ hardest_k(B)| / k with k = round(top_fraction · common samples).
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    column, key = _column(score), _hardness_sql(score)
    con = _cursor()
    try:
        for name, run_id in (("summary_a", run_a), ("summary_b", run_b)):
            _register_summary(con, store, run_id, name)
        con.execute(
            f"""
            CREATE TEMP TABLE joined AS
            WITH a AS (SELECT sample_id, label_noisy, {column}::DOUBLE AS value, {key} AS hardness
                       FROM summary_a),
                 b AS (SELECT sample_id, {column}::DOUBLE AS value, {key} AS hardness
                       FROM summary_b)
            SELECT a.sample_id, a.label_noisy, a.value AS value_a, b.value AS value_b,
                   a.hardness AS hardness_a, b.hardness AS hardness_b
            FROM a JOIN b USING (sample_id)
            WHERE a.hardness IS NOT NULL AND b.hardness IS NOT NULL
              AND NOT isnan(a.hardness) AND NOT isnan(b.hardness)
            """
        )
        common = int(con.execute("SELECT count(*) FROM joined").fetchone()[0])
        if common == 0:
            empty = pd.DataFrame(columns=["sample_id", "label_noisy", "value_a", "value_b"])
            return Agreement(score, None, 0, 0, None, Sampled(empty, 0, "all"))
        rho = con.execute(
            """
            WITH ranked AS (
                SELECT
                    rank() OVER (ORDER BY hardness_a)
                        + (count(*) OVER (PARTITION BY hardness_a) - 1) / 2.0 AS rank_a,
                    rank() OVER (ORDER BY hardness_b)
                        + (count(*) OVER (PARTITION BY hardness_b) - 1) / 2.0 AS rank_b
                FROM joined
            )
            SELECT corr(rank_a, rank_b) FROM ranked
            """
        ).fetchone()[0]
        top_k = max(1, round(top_fraction * common))
        overlap = con.execute(
            """
            WITH top_a AS (SELECT sample_id FROM joined
                           ORDER BY hardness_a DESC, sample_id LIMIT $k),
                 top_b AS (SELECT sample_id FROM joined
                           ORDER BY hardness_b DESC, sample_id LIMIT $k)
            SELECT count(*) FROM top_a JOIN top_b USING (sample_id)
            """,
            {"k": top_k},
        ).fetchone()[0]
        points = con.execute(
            """
            SELECT sample_id, label_noisy, value_a, value_b FROM joined
            WHERE value_a IS NOT NULL AND value_b IS NOT NULL
            ORDER BY hash(sample_id, $seed) LIMIT $limit
            """,
            {"seed": int(seed), "limit": int(max_points)},
        ).df()
        plotted = int(con.execute(
            "SELECT count(*) FROM joined WHERE value_a IS NOT NULL AND value_b IS NOT NULL"
        ).fetchone()[0])
    except duckdb.Error as error:
        raise StoreError(f"cannot compare runs {run_a!r} and {run_b!r}: {error}") from error
    finally:
        con.close()
    rho_value = None if rho is None or (isinstance(rho, float) and math.isnan(rho)) else float(rho)
    points = points.sort_values("sample_id", kind="stable").reset_index(drop=True)
    return Agreement(
        score,
        rho_value,
        common,
        top_k,
        overlap / top_k,
        Sampled(points, plotted, "all" if len(points) == plotted else "random sample"),
    )
