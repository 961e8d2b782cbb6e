"""``--engine spark``: Spark's per-sample summary equals DuckDB's (``store.sample_summary``).

Spark runs in local mode on loopback, one session for the module. Each case compares the
whole table: the same columns and dtypes, counts and flags exactly, means to 1e-9, and
missing values in the same places.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import REPO, write_loss_run, write_sequence_run, write_synthetic_run
from store import Store, StoreError, sample_summary
from store.engines import summary_with

pytest.importorskip("pyspark")

from store.engines.spark import PANDAS_WARNING, summary_with_spark  # noqa: E402  (after the skip)

#: Means may differ by the order Spark and DuckDB add the values in.
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]").appName("trainmap-test-spark-engine")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "512m")
        .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=PANDAS_WARNING)
            session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


@pytest.fixture(scope="module")
def computed_sample_store(sample_store):
    """The sample runs without their materialised summaries, so that DuckDB computes the
    table too: the shipped ones predate ``group_id``, which ``conform_summary`` then adds
    as an untyped column, where the query types it ``Int32`` as Spark does."""
    for path in (sample_store.root / "runs").glob("*/summary.parquet"):
        path.unlink()
    return sample_store


def assert_same_table(spark_frame: pd.DataFrame, duckdb_frame: pd.DataFrame) -> None:
    assert list(spark_frame.columns) == list(duckdb_frame.columns)
    assert len(spark_frame) == len(duckdb_frame)
    for column in duckdb_frame.columns:
        mine, theirs = spark_frame[column], duckdb_frame[column]
        assert mine.dtype == theirs.dtype, f"{column}: {mine.dtype} != {theirs.dtype}"
        missing = theirs.isna().to_numpy()
        np.testing.assert_array_equal(mine.isna().to_numpy(), missing, err_msg=column)
        if pd.api.types.is_float_dtype(theirs.dtype):
            np.testing.assert_allclose(mine.to_numpy(float, na_value=np.nan)[~missing],
                                       theirs.to_numpy(float, na_value=np.nan)[~missing],
                                       rtol=TOLERANCE, atol=TOLERANCE, err_msg=column)
        else:
            assert mine[~missing].tolist() == theirs[~missing].tolist(), column


def test_a_sample_run_matches_duckdb(spark, computed_sample_store):
    store = computed_sample_store
    run_id = next(r for r in store.run_ids() if store.run_info(r)["name"] == "cnn-noise20-s0")
    frame = summary_with_spark(store.root, run_id, spark=spark)
    assert_same_table(frame, sample_summary(store, run_id))
    assert frame["never_learned"].any() and frame["label_noisy"].any()  # both kinds of rows compared


def test_seeds_averaged_over_an_epoch_window_match_duckdb(spark, computed_sample_store):
    store = computed_sample_store
    names = {store.run_info(r)["name"]: r for r in store.run_ids()}
    run_ids = [names["cnn-noise20-s0"], names["cnn-noise20-s1"]]
    frame = summary_with_spark(store.root, run_ids, (3, 9), spark=spark)
    assert_same_table(frame, sample_summary(store, run_ids, (3, 9)))
    assert (frame["num_runs"] == 2).all()
    assert not np.allclose(frame["loss"], sample_summary(store, run_ids)["loss"])  # the window counts


def test_forgetting_and_never_learned_by_hand(spark, store):
    correct = np.array([
        [True, False, True, False, True],     # 2 events, learned at 0
        [False, False, False, False, False],  # never learned
        [False, True, True, True, True],      # learned at 1, unforgettable
        [True, True, True, True, False],      # 1 event at the very end
    ])
    p_true = np.where(correct, 0.9, 0.2)
    run_id = write_synthetic_run(store, correct, p_true, np.where(correct, 1.5, -0.5))  # live: not compacted
    frame = summary_with_spark(store.root, run_id, spark=spark)
    assert frame["forgetting_events"].tolist() == [2, 0, 0, 1]
    assert frame["never_learned"].tolist() == [False, True, False, False]
    assert frame["first_learned_epoch"].tolist()[0] == 0 and pd.isna(frame["first_learned_epoch"][1])
    assert frame["first_learned_epoch"].tolist()[2:] == [1, 0]
    np.testing.assert_allclose(frame["correctness"], correct.mean(1), rtol=1e-12)
    np.testing.assert_allclose(frame["variability"], p_true.astype(np.float32).astype(float).std(1), rtol=1e-6)
    assert_same_table(frame, sample_summary(store, run_id))
    # The engine switch gives the same table either way (the Spark one on the running session).
    assert_same_table(summary_with("spark", store, run_id), summary_with("duckdb", store, run_id))


def write_two_rank_run(store: Store) -> str:
    """A live run of two ranks: rank 1 pads its share with sample 0, which rank 0 also
    presents (different values: only rank 0's count); rank 0 presents sample 2 twice in
    epoch 1 (a repeat within one rank: both count). Samples have string keys and groups."""
    rng = np.random.default_rng(3)
    run_id = store.create_run(name="ddp", task="synthetic", model="none", max_epochs=3, world_size=2)
    store.write_samples(run_id, pa.table({"sample_id": np.arange(5), "label": np.arange(5) % 2,
                                          "original_label": np.arange(5) % 2, "label_noisy": np.zeros(5, bool)}))
    shares = {0: [0, 2, 4], 1: [1, 3, 0]}
    for epoch in range(3):
        for rank, sample_ids in shares.items():
            sample_ids = sample_ids + [2] if (rank, epoch) == (0, 1) else sample_ids
            count = len(sample_ids)
            steps = epoch * 2 + np.arange(count) // 2
            store.write_segment(run_id, "presentations", pa.table({
                "epoch": np.full(count, epoch, np.int32), "step": steps.astype(np.int64),
                "sample_id": np.array(sample_ids, np.int64), "label": (np.array(sample_ids) % 2).astype(np.int32),
                "loss": rng.uniform(0, 3, count).astype(np.float32), "p_true": rng.uniform(size=count).astype(np.float32),
                "el2n": rng.uniform(0, 1.4, count).astype(np.float32), "correct": rng.uniform(size=count) > 0.4,
                "margin": rng.normal(size=count).astype(np.float32), "weight": np.ones(count, np.float32),
                "grand_last": np.where(np.arange(count) == 1, np.nan, rng.uniform(size=count)).astype(np.float32),
                "rank": np.full(count, rank, np.int16),
                "group_id": pa.array([None if s == 4 else s % 2 for s in sample_ids], pa.int32()),
            }), f"r{rank:02d}-e{epoch:06d}")
            store.write_segment(run_id, "grand", pa.table({
                "epoch": np.full(count, epoch, np.int32), "step": steps.astype(np.int64),
                "sample_id": np.array(sample_ids, np.int64), "grand": rng.uniform(0, 5, count).astype(np.float32),
                "rank": np.full(count, rank, np.int16),
            }), f"r{rank:02d}-e{epoch:06d}")
        store.write_segment(run_id, "sample_keys", pa.table({
            "sample_id": np.arange(5, dtype=np.int64), "sample_key": [f"img/{s}.png" for s in range(5)]}),
            f"r00-e{epoch:06d}")
    return run_id


def test_a_live_two_rank_run_matches_duckdb(spark, tmp_path):
    store = Store(tmp_path / "stores [1] {a}" / "store", create=True)  # Spark would read these as glob patterns
    run_id = write_two_rank_run(store)
    frame = summary_with_spark(store.root, run_id, spark=spark)
    assert frame["presentations"].tolist() == [3, 3, 4, 3, 3]  # padding dropped, the repeat kept
    assert frame["sample_key"].tolist() == [f"img/{s}.png" for s in range(5)]
    assert frame["group_id"].isna().tolist() == [False, False, False, False, True]
    assert_same_table(frame, sample_summary(store, run_id))


def test_loss_only_and_sequence_runs_match_duckdb(spark, store):
    """Runs without correctness (NULL forgetting, never_learned) and sequence runs."""
    rng = np.random.default_rng(7)
    live = write_loss_run(store, rng.uniform(0, 2, (6, 4)))
    compacted = write_loss_run(store, rng.uniform(0, 2, (6, 4)), finish=True, name="loss-2")
    frame = summary_with_spark(store.root, [live, compacted], spark=spark)
    assert frame["never_learned"].isna().all() and frame["forgetting_events"].isna().all()
    assert_same_table(frame, sample_summary(store, [live, compacted]))
    sequences = write_sequence_run(store, rng.uniform(size=(5, 3)), rng.integers(1, 20, 5), rng.uniform(0, 4, (5, 3)),
                                   rng.uniform(size=(5, 3)), rng.normal(size=(5, 3)), finish=True)
    frame = summary_with_spark(store.root, sequences, (1, 2), spark=spark)
    assert frame["token_accuracy"].notna().all()
    assert_same_table(frame, sample_summary(store, sequences, (1, 2)))


def test_runs_of_different_labels_are_refused_as_duckdb_refuses_them(spark, store):
    correct = np.ones((3, 2), bool)
    first = write_synthetic_run(store, correct, np.full((3, 2), 0.9), np.ones((3, 2)))
    other = write_synthetic_run(store, correct, np.full((3, 2), 0.9), np.ones((3, 2)), labels=np.array([0, 1, 0]))
    with pytest.raises(StoreError) as duckdb_error:
        sample_summary(store, [first, other])
    with pytest.raises(StoreError) as spark_error:
        summary_with_spark(store.root, [first, other], spark=spark)
    assert str(spark_error.value) == str(duckdb_error.value)
    for rank, key in ((0, "img/a.png"), (1, "img/b.png")):  # two ranks name sample 1 differently
        store.write_segment(first, "sample_keys", pa.table({"sample_id": np.array([1], np.int64), "sample_key": [key]}),
                            f"r{rank:02d}-e000000")
    with pytest.raises(StoreError, match=r"sample id 1 stands for two keys \('img/a.png', 'img/b.png'\)"):
        summary_with_spark(store.root, first, spark=spark)
    with pytest.raises(StoreError, match="sample id 1 stands for two keys"):
        sample_summary(store, first)
    with pytest.raises(ValueError, match="0 <= first <= last"):
        summary_with_spark(store.root, first, (3, 1), spark=spark)


def test_without_pyspark_the_error_names_the_extra(store, monkeypatch):
    run_id = write_synthetic_run(store, np.ones((2, 2), bool), np.full((2, 2), 0.9), np.ones((2, 2)))
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # as if PySpark were not installed
    with pytest.raises(StoreError, match=r"trainmap\[spark\]"):
        summary_with_spark(store.root, run_id)
    with pytest.raises(ValueError, match="duckdb, spark"):
        summary_with("dask", store, run_id)


def test_a_damaged_segment_is_named_as_duckdb_names_it(spark, store):
    run_id = write_synthetic_run(store, np.ones((3, 2), bool), np.full((3, 2), 0.9), np.ones((3, 2)))
    segment = store.table_files(run_id, "presentations")[1]
    segment.write_bytes(segment.read_bytes()[:40])  # cut short, as by a full disk
    with pytest.raises(StoreError) as duckdb_error:
        sample_summary(store, run_id)
    with pytest.raises(StoreError) as spark_error:
        summary_with_spark(store.root, run_id, spark=spark)
    assert str(segment) in str(spark_error.value)
    assert str(spark_error.value) == str(duckdb_error.value)


def test_the_default_engine_needs_no_pyspark(store):
    run_id = write_synthetic_run(store, np.ones((2, 2), bool), np.full((2, 2), 0.9), np.ones((2, 2)))
    script = (
        "import sys; sys.modules['pyspark'] = None\n"  # importing it would fail
        "from store import Store; from store.engines import summary_with\n"
        f"frame = summary_with('duckdb', Store({str(store.root)!r}), {run_id!r})\n"
        "assert frame['correctness'].tolist() == [1.0, 1.0], frame\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
