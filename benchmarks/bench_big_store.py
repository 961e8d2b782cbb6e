"""Big stores: 10 M and 100 M presentation rows through the real writing path.

For each size (``SAMPLESxEPOCHS``; default 50,000 x 200 = 10 M and 1,000,000 x 100 = 100 M)
it measures, each heavy step in its own child process (peak RSS from ``os.wait4``):

1. **ingestion**: ``scripts/make_big_store.py --no-finish`` streams the synthetic epochs to
   the recording writer child process; rows per second of the writer's CPU time
   (generation excluded) and per second of wall time. Baseline in the same run: pyarrow
   building the same rows into one table per epoch and writing them to one Parquet file
   (the segments' options: uncompressed, no dictionaries), rows per CPU second.
2. **compaction**: finishing the run as the recorder does (``compact_run``: sorted files
   and the materialised summary, then status finished): time and peak RSS. Baseline: one
   DuckDB scan of every segment (``count(*)``, ``avg(loss)``).
3. **`trainmap scores --run ID -o scores.parquet`**: time and peak RSS. Baseline:
   ``pd.read_parquet(summary.parquet)``.
4. **every dashboard view**: each ``store.views`` query and each page render
   (``AppTest``, cold and warm) from ``bench_dashboard.py``, in one process standing for
   the dashboard's, whose peak RSS is the dashboard's. Baseline: one DuckDB scan of every
   row of the compacted presentations (what a view must not do).

Targets (issue 13): ingestion >= 1.5 M rows/s; compaction and scores <= 4 GB peak; every
view <= 1 s at 10 M rows and <= 3 s at 100 M; the dashboard process < 2 GB.

    python benchmarks/bench_big_store.py -o benchmarks/results/big_store.md --json benchmarks/results/big_store.json
    python benchmarks/bench_big_store.py --sizes 2000x3 --repeat 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "scripts", REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from machine import hardware  # noqa: E402

INGEST_TARGET = 1.5e6  # rows per second
MEMORY_TARGET_MB = 4096  # compaction, scores
DASHBOARD_MEMORY_TARGET_MB = 2048
BASELINE_ROWS = 10_000_000  # the pyarrow baseline writes at most this many rows


def view_budget(rows: int) -> float:
    """Seconds a view may take on a run of ``rows`` presentations (issue 13)."""
    return 1.0 if rows <= 10_000_000 else 3.0


def parse_size(text: str) -> tuple[int, int]:
    try:
        samples, epochs = (int(part.replace("_", "")) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is SAMPLESxEPOCHS (e.g. 50000x200), got {text!r}") from None
    if samples < 1 or epochs < 1:
        raise argparse.ArgumentTypeError(f"a size needs >= 1 sample and >= 1 epoch, got {text!r}")
    return samples, epochs


def peak_of(arguments: list[str], timeout: float = 7200) -> dict[str, Any]:
    """Run ``python arguments...`` and wait for it with ``os.wait4``: wall seconds and the
    child's own peak RSS in MB (Linux reports ``ru_maxrss`` in KiB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, *arguments], cwd=REPO, stdout=out, stderr=err, text=True)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments[:3])} failed ({process.returncode}): {stderr[-3000:]}")
    return {"seconds": elapsed, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": stdout, "stderr": stderr}


def scan_seconds(files: list[Path]) -> float:
    """One DuckDB pass over every row of ``files`` (count and mean loss), in this process."""
    con = duckdb.connect(config={"threads": 2})
    try:
        started = time.perf_counter()
        con.read_parquet([str(path) for path in files]).aggregate("count(*), avg(loss)").fetchall()
        return time.perf_counter() - started
    finally:
        con.close()


def pyarrow_baseline(samples: int, epochs: int, folder: Path) -> dict[str, float]:
    """Rows per CPU second of pyarrow turning the same epochs' columns into presentation
    tables and writing them to one Parquet file with the segments' options (at most
    ``BASELINE_ROWS`` rows; generating them is not timed)."""
    from make_big_store import SyntheticDynamics
    from store.recording.rows import presentations_table
    from store.schema import PRESENTATIONS, conform

    dynamics = SyntheticDynamics(samples, epochs)
    count = max(1, min(epochs, BASELINE_ROWS // samples))
    cpu = 0.0
    path = folder / "baseline.parquet"
    with pq.ParquetWriter(path, PRESENTATIONS, compression="none", use_dictionary=False) as writer:
        for epoch in range(count):
            columns = dynamics.epoch(epoch)
            started = time.process_time()
            writer.write_table(conform(presentations_table(columns, epoch, 0), PRESENTATIONS))
            cpu += time.process_time() - started
    path.unlink()
    return {"rows": count * samples, "cpu_seconds": cpu, "rows_per_second": count * samples / cpu}


# -- the child processes ----------------------------------------------------------------


def child_finish(store_path: str) -> None:
    """Finish (compact) the store's only run, as the recorder does; print JSON."""
    from make_big_store import finish_run
    from store import Store

    store = Store(Path(store_path))
    started = time.perf_counter()
    finish_run(store, store.run_ids()[0])
    print(json.dumps({"seconds": time.perf_counter() - started}))


def child_dashboard(store_path: str, repeat: int) -> None:
    """Time every dashboard query and page view on the store's only run, in this one
    process (the dashboard's stand-in); print JSON."""
    os.environ["TRAINMAP_STORE"] = store_path
    from bench_dashboard import dashboard_queries, dashboard_views, render_view, timed

    import store as store_api

    store = store_api.Store(Path(store_path))
    run_id = store.run_ids()[0]
    sample_id = store_api.sample_count(store, run_id) // 2
    queries = {name: timed(query, repeat) for name, query in dashboard_queries(store, run_id, sample_id).items()}
    views = {}
    for label, page, params in dashboard_views(run_id, sample_id):
        first = render_view(label, page, params, True)  # imports and first-use costs, reported apart
        cold = statistics.median(render_view(label, page, params, True) for _ in range(repeat))
        warm = statistics.median(render_view(label, page, params, False) for _ in range(repeat))
        views[label] = {"first": first, "cold": cold, "warm": warm}
    print(json.dumps({"queries": queries, "views": views,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# -- one size ---------------------------------------------------------------------------


def measure_size(samples: int, epochs: int, work: Path, repeat: int) -> dict[str, Any]:
    rows = samples * epochs
    root = work / f"store-{samples}x{epochs}"
    result: dict[str, Any] = {"samples": samples, "epochs": epochs, "rows": rows,
                              "load_before": os.getloadavg()[0]}
    print(f"[{samples:,} x {epochs}] ingestion ...", file=sys.stderr, flush=True)
    report_path = work / f"make-{samples}x{epochs}.json"
    made = peak_of(["scripts/make_big_store.py", str(root), "--samples", str(samples), "--epochs", str(epochs),
                    "--no-finish", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    run_id = report["run_id"]
    run_dir = root / "runs" / run_id
    segments = sorted((run_dir / "presentations").glob("part-*.parquet"))
    result["ingest"] = {
        "segments": len(segments),
        "segment_bytes": sum(path.stat().st_size for path in segments),
        "generate_cpu_seconds": report["generate_seconds"],
        "stream_seconds": report["stream_seconds"],
        "writer_cpu_seconds": report["writer_cpu_seconds"],
        "rows_per_writer_cpu_second": rows / report["writer_cpu_seconds"],
        "rows_per_wall_second": rows / report["stream_seconds"],
        "generator_peak_rss_mb": made["peak_rss_mb"],
        "baseline": pyarrow_baseline(samples, epochs, work),
    }
    print(f"[{samples:,} x {epochs}] compaction ...", file=sys.stderr, flush=True)
    result["compaction_baseline_scan_seconds"] = scan_seconds(segments)
    result["load_before_compaction"] = os.getloadavg()[0]
    finished = peak_of([__file__, "_finish", str(root)])
    result["compaction"] = {"seconds": json.loads(finished["stdout"])["seconds"],
                            "process_seconds": finished["seconds"], "peak_rss_mb": finished["peak_rss_mb"],
                            "compacted_bytes": sum(p.stat().st_size for p in run_dir.glob("*.parquet"))}
    info = json.loads((run_dir / "run.json").read_text())
    result["run"] = {"status": info["status"], "compacted": info.get("compacted")}

    print(f"[{samples:,} x {epochs}] trainmap scores ...", file=sys.stderr, flush=True)
    import pandas as pd

    started = time.perf_counter()
    summary_rows = len(pd.read_parquet(run_dir / "summary.parquet"))
    result["scores_baseline_seconds"] = time.perf_counter() - started
    output = work / "scores.parquet"
    scored = peak_of(["-m", "training.cli", "scores", "--store", str(root), "--run", run_id, "-o", str(output)])
    result["scores"] = {"seconds": scored["seconds"], "peak_rss_mb": scored["peak_rss_mb"],
                        "rows": pq.ParquetFile(output).metadata.num_rows, "summary_rows": summary_rows}
    output.unlink()

    print(f"[{samples:,} x {epochs}] dashboard ...", file=sys.stderr, flush=True)
    result["dashboard_baseline_scan_seconds"] = scan_seconds([run_dir / "presentations.parquet"])
    result["load_before_dashboard"] = os.getloadavg()[0]
    shown = peak_of([__file__, "_dashboard", str(root), str(repeat)])
    result["dashboard"] = {**json.loads(shown["stdout"]), "peak_rss_mb": shown["peak_rss_mb"]}
    result["load_after"] = os.getloadavg()[0]
    result["labels"] = label_reads(root, run_id)
    return result


def label_reads(root: Path, run_id: str) -> dict[str, float]:
    """Seconds of the sample panel's two per-sample label queries computed from the
    presentations (their SQL, as the views ran them before compaction materialised them)
    and read from the ``labels.parquet`` compaction materialised (``store.compaction``,
    what ``store.views`` read now for a compacted run)."""
    from store import Store
    from store.compaction import materialised_predicted_labels, materialised_suggested_labels
    from store.run_tables import query_run
    from store.views.relabel import default_relabel_epochs

    store = Store(root)
    window = default_relabel_epochs(store, run_id)

    def seconds(function) -> float:
        started = time.perf_counter()
        if function() is None:
            raise RuntimeError("no materialised labels")
        return time.perf_counter() - started

    bounds = {"epoch_min": window[0], "epoch_max": window[1]}
    return {"predicted_live": seconds(lambda: query_run(store, run_id, "predicted_labels", tables=("presentations",))),
            "predicted_materialised": seconds(lambda: materialised_predicted_labels(store, run_id)),
            "suggested_live": seconds(lambda: query_run(store, run_id, "suggested_labels", bounds,
                                                        tables=("presentations",))),
            "suggested_materialised": seconds(lambda: materialised_suggested_labels(store, run_id, window))}


# -- the report -------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(results: list[dict[str, Any]], repeat: int, command: str) -> str:
    import pandas as pd

    lines = [
        "# Big stores: 10 M and 100 M presentation rows",
        "",
        f"`{command}`",
        "",
        f"Machine: {hardware()}; Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"pyarrow {pa.__version__}, pandas {pd.__version__}.",
        "",
        "Runs are synthetic (`scripts/make_big_store.py`: per-sample learning epochs, 20 % flipped labels "
        "learned late or never), written through the real path: the recording writer child process "
        "gets `RecordPresentations` chunks of 65,536 rows, `RecordValidation` and `RecordEpoch` as "
        "the recorder sends them, writes one segment per chunk, and the run is finished as the "
        "recorder finishes it (`compact_run`, then status finished). Each step below ran in its own "
        "process; peak RSS is that process's `ru_maxrss` (`os.wait4`). Load average (1 min) is "
        "that of the whole machine, shared with other work.",
        "",
        "## Ingestion (target ≥ 1.5 M rows/s)",
        "",
        "| run | rows | segments | writer CPU s | rows/s (writer CPU) | rows/s (wall) | baseline rows/s "
        "(pyarrow, one file) | × baseline | load | ≥ 1.5 M/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        i = r["ingest"]
        lines.append(
            f"| {r['samples']:,} × {r['epochs']} | {r['rows']:,} | {i['segments']:,} | {i['writer_cpu_seconds']:.1f} | "
            f"{i['rows_per_writer_cpu_second'] / 1e6:.2f} M | {i['rows_per_wall_second'] / 1e6:.2f} M | "
            f"{i['baseline']['rows_per_second'] / 1e6:.2f} M | "
            f"{i['rows_per_writer_cpu_second'] / i['baseline']['rows_per_second']:.2f} | {r['load_before']:.1f} | "
            f"{verdict(min(i['rows_per_writer_cpu_second'], i['rows_per_wall_second']) >= INGEST_TARGET)} |")
    lines += [
        "",
        "Writer CPU: user + system time of the writer child, its start included (reading each chunk's frame, building "
        "its Arrow table, writing the segment, the small tables and run.json). Wall: first message "
        "sent until the writer has written everything, generation included (it runs beside the "
        "writer). The baseline builds and writes the same rows (first ≤ 10 M) to one file, in one "
        "process, no messages.",
        "",
        "## Compaction of the finished run (target: peak ≤ 4 GB) and `trainmap scores` (peak ≤ 4 GB)",
        "",
        "| run | compaction s | peak RSS MB | baseline: DuckDB scan of the segments s | × baseline | "
        "`trainmap scores` s | peak RSS MB | baseline: `pd.read_parquet(summary)` s | load | ≤ 4 GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, s = r["compaction"], r["scores"]
        lines.append(
            f"| {r['samples']:,} × {r['epochs']} | {c['seconds']:.1f} | {c['peak_rss_mb']:,.0f} | "
            f"{r['compaction_baseline_scan_seconds']:.2f} | {c['seconds'] / r['compaction_baseline_scan_seconds']:.1f} | "
            f"{s['seconds']:.1f} | {s['peak_rss_mb']:,.0f} | {r['scores_baseline_seconds']:.2f} | "
            f"{r['load_before_compaction']:.1f} | "
            f"{verdict(max(c['peak_rss_mb'], s['peak_rss_mb']) <= MEMORY_TARGET_MB)} |")
    lines += ["", "Compaction: DuckDB sorts each table into one zstd file (memory limit, spilling to disk), "
              "then the per-sample summary and labels are materialised, then the status is set; the time is "
              "`finish_run` inside the child. Load: the 1-minute load average just before the step.", ""]
    for r in results:
        d, budget = r["dashboard"], view_budget(r["rows"])
        base = r["dashboard_baseline_scan_seconds"]
        lines += [
            f"## Dashboard at {r['samples']:,} × {r['epochs']} = {r['rows']:,} rows "
            f"(target: every view ≤ {budget:g} s, process < 2 GB)",
            "",
            f"Dashboard process peak RSS: **{d['peak_rss_mb']:,.0f} MB** "
            f"({'within' if d['peak_rss_mb'] < DASHBOARD_MEMORY_TARGET_MB else '**over**'} 2 GB). "
            f"Baseline: one DuckDB scan of all {r['rows']:,} presentations takes {base:.2f} s. "
            f"Load average before: {r['load_before_dashboard']:.1f}, after: {r['load_after']:.1f}.",
            "",
            f"| query (`store.views`, median of {repeat}) | seconds | × baseline |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {seconds:.3f} | {seconds / base:.2f} |" for name, seconds in d["queries"].items()]
        lines += ["", f"| view (`AppTest.run()`) | first s | cold s | warm s | cold × baseline | ≤ {budget:g} s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {label} | {v['first']:.2f} | {v['cold']:.2f} | {v['warm']:.2f} | {v['cold'] / base:.2f} | "
                  f"{verdict(v['cold'] <= budget)} |" for label, v in d["views"].items()]
        lines.append("")
    lines += ["\"first\" is the view's first render in the process (imports, first use); \"cold\" clears "
              "`st.cache_data` first (every query of the view runs); \"warm\" reruns with the cache filled.",
              ""]
    lines += ["## The sample panel's label queries: scanned vs materialised", "",
              "| run | predicted labels: scan s | read s | suggested labels: scan s | read s |",
              "|---|---|---|---|---|"]
    for r in results:
        b = r["labels"]
        lines.append(f"| {r['samples']:,} × {r['epochs']} | {b['predicted_live']:.2f} | {b['predicted_materialised']:.2f} | "
                     f"{b['suggested_live']:.2f} | {b['suggested_materialised']:.2f} |")
    lines += ["", "\"scan\": the SQL of `store.views.samples.predicted_labels` and `store.views.relabel."
              "suggested_labels` (default window) over the presentations, as the sample panel ran them before; "
              "\"read\": the same frames from the `labels.parquet` that compaction materialises "
              "(`store.compaction`), which those views read for a compacted run (the dashboard tables above).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_finish"]:
        child_finish(argv[1])
        return 0
    if argv[:1] == ["_dashboard"]:
        child_dashboard(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda text: [parse_size(part) for part in text.split(",")],
                        default=[(50_000, 200), (1_000_000, 100)], help="SAMPLESxEPOCHS,... (default 50000x200,1000000x100)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the stores (default: a new one under /tmp, removed)")
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown report here")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    work = args.work or Path(tempfile.mkdtemp(prefix="trainmap-bigstore-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for samples, epochs in args.sizes:
            results.append(measure_size(samples, epochs, work, args.repeat))
            shutil.rmtree(work / f"store-{samples}x{epochs}", ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/bench_big_store.py " + " ".join(argv)
    text = markdown(results, args.repeat, command.strip())
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": hardware(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
