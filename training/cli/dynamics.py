"""``trainmap dynamics``: every sample presentation of a run."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.common import add_store_argument, check_run, open_store, write_frame


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dynamics",
        help="every sample presentation of a run",
        description="One row per sample presentation: epoch, step, sample_id, label, loss, p_true, "
        "el2n, correct, pred, margin, weight.",
    )
    parser.add_argument("--run", required=True, metavar="ID", help="run id")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write .csv, .parquet, .json or .jsonl (default: CSV on stdout)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store import dynamics

    store = open_store(args)
    check_run(store, args.run)
    write_frame(dynamics(store, args.run), args.output)
    return 0
