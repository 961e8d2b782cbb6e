"""What every ``trainmap`` command shares: the user-error type, argument types, opening the
store, checking run ids, and writing a table to a file or stdout.

Torch-free: imported by ``trainmap --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "jsonl"}
TRAINING_EXTRA = "pip install 'trainmap[train]'"


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


def int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, refused as 'expected a <kind> integer'."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "positive")
non_negative_int = int_at_least(0, "non-negative")


def noise_fraction(text: str) -> float:
    """An argparse type: a label-noise fraction (``store.settings.check_label_noise``)."""
    from store.settings import check_label_noise

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    try:
        return check_label_noise(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=None,
        help="store folder (default: $TRAINMAP_STORE, else ./trainmap_runs)",
    )


def store_path(args: argparse.Namespace) -> Path:
    from store import default_store_path

    return Path(args.store) if args.store else default_store_path()


def check_store_path(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CliError(f"store path {str(path)!r} is a file; expected a store directory")


def open_store(args: argparse.Namespace, must_exist: bool = True) -> Any:
    """The ``store.Store`` that ``--store`` names; a missing one is a user error unless allowed."""
    from store import Store

    path = store_path(args)
    check_store_path(path)
    if must_exist and not path.exists():
        raise CliError(
            f"no store at {str(path)!r}; train a run first (trainmap train ...) or pass --store DIR"
        )
    return Store(path)


def check_run(store: Any, run_id: str) -> None:
    if run_id not in store.run_ids():
        known = store.run_ids()
        hint = f"; known runs: {', '.join(known[-5:])}" if known else "; the store has no runs"
        raise CliError(f"run {run_id!r} not found in store {str(store.root)!r}{hint} (see trainmap runs)")


def run_ids(args: argparse.Namespace, store: Any) -> list[str]:
    """The ``--run`` ids (repeated or comma-separated), each checked to exist."""
    ids = [run_id for group in args.run for run_id in group.split(",") if run_id]
    if not ids:
        raise CliError(f"--run {','.join(args.run)!r} names no run; expected a run id (see trainmap runs)")
    for run_id in ids:
        check_run(store, run_id)
    return ids


def epoch_range(text: str | None) -> tuple[int, int] | None:
    """``--epochs FIRST:LAST`` (or one epoch) as a pair; None when not given."""
    if not text:
        return None
    try:
        low, _, high = text.partition(":")
        first, last = int(low), int(high or low)
    except ValueError:
        raise CliError(f"--epochs expects FIRST:LAST (e.g. 0:9) or one epoch, got {text!r}") from None
    if not 0 <= first <= last:
        raise CliError(f"--epochs {text!r}: expected FIRST:LAST with 0 <= FIRST <= LAST (e.g. 0:9)")
    return first, last


def require_training_extra(command: str) -> None:
    """Refuse ``command`` in one line when torch or Lightning cannot be imported."""
    try:
        import lightning  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise CliError(
            f"`trainmap {command}` needs torch and Lightning, which this install lacks "
            f"({error}); install the training extra: {TRAINING_EXTRA}"
        ) from error


def write_frame(frame: Any, output: str | None, default_format: str = "csv") -> None:
    """Write a DataFrame to ``output`` (format from the extension) or stdout as CSV."""
    if output is None or output == "-":
        if default_format == "json":
            sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
        else:
            frame.to_csv(sys.stdout, index=False)
        return
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise CliError(
            f"cannot write {output!r}: unknown extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(OUTPUT_FORMATS)}"
        )
    parent = Path(output).parent
    if not parent.is_dir():
        raise CliError(f"cannot write {output!r}: folder {str(parent)!r} does not exist")
    kind = OUTPUT_FORMATS[suffix]
    if kind == "csv":
        frame.to_csv(output, index=False)
    elif kind == "parquet":
        frame.to_parquet(output, index=False)
    elif kind == "json":
        frame.to_json(output, orient="records", indent=2)
    else:
        frame.to_json(output, orient="records", lines=True)
    print(f"wrote {len(frame)} rows to {output}", file=sys.stderr)
