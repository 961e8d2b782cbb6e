"""``trainmap ui``: serve the dashboard (``dashboard.launch``) on a store."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.common import add_store_argument, check_store_path, positive_int, store_path


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "ui",
        help="open the dashboard",
        description="Open the dashboard on the store; while the store has no runs, the shipped "
        "sample runs (sample_runs/) are copied into it first, so there is something to explore.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8501, help="port (default: 8501)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dashboard.launch import launch

    path = store_path(args)
    check_store_path(path)
    return launch(path, host=args.host, port=args.port)
