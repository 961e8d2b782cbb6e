"""The ``trainmap`` command line: train, runs, scores, dynamics, curriculum, ui.

Heavy imports (torch, Lightning) happen inside the commands that need them, so
``trainmap runs`` and ``trainmap --help`` start fast. Every user error ends in one line
on stderr, ``trainmap: error: ...``, and exit status 2 (bad arguments) or 1 (failures),
without touching what is already stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "jsonl"}


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


def _int_at_least(minimum: int, kind: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _noise_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"label noise must be in [0, 1), got {value}")
    return value


def _store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=None,
        help="store folder (default: $TRAINMAP_STORE, else ./trainmap_runs)",
    )


def _store_path(args: argparse.Namespace) -> Path:
    from store import default_store_path

    return Path(args.store) if args.store else default_store_path()


def _open_store(args: argparse.Namespace, must_exist: bool = True):
    from store import Store

    path = _store_path(args)
    if path.exists() and not path.is_dir():
        raise CliError(f"store path {str(path)!r} is a file; expected a store directory")
    if must_exist and not path.exists():
        raise CliError(
            f"no store at {str(path)!r}; train a run first (trainmap train ...) or pass --store DIR"
        )
    return Store(path)


def _check_run(store, run_id: str) -> None:
    if run_id not in store.run_ids():
        known = store.run_ids()
        hint = f"; known runs: {', '.join(known[-5:])}" if known else "; the store has no runs"
        raise CliError(f"run {run_id!r} not found in store {str(store.root)!r}{hint} (see trainmap runs)")


def _write_frame(frame, output: str | None, default_format: str = "csv") -> None:
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


# -- commands ------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    import logging
    import warnings

    from training.run import TrainConfig, train

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    config = TrainConfig(
        task=args.task,
        model=args.model,
        epochs=args.epochs,
        seed=args.seed,
        label_noise=args.label_noise,
        label_noise_seed=args.label_noise_seed,
        batch_size=args.batch_size,
        lr=args.lr,
        store=str(_store_path(args)),
        name=args.name,
        devices=args.devices,
        strategy=args.strategy,
        accelerator=args.accelerator,
        curriculum=args.curriculum,
        keep_steps=args.keep_steps,
        grand=None if args.grand == "off" else args.grand,
        progress=not args.no_progress,
        grad_norm_every=args.grad_norm_every,
    )
    try:
        config.validate()
        if config.grand is not None:
            from training.grand import GrandSchedule

            GrandSchedule.parse(config.grand)
    except ValueError as error:
        raise CliError(str(error)) from error
    run_id = train(config)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(f"run_id: {run_id}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from store import runs_table

    store = _open_store(args, must_exist=False)
    table = runs_table(store) if store.root.exists() else None
    if table is None or table.empty:
        print(f"no runs in {str(store.root)!r}", file=sys.stderr)
        return 0
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        sys.stdout.write(table.to_json(orient="records", indent=2) + "\n")
    else:
        shown = table[
            ["run_id", "name", "status", "task", "model", "seed", "label_noise", "epochs_done",
             "max_epochs", "best_val_accuracy", "parent_run_id"]
        ].copy()
        shown["epochs"] = [
            f"{done}/{total}" if total else str(done)
            for done, total in zip(shown.pop("epochs_done"), shown.pop("max_epochs"))
        ]
        shown["best_val_accuracy"] = shown["best_val_accuracy"].map(
            lambda v: "" if v is None or v != v else f"{v:.3f}"
        )
        shown["parent_run_id"] = shown["parent_run_id"].fillna("")
        print(shown.to_string(index=False))
    return 0


def _run_ids(args: argparse.Namespace, store) -> list[str]:
    run_ids = [r for group in args.run for r in group.split(",") if r]
    for run_id in run_ids:
        _check_run(store, run_id)
    return run_ids


def _epoch_range(text: str | None) -> tuple[int, int] | None:
    """``--epochs FIRST:LAST`` (or one epoch) as a pair; None when not given."""
    if not text:
        return None
    try:
        low, _, high = text.partition(":")
        return int(low), int(high or low)
    except ValueError:
        raise CliError(f"--epochs expects FIRST:LAST (e.g. 0:9) or one epoch, got {text!r}") from None


def cmd_scores(args: argparse.Namespace) -> int:
    from store import rank_hardest, sample_summary
    from store.scores import get_score

    store = _open_store(args)
    run_ids = _run_ids(args, store)
    epochs = _epoch_range(args.epochs)
    try:
        summary = sample_summary(store, run_ids, epochs)
        if args.sort:
            get_score(args.sort)
            summary = rank_hardest(summary, args.sort)
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.top:
        summary = summary.head(args.top)
    _write_frame(summary, args.output)
    return 0


def cmd_dynamics(args: argparse.Namespace) -> int:
    from store import dynamics

    store = _open_store(args)
    _check_run(store, args.run)
    _write_frame(dynamics(store, args.run), args.output)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from dashboard.launch import launch

    path = _store_path(args)
    if path.exists() and not path.is_dir():
        raise CliError(f"store path {str(path)!r} is a file; expected a store directory")
    return launch(path, host=args.host, port=args.port)


# -- parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from training.models import MODEL_NAMES
    from training.tasks import TASK_NAMES

    parser = argparse.ArgumentParser(
        prog="trainmap",
        description="Record per-sample training dynamics, score samples, build curricula, "
        "and browse it all in a dashboard.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train one run of a built-in task, recording its dynamics",
        description="Train one run of a built-in task with Lightning, recording per-sample "
        "dynamics into the store. Prints `run_id: <id>` as its last line.",
    )
    train.add_argument("--task", default="mnist1d", choices=TASK_NAMES, help="built-in task (default: mnist1d)")
    train.add_argument("--model", default="cnn", choices=MODEL_NAMES, help="network (default: cnn)")
    train.add_argument("--epochs", type=_positive_int, default=20, help="training epochs (default: 20)")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order (default: 0)")
    train.add_argument(
        "--label-noise", type=_noise_fraction, default=0.0, metavar="P",
        help="fraction of training labels flipped to another class, in [0, 1) (default: 0)",
    )
    train.add_argument(
        "--label-noise-seed", type=int, default=0,
        help="seed of the label noise, separate from --seed so runs with different seeds "
        "share the same noisy labels (default: 0)",
    )
    train.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (default: the task's, 64)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the task's)")
    train.add_argument("--name", default=None, help="run name shown in listings (default: the run id)")
    train.add_argument("--devices", type=_positive_int, default=1, help="processes / devices (default: 1)")
    train.add_argument(
        "--strategy", default="auto", choices=("auto", "ddp", "ddp_spawn"),
        help="Lightning strategy; --devices 2 --strategy ddp runs two CPU processes (gloo)",
    )
    train.add_argument("--accelerator", default="cpu", help="Lightning accelerator: cpu, gpu, auto (default: cpu)")
    train.add_argument("--curriculum", default=None, metavar="FILE", help="curriculum file (Parquet or CSV) to train with")
    train.add_argument(
        "--keep-steps", action="store_true",
        help="with --curriculum: keep the parent's number of optimisation steps per epoch "
        "(fair comparison of pruned runs)",
    )
    train.add_argument(
        "--grand", default="off", metavar="SCHEDULE",
        help="record exact per-sample gradient norms (GraNd): off, on (= default, every:5: "
        "epochs 0, 5, 10, ...; ~+10%% run time), every:K, first:E, epochs:0,5,10, steps, "
        "optionally prefixed with init+ (also once before training) (default: off)",
    )
    train.add_argument(
        "--grad-norm-every", type=_non_negative_int, default=10, metavar="N",
        help="record the global and per-layer gradient norms every N optimisation steps; "
        "1: every step (recording then adds ~5-6%% to an MNIST-1D MLP epoch instead of ~2-3%%), "
        "0: never (default: 10)",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _store_argument(train)
    train.set_defaults(handler=cmd_train)

    runs = commands.add_parser("runs", help="list the runs of a store", description="List runs with status, task, model, parent and metrics.")
    runs.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    _store_argument(runs)
    runs.set_defaults(handler=cmd_runs)

    scores = commands.add_parser(
        "scores",
        help="per-sample scores of one run or averaged over runs",
        description="One row per training sample: label, original_label, label_noisy, loss, el2n, "
        "grand, forgetting_events, first_learned_epoch, never_learned, confidence, "
        "variability, correctness, aum. With several runs (seeds) scores are averaged.",
    )
    scores.add_argument("--run", action="append", required=True, metavar="ID", help="run id; repeat or comma-separate to average over runs")
    scores.add_argument("--epochs", default=None, metavar="FIRST:LAST", help="average loss, EL2N and GraNd over these epochs only (e.g. 0:9)")
    scores.add_argument("--sort", default=None, metavar="SCORE", help="sort hardest first by this score (e.g. el2n, aum, forgetting_events)")
    scores.add_argument("--top", type=_positive_int, default=None, help="keep only the first N rows")
    scores.add_argument("-o", "--output", default=None, metavar="FILE", help="write .csv, .parquet, .json or .jsonl (default: CSV on stdout)")
    _store_argument(scores)
    scores.set_defaults(handler=cmd_scores)

    dyn = commands.add_parser(
        "dynamics",
        help="every sample presentation of a run",
        description="One row per sample presentation: epoch, step, sample_id, label, loss, p_true, el2n, correct, pred, margin, weight.",
    )
    dyn.add_argument("--run", required=True, metavar="ID", help="run id")
    dyn.add_argument("-o", "--output", default=None, metavar="FILE", help="write .csv, .parquet, .json or .jsonl (default: CSV on stdout)")
    _store_argument(dyn)
    dyn.set_defaults(handler=cmd_dynamics)

    ui = commands.add_parser(
        "ui",
        help="open the dashboard",
        description="Open the dashboard on the store; while the store has no runs, the shipped "
        "sample runs (sample_runs/) are copied into it first, so there is something to explore.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    ui.add_argument("--port", type=_positive_int, default=8501, help="port (default: 8501)")
    _store_argument(ui)
    ui.set_defaults(handler=cmd_ui)

    try:
        from training.curriculum_cli import add_curriculum_command
    except ImportError:
        pass
    else:
        add_curriculum_command(commands, _store_argument)
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


if __name__ == "__main__":
    sys.exit(main())
