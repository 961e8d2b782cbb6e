"""Kill, resume and concurrency scenarios of issue 16's fault report, on small real runs.

Each scenario trains ``trainmap train --task digits --model mlp`` (1,437 training samples) in
its own store, does one bad thing to it (a signal to the process group mid-epoch, a SIGKILL
during the end-of-run compaction or of the writer child, a resume, two writers and readers at
once) and returns a frozen record of what readers showed and which rows are on disk.
``scripts/fault_report.py`` runs them and writes ``benchmarks/results/faults.md``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from store import Store, StoreError  # noqa: E402

TASK = ("--task", "digits", "--model", "mlp", "--no-progress")
TRAIN_SAMPLES = 1437  # training samples of the digits task
STATUS_WAIT_SECS = 150.0  # longer than store.layout.STALE_AFTER_SECS: the heartbeat rule must have fired
TABLE_NAMES = ("presentations", "epochs", "steps")


@dataclass(frozen=True)
class Rows:
    """What a run's files hold, read raw (no de-duplication): ``epochs_done`` from run.json;
    epochs whose presentations are all there once; epochs with only some; rows recorded
    twice; the epochs of the per-epoch (train split) and per-step tables; whether the steps
    are 0, 1, 2, ... without gap or repeat."""

    epochs_done: int
    presentation_epochs: int
    partial_epochs: int
    duplicates: int
    epoch_rows: int
    step_epochs: int
    steps_contiguous: bool

    @property
    def consistent(self) -> bool:
        """Every table holds the same whole epochs as run.json, none half-recorded or twice."""
        return (self.partial_epochs == 0 and self.duplicates == 0 and self.steps_contiguous
                and self.epochs_done == self.presentation_epochs == self.epoch_rows == self.step_epochs)


@dataclass(frozen=True)
class KillResult:
    name: str
    exit_code: int | None
    trainer_traceback: bool
    stored_status: str
    shown_status: str
    shown_after_secs: float | None  # from the kill until a reader showed it stopped; None: never
    shown_error: str
    before_repair: Rows
    repair_exit: int
    repair_said: str
    status_after_repair: str
    compacted_after_repair: bool
    after_repair: Rows


@dataclass(frozen=True)
class ResumeResult:
    name: str
    first_exit: int | None
    resume_exit: int
    resume_said: str
    status: str
    max_epochs: int
    rows: Rows


@dataclass(frozen=True)
class ConcurrencyResult:
    name: str
    reads: int
    reads_during_compaction: int
    errors: int
    first_error: str
    data_complete: bool
    detail: str


# -- helpers ------------------------------------------------------------------------


def trainmap(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def start_training(store_path: Path, epochs: int, log: Path) -> subprocess.Popen:
    """A training run in its own process group (as a shell job or a scheduler starts it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "training.cli", "train", *TASK, "--epochs", str(epochs), "--store", str(store_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=default_signals,
    )


def default_signals() -> None:
    """Give the trainer the signal handling a terminal gives it, also when this script runs
    under ``nohup`` or as a background job (which ignore SIGHUP and SIGINT, and pass that on)."""
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, ValueError, StoreError):
            pass  # a file being replaced under us, a run folder before its run.json
        time.sleep(every)
    return False


def only_run(store_path: Path) -> str | None:
    runs = store_path / "runs"
    ids = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
    return ids[0] if ids else None


def epochs_done(store: Store, run_id: str) -> int:
    return int(store.run_info(run_id).get("epochs_done") or 0)


def compacting(store: Store, run_id: str) -> bool:
    """The run's end-of-run compaction has begun: a compacted file (or its temporary) is there
    while run.json still says running."""
    run_path = store.run_dir(run_id)
    started = any(path.name.split(".")[0] in TABLE_NAMES and ".parquet" in path.name and path.is_file()
                  for path in run_path.iterdir())
    return started and store.run_info(run_id).get("status") == "running"


def read_rows(store: Store, run_id: str) -> Rows:
    import numpy as np
    import pyarrow.parquet as pq

    def column(name: str, field: str, where: tuple[str, str] | None = None) -> np.ndarray:
        values = []
        for path in store.table_files(run_id, name):
            table = pq.read_table(path)
            if where is not None:
                table = table.filter(table[where[0]].to_numpy(zero_copy_only=False) == where[1])
            values.append(table[field].to_numpy())
        return np.concatenate(values) if values else np.array([], np.int64)

    epochs, sample_ids = column("presentations", "epoch"), column("presentations", "sample_id")
    pairs = set(zip(epochs.tolist(), sample_ids.tolist()))
    per_epoch = np.bincount([epoch for epoch, _ in pairs]) if pairs else np.array([], np.int64)
    step_values = np.sort(column("steps", "step"))
    return Rows(
        epochs_done=epochs_done(store, run_id),
        presentation_epochs=int((per_epoch == TRAIN_SAMPLES).sum()),
        partial_epochs=int(((per_epoch > 0) & (per_epoch < TRAIN_SAMPLES)).sum()),
        duplicates=int(len(epochs) - len(pairs)),
        epoch_rows=len(set(column("epochs", "epoch", where=("split", "train")).tolist())),
        step_epochs=len(set(column("steps", "epoch").tolist())),
        steps_contiguous=bool(np.array_equal(step_values, np.arange(len(step_values)))),
    )


def writer_child(trainer_pid: int) -> int | None:
    """The pid of the trainer's writer process (``python -m store.recording``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if parent == trainer_pid and "store.recording" in command:
            return int(entry.name)
    return None


def shown_state(store: Store, run_id: str, since: float) -> tuple[str, float | None, str]:
    """Poll what a reader shows until it is not ``running`` (or ``STATUS_WAIT_SECS`` pass)."""
    stopped = wait_for(lambda: store.run_state(run_id)["status"] != "running", STATUS_WAIT_SECS, every=0.1)
    state = store.run_state(run_id)
    return state["status"], (time.monotonic() - since) if stopped else None, str(state.get("error") or "")


# -- kill scenarios -----------------------------------------------------------------


KILLS = {
    # name: (signal, whom, when)
    "SIGKILL to the process group mid-epoch": (signal.SIGKILL, "group", "mid-epoch"),
    "SIGHUP to the process group mid-epoch": (signal.SIGHUP, "group", "mid-epoch"),
    "SIGTERM to the process group mid-epoch": (signal.SIGTERM, "group", "mid-epoch"),
    "SIGINT to the process group mid-epoch": (signal.SIGINT, "group", "mid-epoch"),
    "SIGKILL of the trainer during end-of-run compaction": (signal.SIGKILL, "group", "compaction"),
    "SIGKILL of the writer child mid-epoch": (signal.SIGKILL, "writer", "mid-epoch"),
}


def kill_scenario(name: str, workdir: Path, epochs: int = 20, after_epochs: int = 1) -> KillResult:
    """Train, send ``KILLS[name]``'s signal, then read the run, repair it and read it again."""
    sig, whom, when = KILLS[name]
    store_path = workdir / "store"
    log = workdir / "trainer.log"
    workdir.mkdir(parents=True, exist_ok=True)
    trainer = start_training(store_path, epochs, log)
    store = Store(store_path)
    try:
        if not wait_for(lambda: only_run(store_path) is not None, 600):
            raise RuntimeError(f"{name}: no run appeared in 600 s; see {log}")
        run_id = only_run(store_path)
        if when == "compaction":
            wait_for(lambda: compacting(store, run_id) or trainer.poll() is not None, 900, every=0.005)
        elif after_epochs > 0:
            # The trainer saves its checkpoint at the end of each epoch (the writer child may
            # lag behind it in run.json's epochs_done): then it is into the next epoch.
            checkpoint = store.run_dir(run_id) / "checkpoint.ckpt"
            wait_for(lambda: checkpoint.exists() or trainer.poll() is not None, 900)
            time.sleep(0.2)
        else:
            time.sleep(0.5)
        target = writer_child(trainer.pid) if whom == "writer" else None
        killed_at = time.monotonic()
        if whom == "writer" and target is not None:
            os.kill(target, sig)
        else:
            os.killpg(trainer.pid, sig)
        try:
            exit_code = trainer.wait(timeout=300)
        except subprocess.TimeoutExpired:
            exit_code = None  # hung: recorded as such, then killed
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait()
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait()
    shown, after, error = shown_state(store, run_id, killed_at)
    stored = str(store.run_info(run_id).get("status"))
    before = read_rows(store, run_id)
    repair = trainmap("repair", "--run", run_id, "--store", str(store_path))
    info = store.run_info(run_id)
    return KillResult(
        name=name, exit_code=exit_code, trainer_traceback="Traceback" in log.read_text(errors="replace"),
        stored_status=stored, shown_status=shown, shown_after_secs=after, shown_error=error[:160],
        before_repair=before, repair_exit=repair.returncode,
        repair_said=" ".join((repair.stdout + repair.stderr).split())[:160],
        status_after_repair=str(info.get("status")), compacted_after_repair=bool(info.get("compacted")),
        after_repair=read_rows(store, run_id),
    )


# -- resume scenarios ---------------------------------------------------------------


RESUMES = {
    # name: (signal to the group after one epoch, or None: let it finish; epochs; --epochs of the resume)
    "resume after SIGTERM, more epochs": (signal.SIGTERM, 10, 12),
    "resume after SIGKILL, same epochs": (signal.SIGKILL, 10, None),
    "resume after SIGINT, more epochs": (signal.SIGINT, 10, 11),
    "resume a finished run with more epochs": (None, 2, 4),
}


def resume_scenario(name: str, workdir: Path) -> ResumeResult:
    sig, epochs, more = RESUMES[name]
    store_path = workdir / "store"
    workdir.mkdir(parents=True, exist_ok=True)
    trainer = start_training(store_path, epochs, workdir / "trainer.log")
    store = Store(store_path)
    try:
        wait_for(lambda: only_run(store_path) is not None, 600)
        run_id = only_run(store_path)
        if sig is not None:
            wait_for(lambda: (store.run_dir(run_id) / "checkpoint.ckpt").exists() or trainer.poll() is not None, 900)
            time.sleep(0.2)
            os.killpg(trainer.pid, sig)
        first_exit = trainer.wait(timeout=900)
    finally:
        if trainer.poll() is None:
            os.killpg(trainer.pid, signal.SIGKILL)
            trainer.wait()
    args = ["train", "--resume", run_id, "--store", str(store_path), "--no-progress"]
    if more is not None:
        args += ["--epochs", str(more)]
    resumed = trainmap(*args)
    info = store.run_info(run_id)
    said = [line for line in (resumed.stderr if resumed.returncode else resumed.stdout).splitlines()
            if line.strip() and "weights_only" not in line]
    return ResumeResult(
        name=name, first_exit=first_exit, resume_exit=resumed.returncode, resume_said=(said or [""])[-1][:160],
        status=str(info.get("status")), max_epochs=int(info.get("max_epochs") or 0), rows=read_rows(store, run_id),
    )


# -- concurrency --------------------------------------------------------------------


class ReadLoop:
    """Read a store over and over from a thread (the ``store`` API, or the CLI), counting reads,
    reads made while a run was compacting, and errors."""

    def __init__(self, store: Store, use_cli: bool) -> None:
        self.store, self.use_cli = store, use_cli
        self.reads = self.during_compaction = self.errors = 0
        self.first_error = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def read_once(self) -> None:
        from store import dynamics, run_summary, runs_table

        root = self.store.root
        ids = self.store.run_ids() if (root / "runs").is_dir() else []
        if self.use_cli:
            output = str(self.store.root.parent / f"read-{threading.get_ident()}.csv")
            for args in (("runs", "--format", "json"), *(("dynamics", "--run", r, "-o", output) for r in ids[:2])):
                result = trainmap(*args, "--store", str(root), timeout=300)
                self.count(any(compacting(self.store, r) for r in ids),
                           result.stderr.strip() if result.returncode else "")
            return
        runs_table(self.store)
        self.count(False, "")
        for run_id in ids:
            during = compacting(self.store, run_id)
            frame = dynamics(self.store, run_id)
            run_summary(self.store, run_id)
            ended = self.store.run_info(run_id).get("status") != "running"
            whole = len(frame) % TRAIN_SAMPLES == 0
            self.count(during, "" if whole or not ended else f"{len(frame)} presentation rows after the run ended")

    def count(self, during: bool, problem: str) -> None:
        self.reads += 1
        self.during_compaction += int(during)
        if problem:
            self.errors += 1
            self.first_error = self.first_error or problem[:200]

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.read_once()
            except FileNotFoundError:
                continue  # the store's folders are being created
            except Exception as error:  # noqa: BLE001 - every failure of a read is what is counted
                self.count(False, f"{type(error).__name__}: {error}")


def two_writers_scenario(workdir: Path, epochs: int = 10) -> list[ConcurrencyResult]:
    """Two runs train into one store while the ``store`` API and the CLI read it."""
    store_path = workdir / "store"
    workdir.mkdir(parents=True, exist_ok=True)
    trainers = [start_training(store_path, epochs, workdir / f"trainer{index}.log") for index in range(2)]
    store = Store(store_path)
    wait_for(lambda: (store_path / "runs").is_dir(), 600)
    loops = [ReadLoop(store, use_cli=False), ReadLoop(store, use_cli=True)]
    for loop in loops:
        loop.thread.start()
    codes = [trainer.wait(timeout=1800) for trainer in trainers]
    for loop in loops:
        loop.stop.set()
        loop.thread.join(timeout=600)
    rows = [read_rows(store, run_id) for run_id in store.run_ids()]
    complete = (len(rows) == 2 and all(r.consistent and r.epochs_done == epochs for r in rows)
                and codes == [0, 0])
    detail = f"{len(rows)} runs, exits {codes}, epochs on disk {[r.presentation_epochs for r in rows]}"
    return [ConcurrencyResult(f"two runs writing; reads through the {kind}", loop.reads, loop.during_compaction,
                              loop.errors, loop.first_error, complete, detail)
            for kind, loop in zip(("store API", "CLI"), loops)]


def compaction_race_scenario(workdir: Path, rounds: int = 10) -> ConcurrencyResult:
    """Reads of a run while it is compacted, again and again: a copy of a sample run is turned
    back into segments (``Store.reopen_run``) and compacted while two threads read it."""
    import shutil

    from store import compact_run, dynamics, run_summary

    store_path = workdir / "store"
    shutil.copytree(ROOT / "sample_runs", store_path)
    store = Store(store_path)
    run_id = store.run_ids()[0]
    expected = len(dynamics(store, run_id))
    loops = [ReadLoop(store, use_cli=False) for _ in range(2)]
    state = {"compacting": False, "samples": len(run_summary(store, run_id))}
    for loop in loops:
        loop.read_once = lambda loop=loop: race_read(loop, store, run_id, expected, state)  # type: ignore[method-assign]
        loop.thread.start()
    for _ in range(rounds):
        store.reopen_run(run_id)
        time.sleep(0.2)
        state["compacting"] = True
        compact_run(store, run_id)
        state["compacting"] = False
        time.sleep(0.2)
    for loop in loops:
        loop.stop.set()
        loop.thread.join(timeout=120)
    complete = len(dynamics(store, run_id)) == expected and bool(store.run_info(run_id).get("compacted"))
    return ConcurrencyResult(f"reads racing compaction ({rounds} rounds, 2 reader threads)",
                             sum(l.reads for l in loops), sum(l.during_compaction for l in loops),
                             sum(l.errors for l in loops), next((l.first_error for l in loops if l.first_error), ""),
                             complete, f"{expected} presentation rows expected on every read")


def race_read(loop: ReadLoop, store: Store, run_id: str, expected: int, state: dict) -> None:
    from store import dynamics, run_summary

    during = state["compacting"]
    rows = len(dynamics(store, run_id))
    summary = run_summary(store, run_id)
    loop.count(during, "" if rows == expected and len(summary) == state["samples"]
               else f"read {rows} presentation rows / {len(summary)} summary rows")
