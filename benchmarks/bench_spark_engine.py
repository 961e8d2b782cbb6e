"""The per-sample summary on DuckDB and on Spark in local mode, on one machine.

Writes a synthetic live run of ``--samples`` x ``--epochs`` presentations through
``Store.write_segment`` (one segment per epoch), then times ``store.sample_summary``
(DuckDB, in process) and ``store.engines.spark.summary_with_spark`` (a ``local[N]``
session started here: its first call, which warms the JVM, and then the median of the
others). CPU is the process's own for DuckDB and the JVM's for Spark (from /proc). The two
tables are compared: forgetting events exactly, the mean loss as its largest difference.

    python benchmarks/bench_spark_engine.py [--samples 20000] [--epochs 50] [--cores 2] \
        [--out benchmarks/results/spark_engine.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from store import Store, sample_summary  # noqa: E402
from store.engines.spark import spark_session, summary_with_spark  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def write_run(store: Store, num_samples: int, num_epochs: int, seed: int = 0) -> str:
    """A live run whose p_true is uniform and ``correct`` is p_true > 0.4 (forgetting happens)."""
    rng = np.random.default_rng(seed)
    run_id = store.create_run(name="bench", task="synthetic", model="none", seed=seed, max_epochs=num_epochs)
    sample_ids = np.arange(num_samples, dtype=np.int64)
    store.write_samples(run_id, pa.table({"sample_id": sample_ids, "label": sample_ids % 10,
                                          "original_label": sample_ids % 10, "label_noisy": np.zeros(num_samples, bool)}))
    for epoch in range(num_epochs):
        p_true = rng.uniform(size=num_samples).astype(np.float32)
        store.write_segment(run_id, "presentations", pa.table({
            "epoch": np.full(num_samples, epoch, np.int32), "step": np.full(num_samples, epoch, np.int64),
            "sample_id": sample_ids, "label": (sample_ids % 10).astype(np.int32),
            "loss": -np.log(np.clip(p_true, 1e-7, 1)), "p_true": p_true, "el2n": np.sqrt(2) * (1 - p_true),
            "correct": p_true > 0.4, "margin": rng.normal(size=num_samples).astype(np.float32),
            "rank": np.zeros(num_samples, np.int16),
        }), f"r00-e{epoch:06d}")
    return run_id


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def descendants_named(name: str) -> list[int]:
    """Pids of this process's descendants whose command is ``name`` (the Spark JVM)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(text.split(" ", 1)[0])
        commands[pid] = text[text.index("(") + 1:text.rindex(")")]
        parents[pid] = int(text.rsplit(")", 1)[1].split()[1])
    found = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if ancestor == os.getpid() and commands[pid] == name:
            found.append(pid)
    return found


def timed(function, cpu) -> tuple[float, float, object]:
    wall, before = time.perf_counter(), cpu()
    result = function()
    return time.perf_counter() - wall, cpu() - before, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--cores", type=int, default=2, help="Spark's local[N]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "spark_engine.md"))
    args = parser.parse_args()

    store = Store(Path(tempfile.mkdtemp()) / "store", create=True)
    run_id = write_run(store, args.samples, args.epochs)
    own_cpu = lambda: process_cpu_seconds(os.getpid())  # noqa: E731
    duckdb_runs = [timed(lambda: sample_summary(store, run_id), own_cpu) for _ in range(args.repeats)]
    reference = duckdb_runs[-1][2]

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = spark_session(f"local[{args.cores}]")
    spark.sparkContext.setLogLevel("ERROR")
    jvm = descendants_named("java")
    jvm_cpu = lambda: sum(process_cpu_seconds(pid) for pid in jvm)  # noqa: E731
    spark_runs = [timed(lambda: summary_with_spark(store.root, run_id, spark=spark), jvm_cpu)
                  for _ in range(args.repeats + 1)]
    frame = spark_runs[-1][2]
    spark.stop()

    same_forgetting = bool((frame["forgetting_events"] == reference["forgetting_events"]).all())
    loss_difference = float(np.abs(frame["loss"] - reference["loss"]).max())
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    rows = [
        ("DuckDB (`sample_summary`)", statistics.median(r[0] for r in duckdb_runs),
         statistics.median(r[1] for r in duckdb_runs)),
        (f"Spark `local[{args.cores}]`, first call (JVM warm-up)", spark_runs[0][0], spark_runs[0][1]),
        (f"Spark `local[{args.cores}]`, later calls (median)", statistics.median(r[0] for r in spark_runs[1:]),
         statistics.median(r[1] for r in spark_runs[1:])),
    ]
    lines = [
        "# The per-sample summary: DuckDB and Spark on one machine",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `python benchmarks/bench_spark_engine.py "
        f"--samples {args.samples} --epochs {args.epochs} --cores {args.cores} --repeats {args.repeats}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; load average at the "
        f"end {load} (other processes shared the cores: compare the engines, not the absolute seconds).",
        "",
        f"A live run of {args.samples:,} samples x {args.epochs} epochs = {args.samples * args.epochs:,} presentation "
        f"rows in {args.epochs} segments. Same table: forgetting events equal = {same_forgetting}, "
        f"largest difference of the mean loss = {loss_difference:.1e}.",
        "",
        "| engine | wall s | CPU s |",
        "|---|---|---|",
        *[f"| {name} | {wall:.1f} | {cpu:.1f} |" for name, wall, cpu in rows],
        "",
        "CPU: this process's for DuckDB, the Spark JVM's for Spark (the Python driver only waits).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
