"""Million-point views: the data map and the score-agreement scatter of 1 M-sample runs.

Builds two runs of ``--samples`` samples x ``--epochs`` epochs with
``scripts/make_big_store.py`` (unless ``--store`` points at a store holding them; only the
per-sample summary matters here, so few epochs do), then times

1. the ``store.views.density`` queries (bins over every sample, a box drilled into) against
   a baseline measured in the same run: the existing 20,000-point random sample of the data
   map (``store.views.run.data_map``), the query the points map issues;
2. the Data-map view and the Compare page in ``streamlit.testing.v1.AppTest``, cold
   (``st.cache_data`` cleared) and warm, plus the reruns a user triggers: a region typed in
   (drill-down) and a sample opened from it;
3. the bytes of each figure the browser gets (bounded, whatever the run's size);
4. with ``--screenshot PNG``: `trainmap ui` on the store in Debian's headless Chromium, the
   seconds until the density is drawn, and a screenshot of it (for the README).

    python benchmarks/bench_density.py [--store DIR] [--samples 1000000] [--epochs 5] [--repeat 3]
        [-o benchmarks/results/density.md] [--screenshot docs/screenshots/density_map.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import duckdb  # noqa: E402
import streamlit  # noqa: E402

import store as store_api  # noqa: E402
from machine import hardware  # noqa: E402
from store.views import density as density_views  # noqa: E402
from store.views import run as run_views  # noqa: E402

BUDGET_SECONDS = 1.0
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REGION_KEYS = ("map_region_variability_low", "map_region_variability_high",
               "map_region_confidence_low", "map_region_confidence_high")


def timed(function: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def build(root: Path, samples: int, epochs: int) -> None:
    """Two runs (seeds 0 and 1) through the script's command line, the second renamed so the
    Compare page can tell them apart."""
    for seed in (0, 1):
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_big_store.py"), str(root),
                        "--samples", str(samples), "--epochs", str(epochs), "--seed", str(seed)], check=True)
    store = store_api.Store(root)
    second = store.run_ids()[1]
    store.update_run(second, name=f"{store.run_info(second)['name']}-seed1")


def app(params: dict[str, object], page: str, cold: bool):
    from streamlit.testing.v1 import AppTest

    if cold:
        streamlit.cache_data.clear()
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=300)
    at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def run_clean(at) -> float:
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def figure_bytes(at) -> dict[str, int]:
    """Title -> bytes of each Plotly figure the page sends."""
    sizes = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = (spec["layout"].get("title") or {}).get("text", "").split("<br>")[0]
        sizes[title] = len(chart.proto.spec.encode())
    return sizes


def page_rows(run_a: str, run_b: str, box: tuple[float, ...], repeat: int) -> tuple[list[str], dict[str, int]]:
    """Cold and warm seconds of the Data-map view, its drill-down and sample reruns, Compare."""
    rows, sizes = [], {}
    data_map = {"run": run_a, "view": "Data map"}

    def density_view(cold: bool) -> float:
        return run_clean(app(data_map, "views/run.py", cold))

    def region_rerun(cold: bool) -> float:
        at = app(data_map, "views/run.py", cold)
        run_clean(at)
        if cold:
            streamlit.cache_data.clear()  # the drill-down's own reads uncached
        for key, value in zip(REGION_KEYS, box):
            at.number_input(key=key).set_value(value)
        elapsed = run_clean(at)
        sizes.update(figure_bytes(at))
        return elapsed

    def sample_rerun(cold: bool) -> float:
        at = app(data_map, "views/run.py", False)
        run_clean(at)
        for key, value in zip(REGION_KEYS, box):
            at.number_input(key=key).set_value(value)
        run_clean(at)
        if cold:
            streamlit.cache_data.clear()
        at.number_input(key="sample").set_value(12_345)
        return run_clean(at)

    def compare(cold: bool) -> float:
        at = app({"runs": [run_a, run_b]}, "views/compare.py", cold)
        elapsed = run_clean(at)
        sizes.update(figure_bytes(at))
        return elapsed

    for label, render in (("Run · Data map (density of every sample)", density_view),
                          ("drill-down: a region typed in (rerun)", region_rerun),
                          ("open a sample of the region (rerun)", sample_rerun),
                          ("Compare two 1 M runs (agreement density)", compare)):
        render(True)  # imports and first-use costs, not counted
        cold = statistics.median(render(True) for _ in range(repeat))
        warm = statistics.median(render(False) for _ in range(repeat))
        rows.append(f"| {label} | {cold:.3f} | {warm:.3f} | {'yes' if cold <= BUDGET_SECONDS else '**no**'} |")
    return rows, sizes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot(root: Path, run_id: str, output: Path) -> tuple[float, float]:
    """`trainmap ui` on ``root``, the run's data map in Chromium; seconds until the density is
    drawn on a fresh server (cold caches) and after a reload (warm); the chart saved to ``output``."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("trainmap")), "ui", "--store", str(root), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        cwd=tempfile.mkdtemp(prefix="trainmap-ui-"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start")
                time.sleep(0.3)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(120_000)
            started = time.perf_counter()
            page.goto(f"{base}/run?run={run_id}&view=Data+map")
            page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").first.wait_for(
                state="attached")
            drawn = time.perf_counter() - started
            page.get_by_role("heading", name="Regions").wait_for()
            page.wait_for_timeout(1500)
            chart = page.locator("[data-testid='stPlotlyChart']").first
            chart.scroll_into_view_if_needed()
            box = chart.bounding_box()
            regions = page.get_by_role("heading", name="Regions").bounding_box()
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), clip={"x": box["x"] - 10, "y": box["y"] - 10,
                                                    "width": regions["x"] + 230 - box["x"],
                                                    "height": box["height"] + 20})
            started = time.perf_counter()  # the same page again: a warm server, cached reads
            page.reload()
            page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm image").first.wait_for(
                state="attached")
            again = time.perf_counter() - started
            browser.close()
        return drawn, again
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a store holding two runs made by scripts/make_big_store.py")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path, help="also write the Markdown results here")
    parser.add_argument("--screenshot", type=Path, help="a PNG of the density map in Chromium")
    args = parser.parse_args(argv)
    if args.screenshot is not None and not CHROMIUM.exists():
        parser.error(f"--screenshot needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    if args.store is None:
        args.store = Path(tempfile.mkdtemp(prefix="trainmap-density-")) / "store"
        started = time.perf_counter()
        build(args.store, args.samples, args.epochs)
        print(f"generated two runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    store = store_api.Store(args.store)
    if len(store.run_ids()) < 2:
        parser.error(f"{args.store} needs two runs of the same samples (scripts/make_big_store.py --seed 0 / 1)")
    run_a, run_b = store.run_ids()[:2]
    samples = store_api.sample_count(store, run_a)

    baseline = timed(lambda: run_views.data_map(store, run_a, "correctness"), args.repeat)
    density = density_views.map_density(store, run_a, "correctness")
    # a box of the hard-to-learn corner: a tenth of the variability range by a third of the confidence's
    (x0, x1), (y0, y1) = density.x_range, density.y_range
    box = (round(x0 + 0.3 * (x1 - x0), 4), round(x0 + 0.45 * (x1 - x0), 4),
           round(y0 + 0.1 * (y1 - y0), 4), round(y0 + 0.45 * (y1 - y0), 4))
    region = density_views.map_region_points(store, run_a, "correctness", box[:2], box[2:])
    queries = {
        "map_density (100 × 100 bins, every sample)": lambda: density_views.map_density(store, run_a, "correctness"),
        "map_density (200 × 200 bins)": lambda: density_views.map_density(store, run_a, "correctness", 200, 200),
        f"map_region_points (a box of {region.total:,} samples, ≤ 5,000 drawn)":
            lambda: density_views.map_region_points(store, run_a, "correctness", box[:2], box[2:]),
        f"map_region_points (the whole map, {samples:,} samples, ≤ 5,000 drawn)":
            lambda: density_views.map_region_points(store, run_a, "correctness", density.x_range, density.y_range),
        "agreement_density (el2n, two runs joined, 100 × 100)":
            lambda: density_views.agreement_density(store, run_a, run_b, "el2n"),
        "agreement_region_points (el2n, a box, ≤ 5,000 drawn)":
            lambda: density_views.agreement_region_points(store, run_a, run_b, "el2n", (0.2, 0.6), (0.2, 0.6)),
        "for context: score_agreement (el2n: Spearman, top-k, 20,000-point sample)":
            lambda: store_api.score_agreement(store, run_a, run_b, "el2n"),
        "for context: run_region_cutoffs (the page's cut-offs)":
            lambda: run_views.run_region_cutoffs(store, run_a),
    }
    lines = [
        f"Runs: two of {samples:,} samples (synthetic, `scripts/make_big_store.py --samples {samples} "
        f"--epochs {args.epochs}`, seeds 0 and 1; only the per-sample summary is read).",
        f"Machine: {hardware()}; Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"Streamlit {streamlit.__version__}; load average {os.getloadavg()[0]:.1f} when the timings began "
        "(other processes share the cores: compare the ratios to the baseline, measured alongside).",
        "",
        f"Baseline: the points map's query, `store.views.run.data_map` (a 20,000-point random sample of the "
        f"{samples:,}), takes **{baseline:.3f} s** (median of {args.repeat}).",
        "",
        f"### Queries (`store.views.density`, median of {args.repeat}; budget ≤ {BUDGET_SECONDS:.0f} s)",
        "",
        "| query | seconds | × baseline | within budget |",
        "|---|---|---|---|",
    ]
    within = True
    for name, query in queries.items():
        seconds = timed(query, args.repeat)
        ok = seconds <= BUDGET_SECONDS
        if not name.startswith("for context"):
            within &= ok
        lines.append(f"| {name} | {seconds:.3f} | {seconds / baseline:.2f} | {'yes' if ok else '**no**'} |")

    os.environ["TRAINMAP_STORE"] = str(args.store)
    os.environ.pop("TRAINMAP_DENSITY_THRESHOLD", None)
    rows, sizes = page_rows(run_a, run_b, box, args.repeat)
    lines += ["", f"### Pages (`AppTest.run()`, whole script incl. Streamlit overhead, median of {args.repeat})",
              "", "| view | cold s | warm s | cold within 1 s |", "|---|---|---|---|", *rows]
    lines += ["", "What a cold view reads besides the density: *open a sample* — the sample view's first read "
              "of the run, every sample's suggested and last-predicted label (`labels.parquet`, which "
              "compaction materialises; `store.views.relabel`, `store.views.samples`); *Compare* — "
              "`score_agreement`'s Spearman correlation and top-k overlap over every joined sample."]
    lines += ["", "### What the browser gets (bytes of each figure's JSON)", "", "| figure | bytes |", "|---|---|"]
    lines += [f"| {title} | {size:,} |" for title, size in sizes.items()]
    if args.screenshot is not None:
        drawn, again = screenshot(args.store, run_a, args.screenshot)
        lines += ["", f"Chromium: the density of {samples:,} samples is drawn **{drawn:.1f} s** after the page is "
                  f"requested from a freshly started `trainmap ui` (Streamlit's first script run and cold caches "
                  f"included), **{again:.1f} s** after a reload; screenshot `{args.screenshot}` "
                  f"({args.screenshot.stat().st_size / 1024:.0f} KB)."]
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            "# Million-point views benchmark\n\n`python benchmarks/bench_density.py -o benchmarks/results/density.md "
            "--screenshot docs/screenshots/density_map.png` (budget: each density and drill-down query "
            "≤ 1 s on 1 M samples).\n\n" + table + "\n")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
