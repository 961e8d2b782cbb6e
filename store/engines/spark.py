"""The per-sample summary computed by Apache Spark (``trainmap scores --engine spark``).

The same table as ``store.sample_summary`` (``store/sql/summary.sql``, averaged over runs),
written with Spark's DataFrame API from the definitions in DESIGN.md "Definitions":

- forgetting events (Toneva et al. 2019): correct at presentation t, incorrect at t + 1, in
  (epoch, step) order; NULL when correctness was not recorded. A sample never correct is
  flagged ``never_learned`` with a NULL ``first_learned_epoch``, never given a sentinel;
- dataset cartography (Swayamdipta et al. 2020): confidence = mean p_true, variability =
  population std of p_true, correctness = fraction of presentations correct;
- AUM (Pleiss et al. 2020): mean of (logit_y - max other logit), the ``margin`` column;
- loss, EL2N, GraNd, the last-layer GraNd and the token means over the chosen epochs only;
- over several runs every score is the mean over runs, ``never_learned`` holds only if no
  run learned the sample, ``presentations`` is the total, ``group_id`` the first run's.

Spark reads the files ``Store.table_files`` names for each run (the compacted file, or a
live run's segments), so it sees what the DuckDB path sees; a live run of several ranks
drops ``DistributedSampler``'s padding duplicates the same way (``schema.DEDUPLICATE_ON``:
the lowest rank's rows of each epoch and sample). Where Spark runs is Spark's own
configuration: ``local[*]`` by default, a ``master`` URL, ``MASTER`` or
``spark-defaults.conf``, or a Spark Connect server named by ``SPARK_REMOTE``. Executors
must see the store at the same path (a shared filesystem).

The result comes back as pandas with DuckDB's conventions: integers and booleans take a
nullable pandas dtype (``Int64``, ``boolean``) only where they hold missing values, and the
averaged columns have the dtypes ``sample_summary``'s pandas arithmetic gives them.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from functools import reduce
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.errors import StoreError
from store.layout import Store
from store.queries import ALL_EPOCHS, SEQUENCE_COLUMNS, SUMMARY, SUMMARY_MEAN_COLUMNS
from store.schema import DEDUPLICATE_ON, GRAND, PRESENTATIONS, SAMPLE_KEYS, SAMPLES

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How to get the engine when PySpark is missing.
SPARK_EXTRA = "pip install 'trainmap[spark]'"
#: PySpark's warning about the installed pandas version, moot here: no pandas passes through PySpark.
PANDAS_WARNING = "PySpark does not yet fully support pandas"
#: Words in Spark's errors when a listed file vanished (a live run compacted meanwhile).
VANISHED_FILE_MARKERS = ("FileNotFoundException", "PATH_NOT_FOUND", "FILE_NOT_EXIST")

#: Characters of Hadoop's glob patterns, which Spark expands in the paths it is given.
GLOB_CHARACTERS = re.compile(r"[\\*?\[\]{}]")
#: Spark SQL type names of the store's Arrow types.
SPARK_TYPES = {
    pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint", pa.float32(): "float",
    pa.float64(): "double", pa.bool_(): "boolean", pa.string(): "string",
}
#: The run tables the summary reads (besides ``samples.parquet``).
SUMMARY_TABLES = ("presentations", "grand", "sample_keys")
#: The presentation columns the summary reads.
PRESENTATION_COLUMNS = ("epoch", "step", "sample_id", "label", "loss", "p_true", "el2n", "correct", "margin",
                        "grand_last", "rank", "token_accuracy", "token_count", "group_id")
#: Averaged summary columns that come from integer columns: pandas averages them into a nullable
#: ``Float64`` when a run's column had missing values (a nullable integer), ``float64`` otherwise.
INTEGER_MEANS = ("forgetting_events", "first_learned_epoch")
#: Columns whose missing values in any run decide the averaged column's dtype.
NULL_TRACKED = INTEGER_MEANS + ("final_correct", "presentations", "group_id")
#: The averaged table's column order (``store.queries.sample_summary``).
AVERAGED_ORDER = (
    ["sample_id", "label", "original_label", "label_noisy"]
    + [c for c in SUMMARY_MEAN_COLUMNS if c not in SEQUENCE_COLUMNS]
    + ["never_learned", "final_correct", "presentations", "group_id"]
    + list(SEQUENCE_COLUMNS) + ["num_runs"]
)


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError as error:
        raise StoreError(f"the spark engine needs PySpark, which this install lacks; install the 'spark' "
                         f"extra ({SPARK_EXTRA}) or use --engine duckdb") from error
    return pyspark.sql


def spark_session(master: str | None = None) -> Any:
    """The running SparkSession, or a new one on ``master`` (default: Spark's own
    configuration: ``local[*]``, ``MASTER``, ``spark-defaults.conf`` or ``SPARK_REMOTE``)."""
    # No stage progress bars on the terminal: the command prints one line of its own.
    builder = _pyspark().SparkSession.builder.appName("trainmap-scores").config("spark.ui.showConsoleProgress", "false")
    if master:
        builder = builder.master(master)
    with warnings.catch_warnings():  # the engine hands PySpark no pandas: pandas' version is moot
        warnings.filterwarnings("ignore", message=PANDAS_WARNING)
        session = builder.getOrCreate()
    try:
        session.sparkContext.setLogLevel("ERROR")  # Spark's INFO/WARN chatter; errors still show
    except Exception:  # Spark Connect sessions have no SparkContext here
        pass
    return session


def epoch_bounds(epochs: tuple[int, int] | None) -> tuple[int, int]:
    """``epochs`` as (first, last), all epochs when None; ``ValueError`` unless 0 <= first <= last."""
    if epochs is None:
        return ALL_EPOCHS
    low, high = int(epochs[0]), int(epochs[1])
    if low < 0 or high < low:
        raise ValueError(f"epoch range must be 0 <= first <= last, got {low}..{high}")
    return low, high


def summary_with_spark(
    store_root: str | os.PathLike[str],
    run_ids: str | list[str],
    epochs: tuple[int, int] | None = None,
    *,
    spark: Any = None,
    master: str | None = None,
) -> pd.DataFrame:
    """``store.sample_summary(Store(store_root), run_ids, epochs)`` computed by Spark.

    ``spark`` is a SparkSession to use (a notebook's, a test's); without one,
    ``spark_session(master)``. One row per sample sorted by ``sample_id``; the columns of
    ``store.queries.SUMMARY`` and ``num_runs`` (in ``sample_summary``'s order over several
    runs), and ``sample_key`` after ``sample_id`` when a run has string keys.
    """
    run_ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    if not run_ids:
        raise ValueError("summary_with_spark needs at least one run id")
    bounds = epoch_bounds(epochs)
    store = Store(store_root)
    for run_id in run_ids:
        store.run_dir(run_id)  # RunNotFoundError naming the run, before Spark starts
    session = spark if spark is not None else spark_session(master)
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        return _retry_on_vanishing_files(lambda: _summary(session, store, run_ids, bounds))
    except (PySparkException, Py4JJavaError) as error:
        for run_id in run_ids:  # name the file that cannot be read, as the DuckDB path does
            damaged = store.damaged_file(run_id, SUMMARY_TABLES)
            if damaged is not None:
                raise damaged from error
        message = str(error).strip()
        first_line = message.splitlines()[0] if message else type(error).__name__
        raise StoreError(f"Spark could not compute the summary of {', '.join(run_ids)}: {first_line}") from error


def _retry_on_vanishing_files(function: Callable[[], T], attempts: int = 4) -> T:
    """Run ``function`` again, listing the files afresh, if one vanished under Spark (a
    live run being compacted); Spark's other errors propagate."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    for attempt in range(attempts):
        try:
            return function()
        except (PySparkException, Py4JJavaError) as error:
            if attempt == attempts - 1 or not any(marker in str(error) for marker in VANISHED_FILE_MARKERS):
                raise
            logger.debug("retrying a Spark read after a vanished file: %s", type(error).__name__)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


# -- reading a run -------------------------------------------------------------------


def _ddl(fields: list[pa.Field]) -> str:
    return ", ".join(f"{field.name} {SPARK_TYPES[field.type]}" for field in fields)


def _file_uris(paths: list[Path]) -> list[str]:
    """Absolute ``file:`` paths: executors read the store on a filesystem they share with
    the driver, never the cluster's default filesystem (HDFS). Spark expands glob patterns
    in paths, so a folder named ``runs[1]`` has its pattern characters escaped."""
    return ["file://" + GLOB_CHARACTERS.sub(r"\\\g<0>", str(path.resolve())) for path in paths]


def _read_table(spark: Any, store: Store, run_id: str, table_name: str, schema: pa.Schema,
                columns: tuple[str, ...], dedupe: bool) -> Any:
    """A run's table (compacted file or live segments) with ``columns``. Read with the
    store's schema, so that a column older files lack is null (as DuckDB's union by name)
    and Spark infers nothing (no job to read every footer)."""
    sql = _pyspark()
    functions = sql.functions
    files = _file_uris(store.table_files(run_id, table_name))
    if not files:
        return spark.createDataFrame([], _ddl([schema.field(name) for name in columns]))
    frame = spark.read.schema(_ddl(list(schema))).parquet(*files).select(*columns)
    keys = DEDUPLICATE_ON.get(table_name)
    if dedupe and keys:
        lowest = functions.min("rank").over(sql.Window.partitionBy(*keys))
        frame = frame.withColumn("lowest_rank", lowest).where(functions.col("rank") == functions.col("lowest_rank"))
        frame = frame.drop("lowest_rank")
    return frame


def _samples(spark: Any, store: Store, run_id: str, presentations: Any) -> Any:
    """``samples.parquet``, or (a run given no sample table) the labels it trained on."""
    functions = _pyspark().functions
    path = store.run_dir(run_id) / "samples.parquet"
    if path.exists():
        return spark.read.schema(_ddl(list(SAMPLES))).parquet(*_file_uris([path]))
    return presentations.groupBy("sample_id").agg(
        functions.any_value("label", ignoreNulls=True).cast("bigint").alias("label"),
        functions.any_value("label", ignoreNulls=True).cast("bigint").alias("original_label"),
        functions.lit(False).alias("label_noisy"),
    )


def _latest(functions: Any, column: str) -> Any:
    """The value of ``column`` at the latest step where it is not null (DuckDB's arg_max)."""
    present = functions.col(column).isNotNull()
    return functions.max(functions.when(present, functions.struct("step", functions.col(column).alias("value")))) \
        .getField("value")


def run_summary_frame(spark: Any, store: Store, run_id: str, epochs: tuple[int, int]) -> Any:
    """The Spark DataFrame of one run's summary: ``SUMMARY``'s columns, one row per sample."""
    sql = _pyspark()
    f = sql.functions
    info = store.run_info(run_id)
    dedupe = not info.get("compacted", False) and int(info.get("world_size") or 1) > 1
    presentations = _read_table(spark, store, run_id, "presentations", PRESENTATIONS, PRESENTATION_COLUMNS, dedupe)
    grand = _read_table(spark, store, run_id, "grand", GRAND, ("epoch", "sample_id", "grand", "rank"), dedupe)
    in_window = f.col("epoch").between(*epochs)

    def windowed(column: str) -> Any:
        return f.avg(f.when(in_window, f.col(column)))

    previous = f.lag("correct").over(sql.Window.partitionBy("sample_id").orderBy("epoch", "step"))
    dynamics = presentations.withColumn("previous_correct", previous).groupBy("sample_id").agg(
        f.count(f.lit(1)).alias("presentations"),
        windowed("loss").alias("loss"),
        windowed("el2n").alias("el2n"),
        # NaN where the last-layer GraNd was not recorded.
        f.avg(f.when(in_window & ~f.isnan("grand_last"), f.col("grand_last"))).alias("grand_last"),
        f.when(f.count("correct") > 0,
               f.count(f.when(f.col("previous_correct") & ~f.col("correct"), True))).alias("forgetting_events"),
        f.min(f.when(f.col("correct"), f.col("epoch"))).alias("first_learned_epoch"),
        (~f.bool_or("correct")).alias("never_learned"),
        f.avg("p_true").alias("confidence"),
        f.stddev_pop("p_true").alias("variability"),
        f.avg(f.col("correct").cast("double")).alias("correctness"),
        f.avg("margin").alias("aum"),
        _latest(f, "correct").alias("final_correct"),
        windowed("token_accuracy").alias("token_accuracy"),
        windowed("token_count").alias("token_count"),
        _latest(f, "group_id").alias("group_id"),
    )
    grand_scores = grand.where(in_window).groupBy("sample_id").agg(f.avg("grand").alias("grand"))
    joined = _samples(spark, store, run_id, presentations) \
        .join(dynamics, "sample_id", "left").join(grand_scores, "sample_id", "left")
    return joined.select([f.col(field.name).cast(SPARK_TYPES[field.type]) for field in SUMMARY])


# -- over runs -----------------------------------------------------------------------


def _averaged_frame(runs: list[Any]) -> Any:
    """The mean over runs (``sample_summary``'s rules), with ``consistent`` (the sample is
    in every run with the same label, or none) and ``null_<column>`` (some run's value of
    a ``NULL_TRACKED`` column was missing) for each sample."""
    f = _pyspark().functions
    stacked = reduce(lambda a, b: a.unionByName(b),
                     [frame.withColumn("run_index", f.lit(index)) for index, frame in enumerate(runs)])
    num_runs = f.count(f.lit(1))
    labels = f.count("label")
    same_labels = (labels == 0) | ((labels == len(runs)) & (f.min("label") == f.max("label")))
    averaged = stacked.groupBy("sample_id").agg(
        *[f.avg(column).alias(column) for column in SUMMARY_MEAN_COLUMNS],
        f.when(f.count("never_learned") > 0, f.bool_and("never_learned")).alias("never_learned"),
        f.avg(f.col("final_correct").cast("double")).alias("final_correct"),
        f.coalesce(f.sum("presentations"), f.lit(0).cast("bigint")).alias("presentations"),
        # The first run's group where runs differ.
        f.min(f.when(f.col("group_id").isNotNull(), f.struct("run_index", "group_id"))).getField("group_id")
        .alias("group_id"),
        num_runs.alias("num_runs"),
        ((num_runs == len(runs)) & same_labels).alias("consistent"),
        *[f.max(f.col(column).isNull()).alias(f"null_{column}") for column in NULL_TRACKED],
    )
    reference = stacked.where(f.col("run_index") == 0).select("sample_id", "label", "original_label", "label_noisy")
    return reference.join(averaged, "sample_id", "left")


def _first_different_run(runs: list[Any], run_ids: list[str]) -> str:
    """The first run whose samples or labels differ from the first run's."""
    reference = runs[0].select("sample_id", "label")
    for run_id, frame in zip(run_ids[1:], runs[1:]):
        mine = frame.select("sample_id", "label")
        if mine.exceptAll(reference).limit(1).count() or reference.exceptAll(mine).limit(1).count():
            return run_id
    return run_ids[-1]


def _sample_keys(spark: Any, store: Store, run_ids: list[str]) -> Any | None:
    """``sample_id, sample_key, key_names`` over the runs' string keys; None when they have
    none (the files' footers say so: no Spark job)."""
    f = _pyspark().functions
    files = [path for run_id in run_ids for path in store.table_files(run_id, "sample_keys")]
    if sum(pq.read_metadata(path).num_rows for path in files) == 0:
        return None
    keys = reduce(lambda a, b: a.unionByName(b), [
        _read_table(spark, store, run_id, "sample_keys", SAMPLE_KEYS, ("sample_id", "sample_key"), False)
        for run_id in run_ids
    ])
    return keys.groupBy("sample_id").agg(f.min("sample_key").alias("sample_key"), f.max("sample_key").alias("other_key"),
                                         f.count_distinct("sample_key").alias("key_names"))


def _summary(spark: Any, store: Store, run_ids: list[str], epochs: tuple[int, int]) -> pd.DataFrame:
    f = _pyspark().functions
    runs = [run_summary_frame(spark, store, run_id, epochs) for run_id in run_ids]
    if len(runs) == 1:
        frame = runs[0].withColumn("num_runs", f.lit(1).cast("bigint"))
    else:
        frame = _averaged_frame(runs)
    keys = _sample_keys(spark, store, run_ids)
    if keys is not None:
        frame = frame.join(keys, "sample_id", "left")
    # Sorted here rather than by Spark: the rows are on the driver now, and a global sort
    # would cost Spark another pass to sample the range partitions.
    table = frame.toArrow().sort_by("sample_id")
    if len(runs) > 1 and not all(table["consistent"].to_pylist()):
        raise StoreError(
            f"run {_first_different_run(runs, run_ids)!r} has different samples or labels than {run_ids[0]!r}; "
            "scores can only be averaged over runs of the same task and label noise"
        )
    if keys is not None:
        _check_one_key_per_id(table, run_ids)
    return _to_pandas(table, averaged=len(runs) > 1, with_keys=keys is not None)


def _check_one_key_per_id(table: pa.Table, run_ids: list[str]) -> None:
    """``StoreError`` when one sample id stands for two keys (a hash collision, or runs that
    disagree), worded as ``store.queries.check_one_name_per_id`` words it."""
    keys = table.select(["sample_id", "sample_key", "other_key", "key_names"]).to_pandas()
    twice = keys[keys["key_names"] > 1]
    if len(twice):
        first = twice.iloc[0]
        runs = f"run {run_ids[0]!r}" if len(run_ids) == 1 else f"runs {', '.join(map(repr, run_ids))}"
        raise StoreError(f"{runs}: sample id {int(first['sample_id'])} stands for two keys "
                         f"({first['sample_key']!r}, {first['other_key']!r}); rename one of them")


# -- to pandas, as DuckDB gives it ---------------------------------------------------


_NULLABLE = {
    pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(), pa.float64(): pd.Float64Dtype(),
}


def _column(values: pa.ChunkedArray, nullable: bool) -> pd.Series:
    """One column in pandas: a nullable extension dtype when ``nullable``, else NumPy's
    (floats with NaN for missing values)."""
    if nullable:
        return values.to_pandas(types_mapper=_NULLABLE.get)
    return values.to_pandas()


def _nullable(values: pa.ChunkedArray) -> bool:
    """DuckDB's rule: an integer or boolean column holding nulls takes a nullable dtype."""
    return values.null_count > 0 and not pa.types.is_floating(values.type)


def _to_pandas(table: pa.Table, averaged: bool, with_keys: bool) -> pd.DataFrame:
    """The Spark result with ``sample_summary``'s columns and dtypes: DuckDB's rule for one
    run (a nullable dtype where a column holds nulls); over runs, the dtypes pandas'
    mean/sum/first give (nullable where some run's column had missing values)."""
    if not averaged:
        table = table.cast(pa.schema([*SUMMARY, pa.field("num_runs", pa.int64())] + (
            [pa.field("sample_key", pa.string()), pa.field("other_key", pa.string()), pa.field("key_names", pa.int64())]
            if with_keys else [])))
        columns = {name: _column(table[name], _nullable(table[name])) for name in SUMMARY.names + ["num_runs"]}
    else:
        had_nulls = {column: any(table[f"null_{column}"].to_pylist()) for column in NULL_TRACKED}
        columns = {}
        for name in AVERAGED_ORDER:
            values = table[name]
            if name in ("sample_id", "label", "original_label", "label_noisy", "num_runs"):
                values = values.cast(SUMMARY.field(name).type if name in SUMMARY.names else pa.int64())
                columns[name] = _column(values, _nullable(values))
            elif name == "never_learned":
                columns[name] = _column(values, True)
            elif name == "group_id":
                columns[name] = _column(values.cast(pa.int32()), had_nulls[name])
            elif name == "presentations":
                columns[name] = _column(values.cast(pa.int64()), had_nulls[name])
            else:  # means: Float64 where pandas averaged a nullable integer or boolean column
                columns[name] = _column(values.cast(pa.float64()),
                                        had_nulls.get(name, False) and name in INTEGER_MEANS + ("final_correct",))
    frame = pd.DataFrame(columns)
    if with_keys:
        frame.insert(1, "sample_key", table["sample_key"].to_pandas())
    return frame
