"""``trainmap scores``: one row per training sample, of one run or averaged over runs."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.common import (
    CliError,
    add_store_argument,
    epoch_range,
    open_store,
    positive_int,
    run_ids,
    write_frame,
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "scores",
        help="per-sample scores of one run or averaged over runs",
        description="One row per training sample: label, original_label, label_noisy, loss, el2n, "
        "grand, forgetting_events, first_learned_epoch, never_learned, confidence, "
        "variability, correctness, aum. With several runs (seeds) scores are averaged.",
    )
    parser.add_argument("--run", action="append", required=True, metavar="ID",
                        help="run id; repeat or comma-separate to average over runs")
    parser.add_argument("--epochs", default=None, metavar="FIRST:LAST",
                        help="average loss, EL2N and GraNd over these epochs only (e.g. 0:9)")
    parser.add_argument("--sort", default=None, metavar="SCORE",
                        help="sort hardest first by this score (e.g. el2n, aum, forgetting_events)")
    parser.add_argument("--top", type=positive_int, default=None, help="keep only the first N rows")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write .csv, .parquet, .json or .jsonl (default: CSV on stdout)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store import rank_hardest, sample_summary
    from store.scores import get_score

    store = open_store(args)
    ids = run_ids(args, store)
    epochs = epoch_range(args.epochs)
    try:
        summary = sample_summary(store, ids, epochs)
        if args.sort:
            get_score(args.sort)
            summary = rank_hardest(summary, args.sort)
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.top:
        summary = summary.head(args.top)
    write_frame(summary, args.output)
    return 0
