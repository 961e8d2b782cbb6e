"""``trainmap runs``: list the runs of a store."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from training.cli.common import add_store_argument, open_store

TABLE_COLUMNS = ["run_id", "name", "status", "task", "model", "seed", "label_noise", "epochs_done",
                 "max_epochs", "best_val_accuracy", "parent_run_id"]


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "runs", help="list the runs of a store",
        description="List runs with status, task, model, parent and metrics.",
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="output format (default: table)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store import runs_table

    store = open_store(args, must_exist=False)
    table = runs_table(store) if store.root.exists() else None
    if table is None or table.empty:
        print(f"no runs in {str(store.root)!r}", file=sys.stderr)
        return 0
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        sys.stdout.write(table.to_json(orient="records", indent=2) + "\n")
    else:
        print(_shown(table).to_string(index=False))
    return 0


def _shown(table: Any) -> Any:
    shown = table[TABLE_COLUMNS].copy()
    shown["epochs"] = [
        f"{done}/{total}" if total else str(done)
        for done, total in zip(shown.pop("epochs_done"), shown.pop("max_epochs"))
    ]
    shown["best_val_accuracy"] = shown["best_val_accuracy"].map(
        lambda v: "" if v is None or v != v else f"{v:.3f}"
    )
    shown["parent_run_id"] = shown["parent_run_id"].fillna("")
    return shown
