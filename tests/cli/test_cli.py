"""The trainmap command line, run as a user runs it (subprocesses on a real store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from store import Store, dynamics, epoch_metrics, run_summary, runs_table

TRAINMAP = [sys.executable, "-m", "training.cli"]
REPO = Path(__file__).resolve().parents[2]


def trainmap(*args: str, store: Path | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    command = [*TRAINMAP, *args]
    if store is not None:
        command += ["--store", str(store)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=kwargs.pop("cwd", REPO), timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short MNIST-1D run with label noise, trained through the CLI."""
    store = tmp_path_factory.mktemp("cli") / "store"
    result = trainmap("train", "--task", "mnist1d", "--model", "mlp", "--epochs", "3", "--seed", "0",
                      "--label-noise", "0.2", "--name", "cli-run", "--no-progress", store=store)
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("run_id: ")
    return store, last_line.removeprefix("run_id: ")


@pytest.mark.slow
def test_train_records_a_finished_run(trained):
    store_path, run_id = trained
    store = Store(store_path)
    info = store.run_info(run_id)
    assert info["status"] == "finished" and info["epochs_done"] == 3
    assert info["name"] == "cli-run" and info["task"] == "mnist1d" and info["model"] == "mlp"
    assert info["config"]["label_noise"] == 0.2
    assert info["config"]["grad_norm_every"] == 10
    summary = run_summary(store, run_id)
    assert len(summary) == 4000
    assert summary["label_noisy"].sum() == 800  # exactly round(0.2 * 4000) flipped
    assert (summary.loc[summary["label_noisy"], "label"] != summary.loc[summary["label_noisy"], "original_label"]).all()
    assert (summary.loc[~summary["label_noisy"], "label"] == summary.loc[~summary["label_noisy"], "original_label"]).all()
    assert (store.dataset_path("mnist1d")).exists()


@pytest.mark.slow
def test_runs_scores_and_dynamics_outputs(trained, tmp_path):
    store, run_id = trained
    table = trainmap("runs", store=store).stdout
    assert run_id in table and "finished" in table and "3/3" in table
    listed = json.loads(trainmap("runs", "--format", "json", store=store).stdout)
    assert [row["run_id"] for row in listed] == [run_id]
    csv = pd.read_csv(pd.io.common.StringIO(trainmap("runs", "--format", "csv", store=store).stdout))
    assert csv.loc[0, "label_noise"] == 0.2

    trainmap("scores", "--run", run_id, "-o", str(tmp_path / "scores.csv"), store=store)
    scores = pd.read_csv(tmp_path / "scores.csv")
    for column in ["sample_id", "label", "original_label", "label_noisy", "loss", "el2n", "grand",
                   "forgetting_events", "first_learned_epoch", "never_learned", "confidence",
                   "variability", "correctness", "aum"]:
        assert column in scores.columns
    assert len(scores) == 4000
    trainmap("scores", "--run", run_id, "--sort", "aum", "--top", "10", "-o", str(tmp_path / "top.parquet"), store=store)
    top = pd.read_parquet(tmp_path / "top.parquet")
    assert len(top) == 10 and top["aum"].is_monotonic_increasing  # lowest AUM = hardest first
    assert top["aum"].iloc[0] == scores["aum"].min()

    trainmap("dynamics", "--run", run_id, "-o", str(tmp_path / "dynamics.parquet"), store=store)
    rows = pd.read_parquet(tmp_path / "dynamics.parquet")
    assert len(rows) == 3 * 4000
    assert list(rows.columns[:9]) == ["epoch", "step", "sample_id", "label", "loss", "p_true", "el2n", "correct", "pred"]
    assert "weight" in rows.columns
    json_rows = trainmap("dynamics", "--run", run_id, "-o", str(tmp_path / "d.jsonl"), store=store)
    assert "wrote 12000 rows" in json_rows.stderr


BAD_INPUTS = [
    (["train", "--task", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--epochs", "0"], "expected a positive integer, got 0"),
    (["train", "--epochs", "-3"], "expected a positive integer, got -3"),
    (["train", "--label-noise", "1.0"], "label noise must be in [0, 1), got 1.0"),
    (["train", "--label-noise", "-0.1"], "label noise must be in [0, 1)"),
    (["train", "--label-noise", "lots"], "expected a number in [0, 1), got 'lots'"),
    (["train", "--grad-norm-every", "-1"], "expected a non-negative integer, got -1"),
    (["train", "--grad-norm-every", "often"], "expected a non-negative integer, got 'often'"),
    (["scores", "--run", "no-such-run"], "run 'no-such-run' not found"),
    (["dynamics", "--run", "no-such-run"], "run 'no-such-run' not found"),
    (["scores", "--run", "RUN", "-o", "scores.xlsx"], "unknown extension '.xlsx'"),
    (["scores", "--run", "RUN", "--sort", "nonsense"], "unknown score 'nonsense'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_input_fails_with_one_line_and_changes_nothing(trained, tmp_path, args, message):
    store, run_id = trained
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    args = [run_id if a == "RUN" else a for a in args]
    result = trainmap(*args, store=store, check=False, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before


def test_store_path_that_is_a_file(tmp_path):
    path = tmp_path / "not_a_store"
    path.write_text("precious")
    for args in (["runs"], ["scores", "--run", "x"], ["train", "--epochs", "1"]):
        result = trainmap(*args, store=path, check=False)
        assert result.returncode == 1, args
        assert "is a file" in result.stderr and "Traceback" not in result.stderr
    assert path.read_text() == "precious"


def test_missing_store_and_empty_store(tmp_path):
    result = trainmap("scores", "--run", "abc", store=tmp_path / "missing", check=False)
    assert result.returncode == 1 and "no store at" in result.stderr
    result = trainmap("runs", store=tmp_path / "missing")
    assert "no runs" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_output_piped_into_a_reader_that_stops_early():
    """`trainmap scores ... | head -1`: no BrokenPipe traceback, exit 0."""
    run_id = sorted(p.name for p in (REPO / "sample_runs" / "runs").iterdir())[0]
    command = [*TRAINMAP, "scores", "--run", run_id, "--store", str(REPO / "sample_runs")]
    writer = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    header = writer.stdout.readline()
    writer.stdout.close()  # the reader goes away after one line, like `head -1`
    stderr = writer.stderr.read().decode()
    assert writer.wait(timeout=120) == 0, stderr
    assert header.startswith(b"sample_id,label,original_label,label_noisy,")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_help_texts_name_the_commands():
    text = trainmap("--help").stdout
    for command in ("train", "runs", "scores", "dynamics", "ui"):
        assert command in text
    train_help = trainmap("train", "--help").stdout
    for flag in ("--task", "--model", "--epochs", "--seed", "--label-noise", "--curriculum", "--store", "--name"):
        assert flag in train_help


@pytest.mark.slow
def test_another_process_reads_the_store_while_a_run_writes(tmp_path):
    store_path = tmp_path / "store"
    env = dict(os.environ, TRAINMAP_STORE=str(store_path))
    writer = subprocess.Popen(
        [*TRAINMAP, "train", "--task", "mnist1d", "--model", "mlp", "--epochs", "25", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    store = Store(store_path)
    seen_epochs: list[int] = []
    seen_running = False
    try:
        while writer.poll() is None:
            if store_path.exists() and store.run_ids():
                (run_id,) = store.run_ids()
                table = runs_table(store)
                metrics = epoch_metrics(store, run_id)
                rows = dynamics(store, run_id)
                summary = run_summary(store, run_id)
                if table.loc[0, "status"] == "running":
                    seen_running = True
                complete = rows.groupby("epoch").size()
                # every epoch a reader sees is complete: all 4000 samples
                assert (complete == 4000).all(), complete
                seen_epochs.append(len(complete))
                assert len(summary) == 4000
                assert len(metrics) >= 0
            time.sleep(0.05)
    finally:
        stdout, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr[-2000:]
    assert seen_running, "the reader never saw the run while it was running"
    assert seen_epochs == sorted(seen_epochs)  # epochs only ever appear
    assert len(set(seen_epochs)) >= 2  # it saw the run grow
    (run_id,) = store.run_ids()
    assert len(dynamics(store, run_id)) == 25 * 4000


def _train_until(store_path: Path, epochs_done: int, **output) -> tuple[subprocess.Popen, Store]:
    """A 500-epoch MLP run in its own process group, once it has recorded ``epochs_done``."""
    output = output or {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    training = subprocess.Popen(
        [*TRAINMAP, "train", "--task", "mnist1d", "--model", "mlp", "--epochs", "500", "--no-progress", "--store", str(store_path)],
        cwd=REPO, start_new_session=True, **output,
    )
    store = Store(store_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and training.poll() is None:
        run_ids = store.run_ids() if store_path.exists() else []
        if run_ids and store.run_info(run_ids[0]).get("epochs_done", 0) >= epochs_done:
            break
        time.sleep(0.1)
    return training, store


def test_ctrl_c_keeps_what_was_recorded_and_says_so(tmp_path):
    # Ctrl-C in a terminal signals the whole process group: trainer and writer process.
    training, store = _train_until(tmp_path / "store", 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        os.killpg(training.pid, signal.SIGINT)
    finally:
        stdout, stderr = training.communicate(timeout=120)
    assert training.returncode == 130, stderr[-2000:]
    assert stderr.strip().endswith("trainmap: interrupted")
    (run_id,) = store.run_ids()
    info = store.run_info(run_id)
    assert info["status"] == "interrupted" and "interrupted by SIGINT (Ctrl-C)" in info["error"]
    done = info["epochs_done"]
    assert 2 <= done < 500
    rows = dynamics(store, run_id)
    # every epoch it counts as done is there, complete (the writer outlived the Ctrl-C)
    assert (rows.groupby("epoch").size().reindex(range(done)) == 4000).all()
    assert len(epoch_metrics(store, run_id)) >= done


def test_a_killed_run_is_marked_failed_and_keeps_its_epochs(tmp_path):
    # SIGKILL (or the kernel's OOM killer) gives the trainer no chance to say anything:
    # its writer process notices, writes what it was handed and marks the run failed.
    training, store = _train_until(tmp_path / "store", 2)
    try:
        os.kill(training.pid, signal.SIGKILL)  # the trainer only, not its writer
    finally:
        training.wait(timeout=60)
    (run_id,) = store.run_ids()
    deadline = time.monotonic() + 60
    while store.run_info(run_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    info = store.run_info(run_id)
    assert info["status"] == "failed", info
    assert f"the training process (pid {training.pid}) ended without finishing the run" in info["error"]
    done = info["epochs_done"]
    assert 2 <= done < 500 and f"the {done} epoch(s) it recorded are kept" in info["error"]
    rows = dynamics(store, run_id)
    assert (rows.groupby("epoch").size().reindex(range(done)) == 4000).all()
    listing = trainmap("runs", "--format", "json", store=tmp_path / "store")
    assert json.loads(listing.stdout)[0]["status"] == "failed"


@pytest.mark.slow
def test_train_with_two_ddp_processes(tmp_path):
    store = tmp_path / "store"
    result = trainmap("train", "--task", "digits", "--model", "mlp", "--epochs", "2", "--devices", "2",
                      "--strategy", "ddp", "--no-progress", store=store)
    run_id = result.stdout.strip().splitlines()[-1].removeprefix("run_id: ")
    rows = dynamics(Store(store), run_id)
    num_train = 1437  # 80 % of 1797 digits; odd, so DistributedSampler pads one duplicate
    assert rows.groupby("epoch")["sample_id"].nunique().tolist() == [num_train, num_train]
    assert rows.groupby("epoch").size().tolist() == [num_train, num_train]
    assert Store(store).run_info(run_id)["world_size"] == 2
