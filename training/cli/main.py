"""``trainmap``'s parser and ``main``: one sub-command per module of this package.

Heavy imports (torch, Lightning, pandas, DuckDB, Streamlit) happen inside the commands
that need them, so ``trainmap --help`` starts fast and without torch. Every user error
ends in one line on stderr, ``trainmap: error: ...``, and exit status 2 (bad arguments)
or 1 (failures), without touching what is already stored.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from training.cli import curriculum, dynamics, evidence, jobs, repair, runs, scores, train, ui
from training.cli.common import CliError

COMMANDS = (train, runs, scores, dynamics, curriculum, repair, ui, jobs, evidence)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line naming it and where the usage is (not the
    usage block first); sub-command parsers are of this class too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="trainmap",
        description="Record per-sample training dynamics, score samples, build curricula, "
        "and browse it all in a dashboard.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"trainmap: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trainmap: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader closed the pipe (`trainmap scores ... | head`): what it read is what it
        # asked for. Point stdout at devnull so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as error:  # store and data errors: one line, not a traceback
        from store.errors import StoreError

        if isinstance(error, (StoreError, FileNotFoundError, PermissionError)):
            print(f"trainmap: error: {error}", file=sys.stderr)
            return 1
        raise
