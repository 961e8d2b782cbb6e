"""``trainmap repair``: runs left behind by a dead process, written down as readers show them
and compacted (``store.repair``)."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.common import add_store_argument, check_run, open_store


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "repair", help="finish the runs a dead training process left behind",
        description="For each run whose training process is gone (killed, out of memory, its node lost, "
        "killed while compacting): write its status as readers show it (interrupted, or finished when all "
        "its epochs were recorded) and compact its segments, picking up an interrupted compaction. "
        "Runs still training, and runs that need nothing, are left alone.",
    )
    parser.add_argument("--run", action="append", default=None, metavar="RUN_ID",
                        help="repair this run only (repeatable; default: every run of the store)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store.repair import repair_run

    store = open_store(args)
    run_ids = args.run or store.run_ids()
    for run_id in run_ids:
        check_run(store, run_id)
    repaired = 0
    for run_id in run_ids:
        done = repair_run(store, run_id)
        if done is not None:
            repaired += 1
            print(f"{run_id}: {done}")
    if not repaired:
        print("nothing to repair")
    return 0
