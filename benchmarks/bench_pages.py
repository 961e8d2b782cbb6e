"""Time to a fully rendered dashboard page in headless Chromium, for every page and tab.

Serves a copy of ``sample_runs/`` with ``trainmap ui`` on 127.0.0.1 and drives Debian's
Chromium (Playwright, 1400 x 900) over the Runs page, the Run page's tabs (Curves, Data
map with a sample opened, Scores, Samples), Compare and Curriculum (its default preview,
and a soft-mode strategy chosen in the page). The Curves tab would also draw a run's groups;
the sample runs have none. The same is done for baselines, static Streamlit pages served the
same way: one ``st.write`` (the ratios' reference), one Plotly chart beside it (Plotly's
bundle), and four line charts of 1,260 points drawn with WebGL (``Scattergl``) or SVG
(``Scatter``).

**Rendered** means, all at once: the app's script state (``data-test-script-state`` of
``stApp``) is ``notRunning`` after a script run that began after the navigation or action;
no ``stSkeleton`` element is left; every ``stPlotlyChart`` holds a Plotly graph that has
laid itself out (``_fullLayout``) and drawn its SVG (``.main-svg``); the page shows its
expected text and no exception box; and nothing in the DOM has changed for ``--quiet-ms``
(300 ms). The time reported is from the navigation (``performance.timeOrigin``) or from the
action (the click that chose the strategy) to the last DOM change before that quiet window.

**Cold** is the first visit of that page after a fresh server start, in a fresh browser
context (empty HTTP cache, empty ``st.cache_data``); **warm** is the visit right after it,
in the same context and server. Each figure is the median over ``--repeat`` server starts.
Both are measured idle and while ``trainmap train --task mnist1d --model cnn`` trains into
the same store on the same machine. Beside the times, the CPU seconds that the cold visit
cost the server (``trainmap ui`` and its Streamlit child) and the browser (Playwright's
driver and every Chromium process) show which side a slow page waits for, also on a
machine whose load makes the times themselves noisy.

    python benchmarks/bench_pages.py [--repeat 3] [--cases runs,compare] [--no-training] \\
        [-o benchmarks/results/pages.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))

from machine import hardware  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [  # as tests/dashboard/test_browser.py
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
#: The target of issue 15: every page rendered within this many seconds.
TARGET_SECONDS = 2.0
#: What every baseline page writes.
BASELINE_TEXT = "trainmap benchmark baseline"
#: The baselines: static Streamlit pages served like the dashboard (same flags, same browser).
BASELINE_SCRIPTS = {
    "write": f'import streamlit as st\n\nst.write({BASELINE_TEXT!r})\n',
    # what any page with a chart pays: Plotly's bundle, parsed and run in the browser
    "plotly": ('import plotly.graph_objects as go\nimport streamlit as st\n\n'
               f'st.write({BASELINE_TEXT!r})\n'
               'st.plotly_chart(go.Figure(go.Scatter(x=list(range(20)), y=list(range(20)))))\n'),
}
#: Four line charts of 1,260 points (as many as the sample runs' steps), drawn with WebGL or SVG.
LINES_SCRIPT = ('import plotly.graph_objects as go\nimport streamlit as st\n\n'
                f'st.write({BASELINE_TEXT!r})\n'
                'for chart in range(4):\n'
                '    points = [(step * 7919 + chart) % 101 for step in range(1260)]\n'
                '    st.plotly_chart(go.Figure(go.{trace}(x=list(range(1260)), y=points, mode="lines")), '
                'key=f"chart{{chart}}")\n')
BASELINE_SCRIPTS["webgl-lines"] = LINES_SCRIPT.format(trace="Scattergl")
BASELINE_SCRIPTS["svg-lines"] = LINES_SCRIPT.format(trace="Scatter")

#: Installed into every page before its own scripts: DOM changes and script-state changes,
#: timed with performance.now() (milliseconds since the navigation started).
OBSERVER_SCRIPT = """
(() => {
  window.__bench = {lastMutation: 0, runStarts: [], runEnds: []};
  const watch = () => {
    new MutationObserver((records) => {
      const now = performance.now();
      window.__bench.lastMutation = now;
      for (const record of records) {
        if (record.type === 'attributes' && record.attributeName === 'data-test-script-state') {
          const state = record.target.getAttribute('data-test-script-state');
          if (state === 'running') window.__bench.runStarts.push(now);
          if (state === 'notRunning') window.__bench.runEnds.push(now);
        }
      }
    }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
  };
  if (document.documentElement) watch(); else document.addEventListener('DOMContentLoaded', watch);
})();
"""

#: Resolves when the page is rendered (see the module docstring) or the timeout passes.
WAIT_SCRIPT = """
async ([expected, since, quietMs, timeoutMs]) => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const deadline = performance.now() + timeoutMs;
  const state = () => {
    const app = document.querySelector("[data-testid='stApp']");
    const bench = window.__bench;
    const text = document.body ? document.body.innerText : '';
    const charts = [...document.querySelectorAll("[data-testid='stPlotlyChart']")];
    const drawn = charts.filter((chart) => {
      const graph = chart.querySelector('.js-plotly-plot');
      return graph && graph._fullLayout && graph.querySelector('.main-svg');
    }).length;
    return {
      script: app ? app.getAttribute('data-test-script-state') : null,
      ranSince: bench.runEnds.some((end) => end > since),
      skeletons: document.querySelectorAll("[data-testid='stSkeleton']").length,
      charts: charts.length, drawn,
      exception: document.querySelectorAll("[data-testid='stException']").length > 0,
      expected: expected.every((needle) => text.includes(needle)),
    };
  };
  while (performance.now() < deadline) {
    const now = state();
    const ready = now.script === 'notRunning' && now.ranSince && now.skeletons === 0 &&
      now.drawn === now.charts && now.expected && !now.exception;
    const quiet = performance.now() - window.__bench.lastMutation;
    if (ready && quiet >= quietMs) {
      return {ok: true, renderedAt: Math.max(window.__bench.lastMutation, since), charts: now.charts};
    }
    if (now.exception) return {ok: false, reason: 'exception box on the page', state: now};
    await sleep(25);
  }
  return {ok: false, reason: 'timeout', state: state()};
}
"""


@dataclass(frozen=True)
class Case:
    """One page (or one action on a page) to time."""

    name: str
    #: URL path and query, given the sample runs' ids by name
    url: Callable[[dict[str, str]], str]
    #: texts that the rendered page shows
    expected: tuple[str, ...]
    #: an action on the loaded page, not timed (choosing the strategy whose mode is then timed)
    prepare: Callable[[object], None] | None = None
    #: an action timed on the loaded page instead of the navigation (choosing soft mode)
    action: Callable[[object], None] | None = None
    #: texts the page shows after the action
    after_action: tuple[str, ...] = ()
    #: a key of ``BASELINE_SCRIPTS``: served instead of the dashboard
    baseline: str | None = None


def choose(page, box: str, option: str) -> None:
    """Pick ``option`` in the select box labelled ``box``."""
    page.locator("[data-testid='stSelectbox']").filter(has_text=box).click()
    page.get_by_role("option", name=option, exact=True).click()


def choose_noise_strategy(page) -> None:
    choose(page, "Strategy", "downweight-noise (reweight)")


def choose_soft_mode(page) -> None:
    choose(page, "mode", "soft")


SOURCE, RERUN = "cnn-noise20-s0", "cnn-noise20-s0-clean"
#: The pages (and baselines) by the key ``--cases`` names them with.
CASES = {
    "baseline": Case("baseline: one st.write", lambda ids: "/", (BASELINE_TEXT,), baseline="write"),
    "plotly-baseline": Case("baseline: st.write + one Plotly chart", lambda ids: "/", (BASELINE_TEXT,),
                            baseline="plotly"),
    "webgl-lines": Case("baseline: 4 line charts in WebGL (Scattergl)", lambda ids: "/", (BASELINE_TEXT,),
                        baseline="webgl-lines"),
    "svg-lines": Case("baseline: the same 4 in SVG (Scatter)", lambda ids: "/", (BASELINE_TEXT,),
                      baseline="svg-lines"),
    "runs": Case("Runs", lambda ids: "/", ("Filter by name or id",)),
    "curves": Case("Run · Curves", lambda ids: f"/run?run={ids[SOURCE]}&view=Curves",
                   (SOURCE, "Best val accuracy")),
    "map": Case("Run · Data map + sample", lambda ids: f"/run?run={ids[SOURCE]}&view=Data+map&sample=8",
                (SOURCE, "Regions", "Sample 8")),
    "scores": Case("Run · Scores", lambda ids: f"/run?run={ids[SOURCE]}&view=Scores", (SOURCE, "Distribution of")),
    "samples": Case("Run · Samples", lambda ids: f"/run?run={ids[SOURCE]}&view=Samples",
                    (SOURCE, "Most forgotten")),
    "compare": Case("Compare (rerun vs parent)", lambda ids: f"/compare?runs={ids[RERUN]}&runs={ids[SOURCE]}",
                    ("Spearman rank correlation",)),
    "curriculum": Case("Curriculum · default preview", lambda ids: "/curriculum",
                       ("Effective sample count", "Launch rerun")),
    "soft": Case("Curriculum · downweight-noise, soft mode chosen", lambda ids: "/curriculum",
                 ("Effective sample count", "Launch rerun"), prepare=choose_noise_strategy, action=choose_soft_mode,
                 after_action=("temperature", "Launch rerun")),
}



@dataclass
class Timings:
    """Seconds per repeat: to rendered (cold, warm), and the CPU seconds the cold visit cost
    the server (its process tree) and the browser (Playwright's driver and Chromium)."""

    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    server_cpu_cold: list[float] = field(default_factory=list)
    browser_cpu_cold: list[float] = field(default_factory=list)


# -- the server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


class Server:
    """``trainmap ui`` on a free port (or plain ``streamlit run`` of the baseline script)."""

    def __init__(self, store: Path, workdir: Path, baseline: str | None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        if baseline is not None:
            script = workdir / f"baseline_{baseline}.py"
            script.write_text(BASELINE_SCRIPTS[baseline])
            # the flags dashboard/launch.py's streamlit_command gives `trainmap ui`
            command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
                       "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
                       "--server.address", "127.0.0.1", "--server.port", str(self.port)]
        else:
            command = [str(Path(sys.executable).with_name("trainmap")), "ui", "--store", str(store),
                       "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("streamlit did not start: " + self.log_path.read_text()[-2000:])
            time.sleep(0.2)

    def cpu(self) -> float:
        return process_tree_cpu(self.process.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


# -- one visit -------------------------------------------------------------------------


def wait_rendered(page, expected: tuple[str, ...], since_ms: float, quiet_ms: int, timeout_s: float) -> float:
    """Seconds from ``since_ms`` (page clock) to the rendered page; raises when it never renders."""
    result = page.evaluate(WAIT_SCRIPT, [list(expected), since_ms, quiet_ms, timeout_s * 1000])
    if not result["ok"]:
        raise RuntimeError(f"page not rendered ({result['reason']}): {json.dumps(result.get('state'))}")
    return (result["renderedAt"] - since_ms) / 1000


def browser_cpu() -> float:
    """CPU seconds of this process's Playwright driver and every Chromium process under it."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    total = 0.0
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"playwright" in command:
            total += process_tree_cpu(pid)
    return total


@dataclass(frozen=True)
class Visit:
    """One timed visit: seconds to rendered, and the CPU seconds the server and the browser
    spent over the same span."""

    seconds: float
    server_cpu: float
    browser_cpu: float


def visit(page, server: Server, case: Case, ids: dict[str, str], quiet_ms: int, timeout_s: float) -> Visit:
    """Time the navigation to the rendered page (or, for a case with an action, the action to
    the re-rendered page)."""
    cpu = (server.cpu(), browser_cpu())
    page.goto(server.base + case.url(ids), wait_until="commit")
    seconds = wait_rendered(page, case.expected, 0.0, quiet_ms, timeout_s)
    if case.action is not None:
        if case.prepare is not None:
            started = page.evaluate("performance.now()")
            case.prepare(page)
            wait_rendered(page, case.expected, started, quiet_ms, timeout_s)
        started, cpu = page.evaluate("performance.now()"), (server.cpu(), browser_cpu())
        case.action(page)
        seconds = wait_rendered(page, case.after_action, started, quiet_ms, timeout_s)
    return Visit(seconds, server.cpu() - cpu[0], browser_cpu() - cpu[1])


def run_ids(store: Path) -> dict[str, str]:
    return {json.loads(path.read_text())["name"]: path.parent.name
            for path in sorted((store / "runs").glob("*/run.json"))}


def measure(cases: list[Case], store: Path, workdir: Path, repeat: int, quiet_ms: int, timeout_s: float,
            browser) -> dict[str, Timings]:
    ids = run_ids(store)
    timings = {case.name: Timings() for case in cases}
    for _ in range(repeat):
        for case in cases:
            server = Server(store, workdir, case.baseline)
            try:
                context = browser.new_context(viewport=VIEWPORT)
                context.add_init_script(OBSERVER_SCRIPT)
                page = context.new_page()
                cold = visit(page, server, case, ids, quiet_ms, timeout_s)
                timings[case.name].cold.append(cold.seconds)
                timings[case.name].server_cpu_cold.append(cold.server_cpu)
                timings[case.name].browser_cpu_cold.append(cold.browser_cpu)
                timings[case.name].warm.append(visit(page, server, case, ids, quiet_ms, timeout_s).seconds)
                context.close()
            finally:
                server.stop()
            print(f"  {case.name}: cold {timings[case.name].cold[-1]:.2f} s, "
                  f"warm {timings[case.name].warm[-1]:.2f} s", file=sys.stderr)
    return timings


# -- training beside it ----------------------------------------------------------------


class Training:
    """``trainmap train --task mnist1d --model cnn`` into the store; stopped when done measuring."""

    def __init__(self, store: Path, workdir: Path, epochs: int):
        self.log = (workdir / "train.log").open("w")
        before = set(run_ids(store).values())
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("trainmap")), "train", "--task", "mnist1d", "--model", "cnn",
             "--epochs", str(epochs), "--name", "bench-training", "--no-progress", "--store", str(store)],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while not set(run_ids(store).values()) - before:  # training has begun once its run exists
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("trainmap train did not start: " + (workdir / "train.log").read_text()[-2000:])
            time.sleep(0.5)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# -- report ----------------------------------------------------------------------------


def machine(browser_version: str) -> str:
    import streamlit

    return (f"{hardware()}; Linux {platform.release()}; Python "
            f"{platform.python_version()}, Streamlit {streamlit.__version__}, Chromium {browser_version}")


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def table(timings: dict[str, Timings]) -> list[str]:
    """One row per case: cold and warm medians, × the first baseline's, CPU of the cold visit,
    and whether the page met the target."""
    base = timings[CASES["baseline"].name]
    base_cold, base_warm = statistics.median(base.cold), statistics.median(base.warm)
    lines = ["| page | cold s | warm s | cold × baseline | warm × baseline | server CPU s (cold) "
             f"| browser CPU s (cold) | ≤ {TARGET_SECONDS:g} s |", "|---|---|---|---|---|---|---|---|"]
    for name, timing in timings.items():
        cold, warm = statistics.median(timing.cold), statistics.median(timing.warm)
        lines.append(f"| {name} | {cold:.2f} | {warm:.2f} | {cold / base_cold:.1f} | {warm / base_warm:.1f} | "
                     f"{statistics.median(timing.server_cpu_cold):.2f} | "
                     f"{statistics.median(timing.browser_cpu_cold):.2f} | "
                     f"{'yes' if max(cold, warm) <= TARGET_SECONDS else '**no**'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="server starts per page (default: 3)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help="which pages, comma-separated, of: " + ", ".join(CASES)
                        + " (the baseline is always measured)")
    parser.add_argument("--no-training", action="store_true", help="measure idle only")
    parser.add_argument("--train-epochs", type=int, default=500,
                        help="epochs of the run that trains beside the pages (stopped when done)")
    parser.add_argument("--quiet-ms", type=int, default=300, help="DOM quiet time that ends a render")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a page may take at most")
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown report here")
    args = parser.parse_args(argv)
    unknown = [key for key in args.cases.split(",") if key not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; expected some of: {', '.join(CASES)}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if not CHROMIUM.exists():
        parser.error(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    keys = ["baseline", *dict.fromkeys(key for key in args.cases.split(",") if key != "baseline")]
    cases = [CASES[key] for key in keys]

    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, Timings]] = {}
    loads = {}
    with tempfile.TemporaryDirectory(prefix="trainmap-bench-pages-") as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        description = machine(browser.version)
        phases = ["idle"] if args.no_training else ["idle", "training"]
        for phase in phases:
            workdir = Path(tmp) / phase
            workdir.mkdir()
            store = workdir / "store"
            shutil.copytree(REPO / "sample_runs", store)
            print(f"{phase}: load average {load()}", file=sys.stderr)
            training = Training(store, workdir, args.train_epochs) if phase == "training" else None
            try:
                loads[phase] = [load()]
                results[phase] = measure(cases, store, workdir, args.repeat, args.quiet_ms, args.timeout, browser)
                loads[phase].append(load())
                if training is not None and not training.running():
                    raise RuntimeError("the training run ended before the pages were measured; "
                                       "raise --train-epochs")
            finally:
                if training is not None:
                    training.stop()
        browser.close()
    lines = [f"Machine: {description}.", "", f"Medians of {args.repeat} server start(s) per page; "
             "× baseline: against the first baseline of the same phase."]
    for phase, timings in results.items():
        before, after = loads[phase]
        lines += ["", f"### {phase}" + (" (`trainmap train --task mnist1d --model cnn` training into the "
                                        "same store)" if phase == "training" else ""),
                  "", f"Load average (1 / 5 / 15 min): {before} at the start, {after} at the end.", "",
                  *table(timings)]
    report = "\n".join(lines)
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            "# Dashboard pages in a browser\n\n`python benchmarks/bench_pages.py -o benchmarks/results/pages.md`"
            f" (target: every page rendered within {TARGET_SECONDS:g} s; what *rendered*, *cold* and *warm* "
            "mean: the script's docstring).\n\n" + report + "\n")
    worst = max((max(statistics.median(t.cold), statistics.median(t.warm))
                 for phase in results.values() for name, t in phase.items() if not name.startswith("baseline")),
                default=0.0)
    return 0 if worst <= TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
