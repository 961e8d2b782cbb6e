"""Rerun jobs: the one module that owns the job record format ``<store>/jobs/<job_id>.json``.

A job is one ``trainmap train`` command that an executor runs later (``trainmap jobs run``
on this machine; any other executor that follows the same protocol). Files::

    <store>/jobs/<job_id>.json      the record (``Job``), written atomically (store.files)
    <store>/jobs/<job_id>.claim     created with O_EXCL by whoever takes a queued job (an
                                    executor to run it, ``cancel`` to cancel it): only one wins
    <store>/jobs/<job_id>.cancel    a cancel request (the executor's last write keeps it cancelled)
    <store>/jobs/executor.lock      the live local executor (pid, host), O_EXCL as well
    <store>/jobs/logs/<job_id>.log  the child's stdout and stderr

States: ``queued`` -> ``running`` -> ``finished`` / ``failed`` / ``cancelled``; a queued job
can go straight to ``cancelled``. A reader shows a ``running`` job whose executor is gone
(its pid on this host no longer exists, or its record not touched for ``STALE_AFTER_SECS``)
as ``failed`` with the reason (``shown``), without writing anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import socket
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from store.errors import StoreError
from store.files import write_json_atomic


JOB_STATES = ("queued", "running", "finished", "failed", "cancelled")
#: States in which a job blocks a second submission of the same work.
BLOCKING_STATES = ("queued", "running", "finished")
#: A running job's record is touched by its executor at least this often ...
TOUCH_SECS = 10.0
#: ... and one untouched for longer is shown failed (its executor died with its node).
STALE_AFTER_SECS = 120.0
JOBS_DIR = "jobs"
EXECUTOR_LOCK = "executor.lock"
#: ``trainmap train`` options whose value names a run or a place, not a setting: left out of
#: the fingerprint that finds duplicates (the curriculum counts through its content hash).
UNSETTLED_OPTIONS = ("--name", "--store", "--curriculum")


class JobError(StoreError):
    """A job request that cannot be honoured (duplicate, unknown id, bad field)."""


@dataclass(frozen=True)
class Job:
    """One job record. ``args``: the full ``trainmap train`` argument list (``train`` first);
    ``curriculum``: the curriculum file's path relative to the store; ``pid``/``host``: the
    executor that runs it; ``child_pid``: the training process (its own process group)."""

    job_id: str
    state: str
    created_at: str
    parent_run_id: str
    curriculum: str
    curriculum_sha256: str
    fingerprint: str
    args: tuple[str, ...]
    run_name: str
    log_path: str
    started_at: str | None = None
    ended_at: str | None = None
    run_id: str | None = None
    pid: int | None = None
    host: str | None = None
    child_pid: int | None = None
    returncode: int | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


_STR = ("job_id", "state", "created_at", "parent_run_id", "curriculum", "curriculum_sha256", "fingerprint",
        "run_name", "log_path")
_OPTIONAL_STR = ("started_at", "ended_at", "run_id", "host", "error")
_OPTIONAL_INT = ("pid", "child_pid", "returncode")


def utc_now() -> str:
    """Now, to the millisecond: jobs queued in the same second still list in order."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def jobs_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / JOBS_DIR


def job_path(root: str | os.PathLike[str], job_id: str) -> Path:
    if not isinstance(job_id, str) or not job_id.startswith("job-") or "/" in job_id or len(job_id) > 80:
        raise JobError(f"invalid job id {job_id!r}; expected an id like job-20261203-150826-5ab2c1 "
                       "(see `trainmap jobs list`)")
    return jobs_dir(root) / f"{job_id}.json"


def job_from_dict(payload: Any, source: str) -> Job:
    """A ``Job`` from a record read back, every field checked; ``StoreError`` naming ``source``."""

    def damaged(problem: str) -> StoreError:
        return StoreError(f"job file {source} is damaged: {problem}; expected a JSON object with the fields of "
                          "store.jobs.Job (delete or fix the file)")

    if not isinstance(payload, dict):
        raise damaged(f"it holds a JSON {type(payload).__name__}")
    known = {f.name for f in fields(Job)}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise damaged(f"unknown field(s) {', '.join(unknown)}")
    for name in _STR:
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise damaged(f"'{name}' is {payload.get(name)!r}, not a non-empty string")
    for name in _OPTIONAL_STR:
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise damaged(f"'{name}' is {payload[name]!r}, not a string or null")
    for name in _OPTIONAL_INT:
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise damaged(f"'{name}' is {value!r}, not an integer or null")
    if payload["state"] not in JOB_STATES:
        raise damaged(f"'state' is {payload['state']!r}, not one of {', '.join(JOB_STATES)}")
    args = payload.get("args")
    if not isinstance(args, list) or not args or args[0] != "train" or not all(isinstance(a, str) for a in args):
        raise damaged("'args' is not a list of strings starting with 'train'")
    return Job(**{**payload, "args": tuple(args)})


def read_job(path: Path) -> Job:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StoreError(f"cannot read job file {path}: {error}") from error
    job = job_from_dict(payload, str(path))
    if f"{job.job_id}.json" != path.name:
        raise StoreError(f"job file {path} is damaged: it holds job {job.job_id!r}; expected {path.stem!r}")
    return job


def write_job(root: str | os.PathLike[str], job: Job) -> Job:
    payload = asdict(job)
    payload["args"] = list(job.args)
    write_json_atomic(job_path(root, job.job_id), payload)
    return job


@dataclass(frozen=True)
class JobListing:
    """The store's jobs, newest first, and one warning per job file that could not be read."""

    jobs: tuple[Job, ...]
    warnings: tuple[str, ...]


def list_jobs(root: str | os.PathLike[str], now: float | None = None) -> JobListing:
    """Every job as a reader should show it (``shown``), newest first."""
    folder = jobs_dir(root)
    if not folder.is_dir():
        return JobListing((), ())
    jobs, warnings = [], []
    for path in sorted(folder.glob("job-*.json")):
        try:
            jobs.append(shown(root, read_job(path), now))
        except StoreError as error:  # returned for the caller to show, once
            warnings.append(str(error))
    jobs.sort(key=lambda job: (job.created_at, job.job_id), reverse=True)
    return JobListing(tuple(jobs), tuple(warnings))


def get_job(root: str | os.PathLike[str], job_id: str) -> Job:
    """The job ``job_id`` as stored (``JobError`` for an unknown id)."""
    path = job_path(root, job_id)
    if not path.exists():
        raise JobError(f"no job {job_id!r} in store {str(root)!r} (see `trainmap jobs list`)")
    return read_job(path)


def alive(pid: int, host: str | None) -> bool:
    """Whether process ``pid`` on ``host`` may still be running (another host: assumed so)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, another user's
    return True


def shown(root: str | os.PathLike[str], job: Job, now: float | None = None) -> Job:
    """``job`` as a reader shows it: a running one whose executor is gone is ``failed``."""
    if job.state != "running":
        return job
    now = time.time() if now is None else now
    try:
        touched = job_path(root, job.job_id).stat().st_mtime
    except OSError:
        touched = now
    if now - touched > STALE_AFTER_SECS:
        return replace(job, state="failed", error=f"interrupted: its executor has not touched the record for more "
                       f"than {STALE_AFTER_SECS:.0f} s (killed, or its node went down)")
    if job.pid is not None and not alive(job.pid, job.host):
        return replace(job, state="failed",
                       error=f"interrupted: its executor (pid {job.pid} on {job.host}) is no longer running")
    return job


def option_value(args: tuple[str, ...] | list[str], option: str) -> str | None:
    """The value that follows ``option`` in ``args`` (None when absent)."""
    args = list(args)
    return args[args.index(option) + 1] if option in args and args.index(option) + 1 < len(args) else None


def settings_fingerprint(args: list[str] | tuple[str, ...]) -> str:
    """A hash of the settings in ``args``: every option except ``UNSETTLED_OPTIONS``."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in UNSETTLED_OPTIONS:
            skip = True
        else:
            kept.append(arg)
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


#: Curriculum metadata that says when or where a file was made, not what it holds.
VOLATILE_METADATA = ("created_at",)


def curriculum_sha256(path: Path) -> str:
    """A hash of what a curriculum file holds (its rows and its metadata, less
    ``VOLATILE_METADATA``): the same curriculum built twice, a second apart, hashes the same."""
    from store.curriculum.format import load_curriculum  # pandas: only when a job is submitted

    return curriculum_digest(load_curriculum(path))


def curriculum_digest(curriculum: Any) -> str:
    """``curriculum_sha256`` of a loaded ``store.curriculum.Curriculum``."""
    digest = hashlib.sha256()
    table = curriculum.table.sort_values("sample_id", kind="stable").reset_index(drop=True)
    digest.update(table.to_csv(index=False, float_format="%.17g").encode())
    metadata = {key: value for key, value in curriculum.metadata.items() if key not in VOLATILE_METADATA}
    digest.update(json.dumps(metadata, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def duplicate_of(root: str | os.PathLike[str], parent_run_id: str, sha256: str, fingerprint: str) -> Job | None:
    """The queued, running or finished job with the same parent, curriculum content and settings."""
    for job in list_jobs(root).jobs:
        if job.state in BLOCKING_STATES and (job.parent_run_id, job.curriculum_sha256, job.fingerprint) == (
                parent_run_id, sha256, fingerprint):
            return job
    return None


def _exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` only if it does not exist (O_EXCL): who created it wins."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return True


class _SubmitLock:
    """A short O_EXCL lock around the duplicate check and the write of a new job."""

    def __init__(self, folder: Path, wait: float = 10.0) -> None:
        self.path, self.wait = folder / "submit.lock", wait

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.wait
        while not _exclusive(self.path, str(os.getpid())):
            try:
                if time.time() - self.path.stat().st_mtime > self.wait:  # left by a killed submitter
                    self.path.unlink(missing_ok=True)
                    continue
            except OSError:
                continue
            if time.monotonic() > deadline:
                raise JobError(f"cannot submit: {self.path} is held by another submission; try again")
            time.sleep(0.05)

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def new_job_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"job-{stamp}-{secrets.token_hex(3)}"


def submit(root: str | os.PathLike[str], *, parent_run_id: str, curriculum: str | os.PathLike[str],
           args: list[str], run_name: str) -> Job:
    """Queue ``trainmap train <args>`` as a new job; refuse a duplicate (``JobError`` naming it).

    ``curriculum``: the curriculum file, inside the store (``curriculum_sha256`` identifies it)."""
    root_path = Path(root).resolve()
    curriculum_path = Path(curriculum).resolve()
    try:
        relative = curriculum_path.relative_to(root_path)
    except ValueError:
        raise JobError(f"curriculum file {str(curriculum)!r} is not inside the store {str(root)!r}; "
                       "save it into the store's curricula/ first") from None
    if not curriculum_path.is_file():
        raise JobError(f"curriculum file {str(curriculum)!r} does not exist")
    if not args or args[0] != "train" or not all(isinstance(a, str) for a in args):
        raise JobError(f"a job runs `trainmap train ...`; got arguments {args!r}")
    sha256, fingerprint = curriculum_sha256(curriculum_path), settings_fingerprint(args)
    folder = jobs_dir(root)
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    with _SubmitLock(folder):
        earlier = duplicate_of(root, parent_run_id, sha256, fingerprint)
        if earlier is not None:
            raise JobError(f"the same rerun (parent {parent_run_id}, same curriculum and settings) is already "
                           f"{earlier.state} as job {earlier.job_id}; change a setting or cancel that job")
        job_id = new_job_id()
        job = Job(job_id=job_id, state="queued", created_at=utc_now(), parent_run_id=parent_run_id,
                  curriculum=str(relative), curriculum_sha256=sha256, fingerprint=fingerprint, args=tuple(args),
                  run_name=run_name, log_path=str(Path(JOBS_DIR) / "logs" / f"{job_id}.log"))
        return write_job(root, job)


def claim_next(root: str | os.PathLike[str]) -> Job | None:
    """Take the oldest queued job for this process (state ``running``, pid and host set).

    The claim is the O_EXCL creation of ``<job_id>.claim``: of two executors (or an executor
    and ``cancel``) only one takes a job. None when no queued job is left."""
    folder = jobs_dir(root)
    for job in sorted(list_jobs(root).jobs, key=lambda job: (job.created_at, job.job_id)):
        if job.state != "queued":
            continue
        if not _exclusive(folder / f"{job.job_id}.claim", f"{os.getpid()}@{socket.gethostname()}"):
            continue
        current = get_job(root, job.job_id)
        if current.state != "queued":  # cancelled between the listing and the claim
            continue
        return write_job(root, replace(current, state="running", started_at=utc_now(), pid=os.getpid(),
                                       host=socket.gethostname()))
    return None


def cancel_requested(root: str | os.PathLike[str], job_id: str) -> bool:
    return (jobs_dir(root) / f"{job_id}.cancel").exists()


def cancel(root: str | os.PathLike[str], job_id: str) -> Job:
    """Cancel a queued job, or stop a running one (SIGTERM to its training process group);
    returns the job, now ``cancelled``. A job already ended is refused (``JobError``)."""
    job = shown(root, get_job(root, job_id))
    if not job.active:
        raise JobError(f"job {job_id} is already {job.state}; only a queued or running job can be cancelled")
    folder = jobs_dir(root)
    (folder / f"{job_id}.cancel").write_text(utc_now())
    if _exclusive(folder / f"{job_id}.claim", f"cancel {os.getpid()}@{socket.gethostname()}"):
        job = get_job(root, job_id)  # still queued: no executor can take it now
        return write_job(root, replace(job, state="cancelled", ended_at=utc_now(), error="cancelled before it started"))
    job = get_job(root, job_id)  # claimed: running (or about to); stop its training process
    if job.child_pid is not None and job.host == socket.gethostname():
        try:
            os.killpg(job.child_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    elif job.child_pid is not None:
        raise JobError(f"job {job_id} runs on host {job.host}, not this one; cancel it there "
                       "(the cancel request is recorded and its executor honours it)")
    return write_job(root, replace(job, state="cancelled", ended_at=utc_now(), error="cancelled while running"))


def touch(root: str | os.PathLike[str], job_id: str) -> None:
    """Say that ``job_id``'s executor is alive (the record's modification time)."""
    os.utime(job_path(root, job_id))


def acquire_executor_lock(root: str | os.PathLike[str]) -> bool:
    """Take the store's executor lock for this process; False when a live executor holds it
    (a lock left by a dead local process is replaced)."""
    folder = jobs_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EXECUTOR_LOCK
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now()})
    for _ in range(3):
        if _exclusive(path, text):
            return True
        holder = executor_holder(root)
        if holder is not None:
            return False
        stale = path.with_name(f"{EXECUTOR_LOCK}.{os.getpid()}.stale")
        try:
            os.rename(path, stale)  # only one process moves a given stale lock away
            stale.unlink()
        except OSError:
            pass
    return False


def executor_holder(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The live executor holding the store's lock (``pid``, ``host``), or None."""
    path = jobs_dir(root) / EXECUTOR_LOCK
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None} if time.time() - path.stat().st_mtime < 5 else None  # being written
    if not isinstance(holder, dict) or isinstance(holder.get("pid"), bool) or not isinstance(holder.get("pid"), int):
        return None
    return holder if alive(holder["pid"], holder.get("host")) else None


def release_executor_lock(root: str | os.PathLike[str]) -> None:
    path = jobs_dir(root) / EXECUTOR_LOCK
    holder = executor_holder(root)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
