"""``trainmap jobs``: run, list and cancel the store's rerun jobs (``store.jobs``).

``trainmap jobs run`` is the local executor: it takes the store's executor lock, claims
queued jobs one after another, runs each ``trainmap train`` as a child in its own process
group (its output into the job's log file), records the outcome, and exits when the queue
is empty. Torch-free itself: the training happens in the child.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.cli.common import CliError, add_store_argument, open_store

#: How often the executor looks at its child (exit, cancel request, run id).
POLL_SECS = 0.5


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "jobs", help="run, list or cancel the store's queued reruns",
        description="Rerun jobs queued by the dashboard: `run` executes them one after another on this "
        "machine, `list` shows them newest first, `cancel JOB_ID` cancels a queued or running one.",
    )
    actions = parser.add_subparsers(dest="jobs_action", required=True, metavar="ACTION")
    run_parser = actions.add_parser("run", help="run the queued jobs one after another, then exit")
    add_store_argument(run_parser)
    run_parser.set_defaults(handler=run)
    list_parser = actions.add_parser("list", help="list the jobs, newest first")
    add_store_argument(list_parser)
    list_parser.set_defaults(handler=list_command)
    cancel_parser = actions.add_parser("cancel", help="cancel a queued or running job")
    cancel_parser.add_argument("job_id", metavar="JOB_ID")
    add_store_argument(cancel_parser)
    cancel_parser.set_defaults(handler=cancel_command)


def list_command(args: argparse.Namespace) -> int:
    from store.jobs import list_jobs
    from store.progress import read_progress

    store = open_store(args, must_exist=False)
    listing = list_jobs(store.root)
    for warning in listing.warnings:
        print(f"trainmap: warning: {warning}", file=sys.stderr)
    if not listing.jobs:
        print("no jobs")
        return 0
    for job in listing.jobs:
        progress = read_progress(store.root, job.run_id) if job.run_id else None
        extra = progress.text() if progress is not None and job.state == "running" else (job.error or "")
        print("\t".join([job.job_id, job.state, job.run_name, job.run_id or "-", job.created_at, extra]))
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    from store.jobs import JobError, cancel

    store = open_store(args)
    try:
        job = cancel(store.root, args.job_id)
    except JobError as error:
        raise CliError(str(error)) from error
    print(f"{job.job_id}: {job.state}")
    return 0


class _Stopped(Exception):
    """The executor itself got SIGTERM."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped(f"the executor got signal {signum}")


def run(args: argparse.Namespace) -> int:
    from store.jobs import acquire_executor_lock, claim_next, executor_holder, list_jobs, release_executor_lock

    root = open_store(args, must_exist=True).root
    if not acquire_executor_lock(root):
        holder = executor_holder(root) or {}
        print(f"another executor (pid {holder.get('pid')} on {holder.get('host')}) runs this store's jobs",
              file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, _stop)
    done = 0
    try:
        while True:
            job = claim_next(root)
            if job is None:
                release_executor_lock(root)
                # A job submitted while we were letting go: take it, unless another executor did.
                if any(job.state == "queued" for job in list_jobs(root).jobs) and acquire_executor_lock(root):
                    continue
                break
            run_job(root, job)
            done += 1
    finally:
        release_executor_lock(root)
    print(f"ran {done} job(s); the queue is empty", file=sys.stderr)
    return 0


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _run_named(root: Path, name: str, since: str | None) -> str | None:
    """The newest run called ``name`` created at or after ``since``."""
    from store.errors import StoreError
    from store.layout import Store

    store = Store(root)
    for run_id in reversed(store.run_ids()):
        try:
            info = store.run_info(run_id)
        except StoreError:
            continue
        created = str(info.get("created_at") or "")[:19]  # to the second: run.json's precision
        if info.get("name") == name and (since is None or created >= since[:19]):
            return run_id
    return None


def _last_line(log_path: Path) -> str:
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


def run_job(root: Path, job: Any) -> Any:
    """Run one claimed job to its end; returns the job as finally recorded."""
    from store.jobs import cancel_requested, get_job, touch, utc_now, write_job

    log_path = root / job.log_path
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if cancel_requested(root, job.job_id):
        return write_job(root, replace(get_job(root, job.job_id), state="cancelled", ended_at=utc_now()))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "training.cli", *job.args], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    job = write_job(root, replace(get_job(root, job.job_id), child_pid=child.pid))
    run_id, last_touch, error = None, time.monotonic(), None
    try:
        while child.poll() is None:
            if cancel_requested(root, job.job_id):  # cancelled from another host: stop it here
                _terminate(child)
            if run_id is None:
                run_id = _run_named(root, job.run_name, job.started_at)
                if run_id is not None:
                    job = write_job(root, replace(get_job(root, job.job_id), run_id=run_id))
            if time.monotonic() - last_touch > 5:
                touch(root, job.job_id)
                last_touch = time.monotonic()
            time.sleep(POLL_SECS)
    except _Stopped as stopped:
        _terminate(child)
        error = f"{stopped}; the training was stopped"
    returncode = child.wait()
    run_id = run_id or _run_named(root, job.run_name, job.started_at)
    current = get_job(root, job.job_id)
    if cancel_requested(root, job.job_id):
        state, error = "cancelled", current.error or "cancelled while running"
    elif returncode == 0 and run_id is not None and error is None:
        state = "finished"
    else:
        state = "failed"
        error = error or f"exit status {returncode}: {_last_line(log_path) or 'no output'} (log: {log_path})"
    final = write_job(root, replace(current, state=state, run_id=run_id, returncode=returncode, ended_at=utc_now(),
                                    error=error if state != "finished" else None))
    if error is not None and state == "failed" and error.startswith("the executor got signal"):
        raise _Stopped(error)
    return final


def _terminate(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
