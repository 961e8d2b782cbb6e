"""``trainmap evidence``: run the experiments of the evidence report that have no record yet,
then rebuild the report (``docs/evidence/README.md`` and its PNGs) from the records.

Torch-free at import: the handler imports the training code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from training.cli.common import CliError, add_store_argument, positive_int, require_training_extra, store_path
from training.evidence.plan import SECTIONS  # torch-free

REPORT_EVERY_SECONDS = 600


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "evidence",
        help="regenerate the evidence report (noise finding vs cleanlab, pruning, reweighting, online rules, "
        "stability, cost)",
        description="Train the report's runs (ordinary runs in the store) and write docs/evidence/README.md with "
        "its tables and PNG plots. Resumable: every finished experiment leaves a JSON record under OUT/results/ "
        "and is skipped next time; the report is always rebuilt from the records. Needs the training and report "
        "extras (pip install 'trainmap[train,report]').",
    )
    parser.add_argument("--out", default="docs/evidence", help="report folder (default: docs/evidence)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per setting (default: 3)")
    parser.add_argument("--config", default="full", choices=("full", "tiny"),
                        help="full: the report; tiny: one small task, 2 epochs, a few strategies (a smoke test)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", default=None,
                        help=f"run only these sections' experiments ({', '.join(SECTIONS)}); the report shows all")
    parser.add_argument("--report-only", action="store_true", help="train nothing: rebuild the report from the records")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {str(out)!r} is a file; expected a folder for the report")
    path = store_path(args)
    if path.exists() and not path.is_dir():
        raise CliError(f"store path {str(path)!r} is a file; expected a store directory")
    require_training_extra("evidence")
    try:
        import cleanlab  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise CliError(f"trainmap evidence needs the report extra ({error.name} is missing): "
                       "pip install 'trainmap[report]'") from None
    from training.evidence.plan import CONFIGS, build_plan
    from training.evidence.records import Records
    from training.evidence.report import write_report
    from training.evidence.runner import Runner

    config = CONFIGS[args.config]()
    plan = build_plan(config, args.seeds)
    records = Records(out)
    runner = Runner(path, records, plan, config, progress=not args.no_progress)
    todo = build_plan(config, args.seeds, tuple(args.only or SECTIONS))
    pending = runner.pending(todo)
    print(f"trainmap evidence: {len(plan) - len(runner.pending(plan))} of {len(plan)} planned experiments have "
          f"records in {records.folder}; {0 if args.report_only else len(pending)} to run now (store {path})",
          file=sys.stderr)
    command = f"store `{path}`" + (f", only {' '.join(args.only)}" if args.only else "")
    last = [time.monotonic()]

    def now_and_then() -> None:  # the report of a long regeneration, rewritten every 10 minutes
        if time.monotonic() - last[0] > REPORT_EVERY_SECONDS:
            write_report(plan, records, config, args.seeds, out, command)
            last[0] = time.monotonic()

    try:
        if not args.report_only and pending:
            runner.run(todo, after_each=now_and_then)
    finally:  # also when interrupted: the report holds every record written so far
        report = write_report(plan, records, config, args.seeds, out, command)
    if runner.failed:
        for name, why in runner.failed:
            print(f"trainmap evidence: {name}: {why}", file=sys.stderr)
        print(f"trainmap evidence: {len(runner.failed)} experiment(s) failed; run the command again to retry them",
              file=sys.stderr)
    print(report)
    return 1 if runner.failed else 0
