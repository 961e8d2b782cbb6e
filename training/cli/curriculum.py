"""``trainmap curriculum``: build a curriculum file from one or more runs' scores.

    trainmap curriculum --run ID [--run ID2] --score aum --strategy downweight-noise \\
        --fraction 0.2 -o cur.parquet
    trainmap curriculum --run ID --strategy group-weights --group-weights docs=2,code=0.5
    trainmap curriculum --run ID --score loss --strategy relabel --fraction 0.2 --relabel-epochs 5:9
    trainmap curriculum --run RERUN --score loss --strategy keep-easy --unscored keep

Writes ``-o FILE`` (.parquet, or .csv + FILE.csv.json) and a copy into
``<store>/curricula/``; prints the file path and a one-line summary. Torch-free.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from training.cli.common import CliError, add_store_argument, epoch_range, non_negative_int, open_store, run_ids


def param_type(kind: Any) -> Callable[[str], Any]:
    """The argparse type of a registry parameter: its kind, or ``str`` for a choice or a
    table (the registry reads the table)."""
    if isinstance(kind, tuple) or kind is dict:
        return str
    return kind


def add_parser(commands: Any) -> None:
    from store.curriculum.registry import PARAMS, STRATEGIES
    from store.curriculum.unscored import UNSCORED_CHOICES

    strategies = "; ".join(f"{name}: {spec.description}" for name, spec in STRATEGIES.items())
    parser = commands.add_parser(
        "curriculum",
        help="build a curriculum file from per-sample scores",
        description="Build a curriculum (prune, reweight, pace, or an online rule) from the scores of "
        "one run or averaged over several, and export it as a file that `trainmap train "
        f"--curriculum FILE` consumes. Strategies: {strategies}.",
    )
    parser.add_argument("--run", action="append", required=True, metavar="ID",
                        help="source run id; repeat or comma-separate to average scores over runs")
    parser.add_argument("--score", default=None,
                        help="score to rank by (loss, el2n, grand, forgetting_events, aum, confidence, ...; "
                        "'cartography' for downweight-noise: the hard-to-learn region of the run's thirds)")
    parser.add_argument("--strategy", required=True, choices=list(STRATEGIES), metavar="NAME",
                        help=f"one of {', '.join(STRATEGIES)}")
    parser.add_argument("--epochs", default=None, metavar="FIRST:LAST",
                        help="score over these epochs only (e.g. 0:9; Data Diet scores early)")
    parser.add_argument("--unscored", default=None, choices=list(UNSCORED_CHOICES),
                        help="samples the source runs never presented (e.g. a pruned rerun's): keep = rank the "
                        "others and keep these, drop = rank the others and prune these; required when there are any")
    parser.add_argument("--relabel-epochs", default=None, metavar="FIRST:LAST",
                        help="relabel: the epochs whose predictions vote for each sample's suggested label "
                        "(default: the first half of the source run's epochs, before flipped labels are memorised)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of random / stratified selection (default: 0)")
    parser.add_argument("--name", default=None, help="name recorded in the file and shown with reruns")
    for param in PARAMS.values():
        kind = param.kind
        parser.add_argument(
            f"--{param.name.replace('_', '-')}", dest=f"param_{param.name}", default=None,
            type=param_type(kind), choices=list(kind) if isinstance(kind, tuple) else None,
            metavar=None if isinstance(kind, tuple) else param.metavar or kind.__name__.upper(), help=param.help,
        )
    parser.add_argument("-o", "--output", default=None, metavar="FILE",
                        help="write .parquet or .csv (+ FILE.csv.json); default: only the copy in <store>/curricula/")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def relabel_window(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--relabel-epochs`` as a pair; refused for any strategy but relabel."""
    if args.relabel_epochs is None:
        return None
    if args.strategy != "relabel":
        raise CliError(f"--relabel-epochs is for --strategy relabel, not {args.strategy}")
    try:
        return epoch_range(args.relabel_epochs)
    except CliError:
        raise CliError(f"--relabel-epochs expects FIRST:LAST (e.g. 5:9), got {args.relabel_epochs!r}") from None


def with_run_suggestions(store: Any, ids: list[str], summary: Any, epochs: tuple[int, int] | None) -> Any:
    """``summary`` with each sample's suggested label and confidence over ``epochs`` (None:
    each run's default window), several runs' votes combined; the windows in ``attrs``."""
    from store.curriculum.relabel import combine_suggestions, with_suggestions
    from store.views.relabel import default_relabel_epochs, suggested_labels

    windows = [epochs or default_relabel_epochs(store, run_id) or (0, 0) for run_id in ids]
    per_run = [suggested_labels(store, run_id, window) for run_id, window in zip(ids, windows)]
    joined = with_suggestions(summary, combine_suggestions(per_run))
    joined.attrs["relabel_epochs"] = [list(window) for window in windows]
    return joined


def run(args: argparse.Namespace) -> int:
    """Build, save into ``<store>/curricula/`` and to ``-o``; a bad input is one line (main)."""
    from store import sample_summary
    from store.curriculum.build import build_curriculum
    from store.curriculum.errors import CurriculumError
    from store.curriculum.format import check_writable, save_curriculum, save_to_store
    from store.groups import with_group_names

    output = Path(args.output) if args.output else None
    if output is not None:
        check_writable(output)
    store = open_store(args)
    ids = run_ids(args, store)
    epochs = epoch_range(args.epochs)
    params = {key[len("param_"):]: value for key, value in vars(args).items()
              if key.startswith("param_") and value is not None}
    if args.strategy == "group-weights" and "group_weights" not in params:
        raise CliError("strategy group-weights needs --group-weights NAME=WEIGHT,... (e.g. docs=2,code=0.5) "
                       "or a .csv (group,weight) / .json file")
    tasks = {store.run_info(run_id).get("task") for run_id in ids}
    if len(tasks) > 1:
        raise CliError(f"the runs belong to different tasks ({', '.join(sorted(map(str, tasks)))})")
    relabel_epochs = relabel_window(args)
    try:
        summary = with_group_names(store, ids, sample_summary(store, ids, epochs))
        if args.strategy == "relabel":
            summary = with_run_suggestions(store, ids, summary, relabel_epochs)
        curriculum = build_curriculum(
            summary, args.strategy, args.score, seed=args.seed, task=tasks.pop(),
            source_runs=ids, name=args.name, unscored=args.unscored, **params,
        )
        if args.strategy == "relabel":
            curriculum.metadata["relabel_epochs"] = summary.attrs.get("relabel_epochs")
    except CurriculumError:
        raise
    except ValueError as error:
        raise CliError(str(error)) from error
    copy = save_to_store(curriculum, store.root)
    if output is not None:
        save_curriculum(curriculum, output)
    facts = curriculum.summary()
    noisy = summary["label_noisy"].fillna(False).to_numpy(bool) if "label_noisy" in summary else None
    line = f"{curriculum.label}: {facts['kept']} of {facts['samples']} samples kept"
    if noisy is not None and noisy.any():
        weights = curriculum.weights_for(summary["sample_id"].to_numpy())
        line += (f"; of {int(noisy.sum())} flipped labels {int((weights[noisy] == 0).sum())} pruned, "
                 f"{int(((weights[noisy] > 0) & (weights[noisy] < 0.5)).sum())} down-weighted below 0.5")
    if curriculum.group_weights is not None and "group" in summary:
        import pandas as pd

        weights = pd.DataFrame({"group": summary["group"],
                                "weight": curriculum.weights_for(summary["sample_id"].to_numpy())})
        per_group = weights.dropna(subset=["group"]).groupby("group")["weight"].agg(["first", "size"])
        line += "; weight per group: " + ", ".join(
            f"{name} {row['first']:g} ({int(row['size'])} samples)" for name, row in per_group.iterrows())
    if "label" in curriculum.table:
        changed = curriculum.table.merge(summary[["sample_id", "label"]], on="sample_id", suffixes=("", "_was"))
        changed = changed[changed["label"] != changed["label_was"]]
        line += f"; {len(changed)} labels replaced"
        if "original_label" in summary and summary["label_noisy"].fillna(False).any():
            fixed = changed.merge(summary[["sample_id", "original_label"]], on="sample_id")
            line += f" ({int((fixed['label'] == fixed['original_label']).sum())} back to the clean label)"
    print(line, file=sys.stderr)
    print(f"saved {copy}", file=sys.stderr)
    print(str(output if output is not None else copy))
    return 0
