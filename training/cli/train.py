"""``trainmap train``: train one run of a built-in task, recording its dynamics."""

from __future__ import annotations

import argparse
import os
from typing import Any

from training.cli.common import (
    CliError,
    add_store_argument,
    noise_fraction,
    non_negative_int,
    positive_int,
    require_training_extra,
    store_path,
)


def add_parser(commands: Any) -> None:
    from training.config import ACCELERATORS, MODEL_NAMES, STRATEGIES
    from training.tasks import DEFAULT_EPOCHS, SEQUENCE_TASKS, TASK_NAMES

    parser = commands.add_parser(
        "train",
        help="train one run of a built-in task, recording its dynamics",
        description="Train one run of a built-in task with Lightning, recording per-sample "
        "dynamics into the store. Prints `run_id: <id>` as its last line. Needs the training "
        "extra (pip install 'trainmap[train]').",
    )
    parser.add_argument("--task", default="mnist1d", choices=TASK_NAMES, help="built-in task (default: mnist1d)")
    parser.add_argument(
        "--model", default=None, choices=MODEL_NAMES,
        help=f"network (default: cnn; gpt, a small causal transformer, for {', '.join(SEQUENCE_TASKS)})",
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None,
        help="training epochs (default: the task's: "
        + ", ".join(f"{task} {epochs}" for task, epochs in DEFAULT_EPOCHS.items()) + ")",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order (default: 0)")
    parser.add_argument(
        "--label-noise", type=noise_fraction, default=0.0, metavar="P",
        help="fraction of training labels flipped to another class, in [0, 1) (default: 0)",
    )
    parser.add_argument(
        "--label-noise-seed", type=int, default=0,
        help="seed of the label noise, separate from --seed so runs with different seeds "
        "share the same noisy labels (default: 0)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=None, help="batch size (default: the task's, 64; pydoc-lm 16)"
    )
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the task's)")
    parser.add_argument("--name", default=None, help="run name shown in listings (default: the run id)")
    parser.add_argument("--devices", type=positive_int, default=1, help="processes / devices (default: 1)")
    parser.add_argument(
        "--strategy", default="auto", choices=STRATEGIES,
        help="Lightning strategy; --devices 2 --strategy ddp runs two CPU processes (gloo)",
    )
    parser.add_argument("--accelerator", default="cpu", choices=ACCELERATORS,
                        help="Lightning accelerator (default: cpu; gpu/cuda needs as many CUDA GPUs as --devices)")
    parser.add_argument("--curriculum", default=None, metavar="FILE", help="curriculum file (Parquet or CSV) to train with")
    parser.add_argument("--resume", default=None, metavar="RUN_ID",
                        help="continue a stopped run of the store from its last whole epoch, with its own settings "
                        "(--epochs may give it more epochs; other settings are the run's)")
    parser.add_argument(
        "--keep-steps", action="store_true",
        help="with --curriculum: keep the parent's number of optimisation steps per epoch "
        "(fair comparison of pruned runs)",
    )
    parser.add_argument(
        "--grand", default="off", metavar="SCHEDULE",
        help="record exact per-sample gradient norms (GraNd): off, on (= default, every:5: "
        "epochs 0, 5, 10, ...), every:K, first:E, epochs:0,5,10, steps, optionally prefixed "
        "with init+ (also once before training); cost: benchmarks/results/grand.md (default: off)",
    )
    parser.add_argument(
        "--grad-norm-every", type=non_negative_int, default=10, metavar="N",
        help="record the global and per-layer gradient norms every N optimisation steps; "
        "1: every step, 0: never; cost: benchmarks/results/recorder_ablation.md (default: 10)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_store_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.tasks import check_task_settings, default_epochs, default_model

    if args.resume is not None:
        return _resume(args)
    model = args.model or default_model(args.task)
    try:
        check_task_settings(args.task, model, args.label_noise)
    except ValueError as error:
        raise CliError(str(error)) from error
    config = TrainConfig(
        task=args.task,
        model=model,
        epochs=args.epochs or default_epochs(args.task),
        seed=args.seed,
        label_noise=args.label_noise,
        label_noise_seed=args.label_noise_seed,
        batch_size=args.batch_size,
        lr=args.lr,
        store=str(store_path(args)),
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
    except ValueError as error:
        raise CliError(str(error)) from error
    require_training_extra("train")
    _quiet_lightning()
    from training.grand import GrandSchedule
    from training.run import check_accelerator, train

    try:
        if config.grand is not None:
            GrandSchedule.parse(config.grand)
        check_accelerator(config.accelerator, config.devices)
    except ValueError as error:
        raise CliError(str(error)) from error
    run_id = train(config)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(f"run_id: {run_id}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    """``--resume RUN_ID``: the run's own settings (run.json), more epochs if asked."""
    from training.cli.common import check_run, open_store

    check_run(open_store(args), args.resume)
    require_training_extra("train")
    _quiet_lightning()
    from training.run import resume_config, train

    try:
        config = resume_config(str(store_path(args)), args.resume, args.epochs)
        config.validate()
    except ValueError as error:
        raise CliError(str(error)) from error
    run_id = train(config, resume=args.resume)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(f"run_id: {run_id}")
    return 0


def _quiet_lightning() -> None:
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
