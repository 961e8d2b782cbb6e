"""``trainmap scores``: one row per training sample (or per group of samples), of one run or
averaged over runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from store.engines import ENGINES
from training.cli.common import (
    CliError,
    add_store_argument,
    epoch_range,
    open_store,
    positive_int,
    run_ids,
    write_frame,
)

#: What one row of the output is: a sample, or a group (the batches' ``group``).
BY_CHOICES = ("sample", "group")
#: Exit status of ``--by group`` on runs that recorded no groups (a usage error, as argparse's).
NO_GROUPS_STATUS = 2


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "scores",
        help="per-sample (or per-group) scores of one run or averaged over runs",
        description="One row per training sample: label, original_label, label_noisy, loss, el2n, "
        "grand, forgetting_events, first_learned_epoch, never_learned, confidence, "
        "variability, correctness, aum, and group_id and group when the batches gave groups. "
        "With several runs (seeds) scores are averaged. With --by group, one row per group: "
        "samples, presentations, flipped, never_learned, and the mean over the group's samples of "
        "each score (forgetting_events also as a total).",
    )
    parser.add_argument("--run", action="append", required=True, metavar="ID",
                        help="run id; repeat or comma-separate to average over runs")
    parser.add_argument("--by", choices=BY_CHOICES, default="sample",
                        help="one row per sample (default) or per group: the group each batch gave a "
                        "sample (a dict key or named-tuple field 'group'; a sample's latest presentation counts)")
    parser.add_argument("--epochs", default=None, metavar="FIRST:LAST",
                        help="average loss, EL2N and GraNd over these epochs only (e.g. 0:9)")
    parser.add_argument("--sort", default=None, metavar="SCORE",
                        help="sort hardest first by this score (e.g. el2n, aum, forgetting_events); "
                        "with --by group, by the group's mean")
    parser.add_argument("--top", type=positive_int, default=None, help="keep only the first N rows")
    parser.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                        help="what computes the per-sample table: DuckDB in this process (default) or Apache "
                        "Spark (the 'spark' extra; local[*], or the cluster that MASTER / SPARK_REMOTE / "
                        "spark-defaults.conf name)")
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write .csv, .parquet, .json or .jsonl (default: CSV on stdout)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store import rank_hardest
    from store.engines import summary_with
    from store.groups import NoGroupsError, group_scores, rank_groups, with_group_names
    from store.scores import get_score

    store = open_store(args)
    ids = run_ids(args, store)
    epochs = epoch_range(args.epochs)
    if args.engine != "duckdb" and args.by == "group":
        raise CliError(f"--engine {args.engine} computes the per-sample table (--by sample); --by group runs on duckdb")
    try:
        if args.sort:
            get_score(args.sort)
        if args.by == "group":
            frame = group_scores(store, ids, epochs)
            if args.sort:
                frame = rank_groups(frame, args.sort)
        else:
            frame = with_group_names(store, ids, summary_with(args.engine, store, ids, epochs))
            if frame["group_id"].isna().all():
                frame = frame.drop(columns="group_id")
            if args.sort:
                frame = rank_hardest(frame, args.sort)
    except NoGroupsError as error:
        print(f"trainmap: error: {error}; --by group needs them (--by sample works on any run)", file=sys.stderr)
        return NO_GROUPS_STATUS
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.top:
        frame = frame.head(args.top)
    write_frame(frame, args.output)
    return 0
