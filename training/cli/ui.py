"""``trainmap ui``: serve the dashboard (``dashboard.launch``) on a store."""

from __future__ import annotations

import argparse
from typing import Any

from training.cli.common import CliError, add_store_argument, check_store_path, int_at_least, store_path


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    value = int_at_least(1, "port (1-65535)")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port (1-65535) integer, got {value}")
    return value


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "ui",
        help="open the dashboard",
        description="Open the dashboard on the store; while the store has no runs, the shipped "
        "sample runs (sample_runs/) are copied into it first, so there is something to explore.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8501, help="port, 1-65535 (default: 8501)")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dashboard.launch import launch

    import socket
    import sys

    path = store_path(args)
    check_store_path(path)
    try:
        socket.getaddrinfo(args.host, args.port)
    except (socket.gaierror, UnicodeError) as error:
        raise CliError(f"--host {args.host!r} is not an address of this machine ({error}); expected e.g. "
                       "127.0.0.1 (the default) or 0.0.0.0") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"trainmap: warning: serving on {args.host}: the dashboard has no authentication, and anyone who "
              "reaches it can read the store and start training processes on this machine", file=sys.stderr)
    return launch(path, host=args.host, port=args.port)
