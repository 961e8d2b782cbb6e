"""Writes ``<out>/README.md`` and its PNGs from the records alone (never from the store), so
the report is rebuilt identically wherever the records are, and a partial set of records gives
an honest partial report (it says how many of the planned experiments it holds)."""

from __future__ import annotations

import platform
from pathlib import Path

from training.evidence import sections, sections_more
from training.evidence.plan import EvidenceConfig, Experiment
from training.evidence.records import Records
from training.evidence.tables import Results

SECTION_WRITERS = {
    "noise": sections.noise,
    "prune": sections.prune,
    "reweight": sections.reweight,
    "online": sections_more.online,
    "stability": sections_more.stability,
    "cost": sections_more.cost,
}
#: the PNG each section writes
FIGURES = {"noise": "noise.png", "prune": "prune.png", "reweight": "reweight.png", "online": "online.png",
           "stability": "stability.png", "cost": "cost.png"}


def machine_line() -> str:
    """CPU model, cores, memory and Python (as ``benchmarks/machine.py`` describes a machine)."""
    import os

    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = f", {int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores{memory}, Python {platform.python_version()}"


def write_report(plan: list[Experiment], records: Records, config: EvidenceConfig, seeds: int, out: Path,
                 command: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(plan, records, config, seeds)
    tasks = ", ".join(f"{task} ({model})" for task, model in config.tasks)
    lines = [
        "# Evidence: what trainmap's scores and curricula do, on runs you can regenerate",
        "",
        f"Regenerate: `trainmap evidence --config {config.name} --seeds {seeds}` ({command}). Every number below "
        "is computed by that command from the records in `results/` (one JSON per finished experiment, keyed by "
        "a hash of its settings); nothing is typed by hand. The command is resumable: it skips every experiment "
        "that has a record, and rebuilds this page from the records.",
        "",
        f"**This report holds {results.done} of the {len(plan)} planned experiments** "
        f"(configuration `{config.name}`, {seeds} seed(s); tasks {tasks}"
        + (f"; language model {config.lm[0]}" if config.lm else "") + "). "
        + ("All planned experiments are in." if results.done == len(plan) else
           "Sections with missing experiments show what is finished; \"–\" marks a cell without results."),
        "",
        f"Machine of the latest regeneration: {machine_line()}. Runs are ordinary runs in the store "
        "(names `evidence-<section>-<task>-<model>-noise<p>-seed<s>-…`): `trainmap ui --store STORE` shows them.",
        "",
    ]
    for name, writer in SECTION_WRITERS.items():
        lines += writer(results, out)
    path = out / "README.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
