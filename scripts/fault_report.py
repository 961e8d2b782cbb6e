"""Regenerate ``benchmarks/results/faults.md``: the bad-input corpus (``scripts/fault_corpus.py``)
and the kill, resume and concurrency scenarios (``scripts/fault_scenarios.py``), with the
machine they ran on. It trains a few small runs, so it takes a while; one progress line per
case group and per scenario goes to stderr.

    python scripts/fault_report.py                 # everything, into benchmarks/results/faults.md
    python scripts/fault_report.py --smoke -o F    # 3 corpus cases and one kill (the suite's smoke test)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import fault_corpus  # noqa: E402
import fault_scenarios  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "faults.md"
SMOKE_CASES = ("store.json schema_version -5", "truncated segment: dynamics", "train --lr inf")


def progress(message: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    memory = ""
    try:
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory = f", {int(total.split()[1]) / 2**20:.0f} GiB memory"
    except (OSError, StopIteration):
        pass
    return (f"{platform.system()} {platform.release()}, {platform.machine()}, {os.cpu_count()} CPU cores{memory}, "
            f"Python {platform.python_version()}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} (1 / 5 / 15 min)")


# -- the corpus ----------------------------------------------------------------------


def run_corpus(workdir: Path, names: tuple[str, ...] | None = None) -> tuple[list, list]:
    """Every CLI and URL case (or only ``names``): ``[(case, outcome, problems)]`` for each kind."""
    cli = [case for case in fault_corpus.cli_cases() if names is None or case.name in names]
    urls = [case for case in fault_corpus.url_cases() if names is None or case.name in names]
    progress(f"corpus: {len(cli)} command lines")
    outcomes = fault_corpus.run_cases(cli, workdir / "cli")
    cli_rows = [(case, outcomes[case.name], outcomes[case.name].problems(case.expected)) for case in cli]
    url_rows = []
    for index, case in enumerate(urls):
        outcome = fault_corpus.run_url_case(case, workdir / "url" / f"case-{index}")
        url_rows.append((case, outcome, fault_corpus.url_problems(case, outcome)))
    progress(f"corpus: {len(urls)} dashboard URLs; "
             f"{sum(1 for *_, problems in cli_rows + url_rows if problems)} cases with a problem")
    return cli_rows, url_rows


def counts(rows: list) -> tuple[int, ...]:
    """Clean refusals, one-line refusals (a URL case shows in-app messages instead), tracebacks,
    stores changed, stores created, known bugs."""
    return (sum(1 for _, _, problems in rows if not problems),
            sum(1 for case, outcome, _ in rows
                if isinstance(case, fault_corpus.UrlCase) or len(outcome.stderr_lines) == 1),
            sum(1 for _, outcome, _ in rows if outcome.traceback),
            sum(1 for _, outcome, _ in rows if outcome.store_changed),
            sum(1 for _, outcome, _ in rows if outcome.created),
            sum(1 for case, _, _ in rows if case.xfail))


def corpus_section(cli_rows: list, url_rows: list) -> list[str]:
    lines = ["## Bad-input corpus", "",
             f"{len(cli_rows)} command lines and {len(url_rows)} dashboard URLs (`scripts/fault_corpus.py`; the suite "
             "runs each: `tests/cli/test_bad_input_corpus.py`). A command line passes with a non-zero exit, exactly "
             "one stderr line containing the expected text, no traceback, the store's checksum unchanged and no new "
             "store created; a URL with no exception or traceback text, the expected in-app message, and the store "
             "unchanged.", "",
             "| category | cases | clean refusals | one line | tracebacks | store changed | created on refusal "
             "| known bugs (xfail) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_category: dict[str, list] = {}
    for row in cli_rows + url_rows:
        by_category.setdefault(row[0].category, []).append(row)
    total = cli_rows + url_rows
    for category, rows in [*by_category.items(), ("**all**", total)]:
        lines.append(f"| {category} | {len(rows)} | " + " | ".join(str(n) for n in counts(rows)) + " |")
    failing = [(case, problems) for case, _, problems in total if problems]
    if failing:
        lines += ["", "Cases that break the rule (a known bug is marked xfail in the suite, with its file):", ""]
        lines += [f"- `{case.name}`: {'; '.join(problems)}" + (f" — {case.xfail}" if case.xfail else "")
                  for case, problems in failing]
    lines += ["", "<details><summary>Every command-line case and its stderr line</summary>", "",
              "| case | category | exit | stderr (first 140 characters) |", "|---|---|---:|---|"]
    for case, outcome, _ in cli_rows:
        shown = (outcome.stderr_lines[-1] if outcome.stderr_lines else "").replace("|", "\\|")[:140]
        lines.append(f"| `{case.name[:70]}` | {case.category} | {outcome.returncode} | {shown} |")
    lines += ["", "</details>", ""]
    return lines


# -- scenarios -----------------------------------------------------------------------


def rows_text(rows: fault_scenarios.Rows) -> str:
    return (f"{rows.epochs_done} / {rows.presentation_epochs} / {rows.epoch_rows} / {rows.step_epochs}"
            f"{'' if rows.partial_epochs == 0 else f', {rows.partial_epochs} partial'}"
            f"{'' if rows.duplicates == 0 else f', {rows.duplicates} duplicated'}"
            f"{'' if rows.steps_contiguous else ', steps not contiguous'}")


def kill_section(results: list) -> list[str]:
    lines = ["## Kill scenarios", "",
             "A 20-epoch `trainmap train --task digits --model mlp` in its own process group, killed 0.2 s after its "
             "first checkpoint appeared (or as soon as its end-of-run compaction began; the epochs it had recorded "
             "by then are in the table), then `trainmap repair --run`. Epochs are given "
             "as run.json `epochs_done` / whole epochs of presentations / per-epoch table / per-step table "
             "(read raw from the files, no de-duplication). The trainer starts with the default handling of SIGINT, "
             "SIGHUP and SIGTERM, as from a terminal (under `nohup` SIGHUP is ignored, as asked).", "",
             "| scenario | trainer exit | traceback | stored status | readers show | after (s) | epochs before repair "
             "| repair | status after | epochs after repair | consistent |", "|---|---:|---|---|---|---:|---|---|---|---|---|"]
    for r in results:
        after = "never" if r.shown_after_secs is None else f"{r.shown_after_secs:.1f}"
        lines.append(f"| {r.name} | {r.exit_code} | {'yes' if r.trainer_traceback else 'no'} | {r.stored_status} "
                     f"| {r.shown_status} | {after} | {rows_text(r.before_repair)} | {r.repair_said or r.repair_exit} "
                     f"| {r.status_after_repair}{' (compacted)' if r.compacted_after_repair else ''} "
                     f"| {rows_text(r.after_repair)} | {'yes' if r.after_repair.consistent else 'no'} |")
    errors = [f"- {r.name}: {r.shown_error}" for r in results if r.shown_error]
    if errors:
        lines += ["", "What readers say about the stopped run:", "", *errors]
    return lines + [""]


def resume_section(results: list) -> list[str]:
    lines = ["## Resume scenarios", "",
             "`trainmap train --resume RUN_ID` after the first process stopped; epochs as above.", "",
             "| scenario | first exit | resume exit | status | max epochs | epochs on disk | duplicates | steps contiguous "
             "| consistent | last line |", "|---|---:|---:|---|---:|---|---:|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.first_exit} | {r.resume_exit} | {r.status} | {r.max_epochs} | {rows_text(r.rows)} "
                     f"| {r.rows.duplicates} | {'yes' if r.rows.steps_contiguous else 'no'} "
                     f"| {'yes' if r.rows.consistent else 'no'} | {r.resume_said.replace('|', '/')} |")
    return lines + [""]


def concurrency_section(results: list) -> list[str]:
    lines = ["## Concurrency", "",
             "| scenario | reads done | reads while a run compacted | errors | data complete | detail |",
             "|---|---:|---:|---:|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.reads} | {r.reads_during_compaction} | {r.errors} "
                     f"| {'yes' if r.data_complete else 'no'} | {r.detail}{'; ' + r.first_error if r.first_error else ''} |")
    return lines + [""]


def run_scenarios(workdir: Path, kills: list[str], resumes: list[str], concurrency: bool) -> tuple[list, list, list]:
    kill_results, resume_results, concurrency_results = [], [], []
    for index, name in enumerate(kills):
        started = time.monotonic()
        result = fault_scenarios.kill_scenario(name, workdir / f"kill-{index}")
        kill_results.append(result)
        progress(f"kill {index + 1}/{len(kills)}: {name}: readers show {result.shown_status}, after repair "
                 f"{result.status_after_repair}, consistent {result.after_repair.consistent} "
                 f"({time.monotonic() - started:.0f} s)")
    for index, name in enumerate(resumes):
        result = fault_scenarios.resume_scenario(name, workdir / f"resume-{index}")
        resume_results.append(result)
        progress(f"resume {index + 1}/{len(resumes)}: {name}: exit {result.resume_exit}, consistent "
                 f"{result.rows.consistent}")
    if concurrency:
        concurrency_results += fault_scenarios.two_writers_scenario(workdir / "two-writers")
        progress(f"concurrency: two writers: {[(r.reads, r.errors) for r in concurrency_results]} (reads, errors)")
        concurrency_results.append(fault_scenarios.compaction_race_scenario(workdir / "race"))
        progress(f"concurrency: compaction race: {concurrency_results[-1].reads} reads, "
                 f"{concurrency_results[-1].errors} errors")
    return kill_results, resume_results, concurrency_results


def report(smoke: bool, output: Path) -> str:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trainmap-faults-") as folder:
        workdir = Path(folder)
        cli_rows, url_rows = run_corpus(workdir / "corpus", SMOKE_CASES if smoke else None)
        kills = list(fault_scenarios.KILLS)[:1] if smoke else list(fault_scenarios.KILLS)
        if smoke:
            result = fault_scenarios.kill_scenario(kills[0], workdir / "kill-0")
            progress(f"kill 1/1: {kills[0]}: readers show {result.shown_status}")
            scenarios = ([result], [], [])
        else:
            scenarios = run_scenarios(workdir, kills, list(fault_scenarios.RESUMES), concurrency=True)
    minutes = (time.monotonic() - started) / 60
    lines = ["# Fault report (issue 16)", "",
             f"Regenerate with `python scripts/fault_report.py` ({minutes:.0f} min on this machine"
             f"{', smoke run: 3 corpus cases and one kill' if smoke else ''}). Generated "
             f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
             f"Machine: {machine()}. The machine was shared with other jobs while this ran, so waiting times "
             "(how soon a reader shows a stopped run) are upper bounds; the counts do not depend on it.", ""]
    lines += corpus_section(cli_rows, url_rows)
    lines += kill_section(scenarios[0])
    if scenarios[1]:
        lines += resume_section(scenarios[1])
    if scenarios[2]:
        lines += concurrency_section(scenarios[2])
    text = "\n".join(lines).rstrip() + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    progress(f"wrote {output}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="3 corpus cases and one kill scenario")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    report(args.smoke, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
