"""The bad-input corpus of issue 16: each case is one bad input to ``trainmap`` (or one hostile
dashboard URL) and what the refusal must say.

A CLI case runs ``python -m training.cli ARGV`` on a damaged copy of ``sample_runs/`` (or on a
new store path that must stay absent). It must exit non-zero with exactly one line on stderr
that contains ``expected``, print no traceback, leave the store's checksum unchanged and
create nothing. ``{store}``, ``{run}``, ``{other}`` and ``{work}`` in ``argv`` stand for the
store path, the damaged run, another sample run, and the case's work folder.

A URL case opens a dashboard page in Streamlit's ``AppTest`` with hostile query parameters: it
must show no exception, show ``expected`` (an in-app message) when given, and leave the store
unchanged. ``tests/cli/test_bad_input_corpus.py`` runs every case; ``scripts/fault_report.py``
counts them in ``benchmarks/results/faults.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RUNS = ROOT / "sample_runs"
DAMAGED_RUN = "20261126-132554-73bd55"  # the first shipped sample run: the one each case damages
OTHER_RUN = "20261126-132600-4a91af"
LONG = "r" * 5000
DEAD_PID = 2**22 + 4321  # above Linux's default pid_max: no process has it

Setup = Callable[[Path], None]


def nothing(store: Path) -> None:
    """Leave the copy of the sample runs as shipped."""


@dataclass(frozen=True)
class Case:
    """One bad command line: ``setup(store)`` damages the store first; ``new_store`` runs the
    command on a path that does not exist yet (and must not exist after)."""

    name: str
    category: str
    argv: tuple[str, ...]
    expected: str
    setup: Setup = nothing
    new_store: bool = False
    xfail: str | None = None  # a known bug in a file this corpus's owner does not own


@dataclass(frozen=True)
class UrlCase:
    """One hostile dashboard URL: ``page`` (None: the Runs page) with query ``params``."""

    name: str
    page: str | None
    params: dict[str, str | list[str]] = field(hash=False)
    expected: str | None = None
    setup: Setup = nothing
    category: str = "dashboard URL"
    xfail: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What a case did: exit status, the non-blank stderr lines, whether a traceback showed,
    whether the store's bytes changed, and whether a new store path was created."""

    returncode: int
    stderr_lines: tuple[str, ...]
    traceback: bool
    store_changed: bool
    created: bool

    def problems(self, expected: str) -> list[str]:
        """What this outcome breaks of the corpus's rule (empty: a clean refusal)."""
        found = []
        if self.returncode == 0:
            found.append("exit status 0")
        if self.traceback:
            found.append("traceback")
        if len(self.stderr_lines) != 1:
            found.append(f"{len(self.stderr_lines)} stderr lines")
        elif expected not in self.stderr_lines[0]:
            found.append(f"stderr {self.stderr_lines[0][:200]!r} lacks {expected!r}")
        if self.store_changed:
            found.append("store changed")
        if self.created:
            found.append("created the new store path")
        return found


# -- damage -------------------------------------------------------------------------


def checksum(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes (an absent folder has one too)."""
    digest = hashlib.sha256()
    if folder.exists():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def run_file(store: Path, *parts: str) -> Path:
    return store.joinpath("runs", DAMAGED_RUN, *parts)


def store_json(content: object) -> Setup:
    def setup(store: Path) -> None:
        text = content if isinstance(content, str) else json.dumps(content)
        (store / "store.json").write_text(text)
    return setup


def run_json(content: str) -> Setup:
    def setup(store: Path) -> None:
        run_file(store, "run.json").write_text(content)
    return setup


def edit_run(**fields: object) -> Setup:
    def setup(store: Path) -> None:
        path = run_file(store, "run.json")
        info = json.loads(path.read_text())
        info.update(fields)
        path.write_text(json.dumps(info))
    return setup


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 3]  # cut short: no Parquet footer


def garble(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:8] + bytes(range(256)) * 4 + data[middle:]  # magic intact, footer intact, body not


def zero(data: bytes) -> bytes:
    return b""


def damage_file(relative: str, how: Callable[[bytes], bytes], reopen: bool = False, dead: bool = False) -> Setup:
    """Damage ``runs/<run>/<relative>``; ``reopen``: first turn the compacted run back into
    segments (as a live or killed run has them); ``dead``: mark it running under a dead pid."""

    def setup(store: Path) -> None:
        if reopen or dead:
            sys.path.insert(0, str(ROOT))
            from store import Store

            handle = Store(store)
            if reopen:
                handle.reopen_run(DAMAGED_RUN)
            if dead:
                handle.update_run(DAMAGED_RUN, status="running", pid=DEAD_PID, host=socket.gethostname(),
                                  finished_at=None)
        path = run_file(store, relative)
        path.write_bytes(how(path.read_bytes()))
    return setup


def with_checkpoint(then: Setup) -> Setup:
    """``then``, and a checkpoint file in the run's folder that is not a checkpoint."""

    def setup(store: Path) -> None:
        then(store)
        run_file(store, "checkpoint.ckpt").write_bytes(b"not a checkpoint" * 64)
    return setup


def write_work_file(name: str, content: str | bytes, then: Setup = nothing) -> Setup:
    """A file beside the store (a curriculum, its side-car) for the command to read."""

    def setup(store: Path) -> None:
        path = store.parent / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        then(store)
    return setup


def curriculum_parquet(side_car: dict | None = None, **columns: list) -> Setup:
    """A Parquet curriculum ``c.parquet`` beside the store, with an optional side-car
    ``c.parquet.json`` replacing the metadata."""

    def setup(store: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = store.parent / "c.parquet"
        pq.write_table(pa.table(columns), path)
        if side_car is not None:
            Path(f"{path}.json").write_text(json.dumps(side_car))
    return setup


def csv_curriculum(content: str, side_car: object = None) -> Setup:
    def setup(store: Path) -> None:
        (store.parent / "c.csv").write_text(content)
        if side_car is not None:
            (store.parent / "c.csv.json").write_text(side_car if isinstance(side_car, str) else json.dumps(side_car))
    return setup


# -- the corpus ----------------------------------------------------------------------

SCORES = ("scores", "--run", "{run}", "--store", "{store}")
DYNAMICS = ("dynamics", "--run", "{run}", "--store", "{store}")
CURRICULUM = ("curriculum", "--run", "{run}", "--strategy", "keep-easy", "--score", "loss", "--keep", "0.5",
              "--store", "{store}")
REPAIR = ("repair", "--run", "{run}", "--store", "{store}")
TRAIN_NEW = ("--store", "{work}/new-store")
VERSION_RULE = "expected a whole number"


def store_json_cases() -> list[Case]:
    cases = [Case(f"store.json schema_version {shown}", "store.json", ("runs", "--store", "{store}"),
                  f"schema_version {shown}", store_json({"format": "trainmap-store", "schema_version": value}))
             for value, shown in [(-5, "-5"), (1.9, "1.9"), (True, "True"), ("4", "'4'"), (None, "None"),
                                  ("1e999", "'1e999'")]]
    cases[0] = Case(cases[0].name, cases[0].category, cases[0].argv, f"schema_version -5; {VERSION_RULE}",
                    cases[0].setup)
    cases += [
        Case("store.json from a newer trainmap", "store.json", ("runs", "--store", "{store}"),
             "schema version 999, newer than this trainmap understands (4)", store_json({"format": "trainmap-store", "schema_version": 999})),
        Case("store.json not JSON", "store.json", SCORES, "store.json", store_json("{oops")),
        Case("store.json a JSON list", "store.json", ("runs", "--store", "{store}"), "store.json", store_json([4])),
        Case("store.json without schema_version", "store.json", DYNAMICS, "schema_version",
             store_json({"format": "trainmap-store"})),
        Case("store path is a file", "store.json", ("runs", "--store", "{work}/a-file"),
             "is a file; expected a store directory", write_work_file("a-file", "x")),
    ]
    return cases


def run_json_cases() -> list[Case]:
    where = f"runs/{DAMAGED_RUN}/run.json"
    return [
        Case("run.json a JSON list", "run.json", SCORES, "it holds a JSON list", run_json("[]")),
        Case("run.json config a string", "run.json", SCORES, "its 'config' is a str",
             run_json('{"status": "finished", "config": "lr=0.1"}')),
        Case("run.json unknown status", "run.json", DYNAMICS, "its 'status' is 'done'",
             run_json('{"status": "done"}')),
        Case("run.json not JSON", "run.json", SCORES, where, run_json("{not json")),
        Case("run.json empty", "run.json", DYNAMICS, where, run_json("")),
        Case("run.json NUL bytes", "run.json", SCORES, where, run_json("\0\0\0")),
        Case("run.json epochs_done a string", "run.json", CURRICULUM, "its 'epochs_done' is 'many'",
             edit_run(epochs_done="many")),
        Case("run.json max_epochs negative", "run.json", SCORES, "its 'max_epochs' is -3", edit_run(max_epochs=-3)),
        Case("run.json name a list", "run.json", DYNAMICS, "its 'name' is a list", edit_run(name=["a"])),
    ]


def segment_cases() -> list[Case]:
    compacted, segment = "compacted file", "Parquet segment"
    seg = "presentations/part-compacted.parquet"
    return [
        Case("truncated compacted summary: scores", compacted, SCORES, "summary.parquet",
             damage_file("summary.parquet", truncate)),
        Case("garbled compacted summary: scores", compacted, SCORES, "summary.parquet",
             damage_file("summary.parquet", garble)),
        Case("truncated compacted presentations: dynamics", compacted, DYNAMICS, "presentations.parquet",
             damage_file("presentations.parquet", truncate)),
        Case("empty compacted presentations: dynamics", compacted, DYNAMICS, "presentations.parquet",
             damage_file("presentations.parquet", zero)),
        Case("garbled compacted presentations: dynamics", compacted, DYNAMICS, "presentations.parquet",
             damage_file("presentations.parquet", garble)),
        Case("truncated compacted summary: curriculum", compacted, CURRICULUM, "summary.parquet",
             damage_file("summary.parquet", truncate)),
        Case("truncated samples file: scores", compacted, SCORES, "samples.parquet",
             damage_file("samples.parquet", truncate)),
        Case("truncated segment: scores", segment, SCORES, "part-compacted.parquet",
             damage_file(seg, truncate, reopen=True)),
        Case("garbled segment: scores", segment, SCORES, "part-compacted.parquet",
             damage_file(seg, garble, reopen=True)),
        Case("truncated segment: dynamics", segment, DYNAMICS, "part-compacted.parquet",
             damage_file(seg, truncate, reopen=True)),
        Case("empty segment: dynamics", segment, DYNAMICS, "part-compacted.parquet",
             damage_file(seg, zero, reopen=True)),
        Case("truncated segment: curriculum", segment, CURRICULUM, "part-compacted.parquet",
             damage_file(seg, truncate, reopen=True)),
        Case("truncated segment: repair of a dead run", segment, REPAIR, "part-compacted.parquet",
             damage_file(seg, truncate, reopen=True, dead=True)),
        Case("truncated steps segment: repair of a dead run", segment, REPAIR, "part-compacted.parquet",
             damage_file("steps/part-compacted.parquet", truncate, reopen=True, dead=True)),
        Case("truncated segment: train --resume", segment,
             ("train", "--resume", "{run}", "--epochs", "30", "--store", "{store}"), "part-compacted.parquet",
             with_checkpoint(damage_file(seg, truncate, reopen=True, dead=True))),
        Case("garbage checkpoint: train --resume", segment,
             ("train", "--resume", "{run}", "--epochs", "30", "--store", "{store}"), "checkpoint.ckpt",
             with_checkpoint(damage_file(seg, lambda data: data, reopen=True, dead=True))),
        Case("no checkpoint: train --resume", segment,
             ("train", "--resume", "{run}", "--epochs", "30", "--store", "{store}"), "has no checkpoint",
             damage_file(seg, lambda data: data, reopen=True, dead=True)),
    ]


def flag_cases() -> list[Case]:
    def train(*args: str, expected: str, xfail: str | None = None) -> Case:
        return Case(f"train {' '.join(args)}", "flag", ("train", *args, *TRAIN_NEW), expected, new_store=True,
                    xfail=xfail)

    def on_store(command: str, *args: str, expected: str) -> Case:
        base = {"scores": SCORES, "dynamics": DYNAMICS, "curriculum": CURRICULUM}[command]
        return Case(f"{command} {' '.join(args)}", "flag", (*base, *args), expected)

    def curriculum(strategy: str, *args: str, expected: str, xfail: str | None = None) -> Case:
        argv = ("curriculum", "--run", "{run}", "--strategy", strategy, *args, "--store", "{store}")
        return Case(f"curriculum --strategy {strategy} {' '.join(args)}", "flag", argv, expected, xfail=xfail)

    return [
        train("--epochs", "0", expected="--epochs: expected a positive integer, got 0"),
        train("--epochs", "1e3", expected="--epochs: expected a positive integer, got '1e3'"),
        train("--epochs", "-3", expected="--epochs: expected a positive integer, got -3"),
        train("--seed", "-1", expected="seed must be an integer >= 0, got -1"),
        train("--seed", "abc", expected="--seed"),
        train("--label-noise", "1", expected="--label-noise"),
        train("--label-noise", "-0.1", expected="--label-noise"),
        train("--label-noise", "nan", expected="--label-noise"),
        train("--label-noise", "abc", expected="--label-noise"),
        train("--label-noise-seed", "-5", expected="label noise seed must be an integer >= 0, got -5"),
        train("--batch-size", "0", expected="batch"),
        train("--batch-size", "-4", expected="batch"),
        train("--batch-size", "2.5", expected="--batch-size"),
        train("--lr", "inf", expected="learning rate must be a positive finite number, got inf"),
        train("--lr", "nan", expected="learning rate must be a positive finite number, got nan"),
        train("--lr", "0", expected="learning rate must be a positive finite number, got 0"),
        train("--lr", "-1", expected="learning rate must be a positive finite number, got -1"),
        train("--lr", "abc", expected="--lr"),
        train("--devices", "0", expected="devices"),
        train("--devices", "9999", expected="--devices 9999 on the CPU starts 9999 training processes"),
        train("--devices", "two", expected="--devices"),
        train("--accelerator", "bogus", expected="argument --accelerator: invalid choice: 'bogus'"),
        train("--accelerator", "gpu", "--devices", "64", expected="--accelerator gpu --devices 64: this machine has"),
        train("--strategy", "bogus", expected="argument --strategy: invalid choice"),
        train("--task", "bogus", expected="argument --task: invalid choice"),
        train("--model", "bogus", expected="argument --model: invalid choice"),
        train("--grand", "bogus", expected="bad GraNd schedule 'bogus'"),
        train("--grand", "every:0", expected="GraNd"),
        train("--grand", "every:-2", expected="GraNd"),
        train("--grad-norm-every", "-1", expected="--grad-norm-every"),
        train("--grad-norm-every", "abc", expected="--grad-norm-every"),
        train("--task", "pydoc-lm", "--label-noise", "0.2", expected="pydoc-lm"),
        train("--curriculum", "/nonexistent/c.parquet", expected="curriculum file '/nonexistent/c.parquet' does not exist"),
        train("--bogus", expected="unrecognized arguments: --bogus"),
        Case("runs --format bogus", "flag", ("runs", "--format", "bogus", "--store", "{store}"),
             "argument --format: invalid choice"),
        Case("runs --bogus", "flag", ("runs", "--bogus", "--store", "{store}"), "unrecognized arguments: --bogus"),
        Case("scores without --run", "flag", ("scores", "--store", "{store}"),
             "the following arguments are required: --run"),
        on_store("scores", "--top", "-1", expected="--top"),
        on_store("scores", "--top", "abc", expected="--top"),
        on_store("scores", "--sort", "bogus", expected="bogus"),
        on_store("scores", "--epochs", "abc", expected="--epochs expects FIRST:LAST"),
        on_store("scores", "--epochs", "5:2", expected="--epochs '5:2': expected FIRST:LAST with 0 <= FIRST <= LAST"),
        on_store("scores", "--epochs", "-3:2", expected="argument --epochs: expected one argument"),
        on_store("scores", "--epochs=-3:2", expected="--epochs '-3:2': expected FIRST:LAST"),
        on_store("scores", "--by", "bogus", expected="argument --by: invalid choice"),
        on_store("scores", "-o", "{work}/out.txt", expected="unknown extension '.txt'"),
        on_store("scores", "-o", "{work}/missing/out.csv", expected="does not exist"),
        on_store("dynamics", "-o", "{work}/out.xlsx", expected="unknown extension '.xlsx'"),
        Case("curriculum --strategy bogus", "flag",
             ("curriculum", "--run", "{run}", "--strategy", "bogus", "--store", "{store}"), "bogus"),
        curriculum("keep-easy", "--score", "loss", "--keep", "0", expected="keep"),
        curriculum("keep-easy", "--score", "loss", "--keep", "1.5", expected="keep"),
        curriculum("keep-easy", "--keep", "nan", expected="keep"),
        curriculum("keep-easy", "--keep", "inf", expected="keep"),
        curriculum("keep-easy", "--keep", "half", expected="--keep"),
        curriculum("keep-easy", "--keep", "0.5", "--score", "bogus", expected="bogus"),
        curriculum("offset", "--score", "loss", "--keep", "0.5", "--skip", "1", expected="skip"),
        curriculum("stratified", "--score", "loss", "--keep", "0.5", "--bins", "0", expected="bins"),
        curriculum("random", "--keep", "0.5", "--seed", "-1", expected="seed"),
        curriculum("downweight-noise", "--score", "aum", "--fraction", "2", expected="fraction"),
        curriculum("downweight-noise", "--fraction", "0.1", "--mode", "bogus", expected="--mode"),
        curriculum("easy-to-hard", "--score", "loss", "--r0", "0", expected="r0"),
        curriculum("easy-to-hard", "--score", "loss", "--duration", "-1", expected="duration"),
        curriculum("infobatch", "--prune-ratio", "1", expected="prune"),
        curriculum("loss-reweight", "--tau", "0", expected="tau"),
        curriculum("group-weights", "--group-weights", "a=x", expected="group"),
        curriculum("keep-easy", "--score", "loss", "--keep", "0.5", "-o", "{work}/c.txt",
                   expected="a curriculum file ends in .parquet or .csv"),
        Case("ui --port 70000", "flag", ("ui", "--port", "70000", *TRAIN_NEW),
             "expected a port (1-65535) integer, got 70000", new_store=True),
        Case("ui --port 0", "flag", ("ui", "--port", "0", *TRAIN_NEW),
             "expected a port (1-65535) integer, got 0", new_store=True),
        Case("ui --port abc", "flag", ("ui", "--port", "abc", *TRAIN_NEW), "--port", new_store=True),
        Case("ui --host bogus.invalid", "flag", ("ui", "--host", "bogus.invalid", *TRAIN_NEW),
             "--host 'bogus.invalid' is not an address of this machine", new_store=True),
        Case("scores on a missing store", "flag", ("scores", "--run", "x", "--store", "{work}/new-store"),
             "no store at", new_store=True),
    ]


def name_cases() -> list[Case]:
    cases = []
    for label, value in [("path traversal", "../../x"), ("newline", "a\nb"), ("quotes", "a\"b'c"),
                         ("5000 characters", LONG), ("absolute path", "/etc/passwd"), ("empty", "")]:
        shown = "--run '' names no run; expected a run id" if value == "" else "not found"
        cases.append(Case(f"--run {label}", "run name or id", ("scores", "--run", value, "--store", "{store}"),
                          shown))
        if label in ("path traversal", "newline", "5000 characters"):
            cases.append(Case(f"--resume {label}", "run name or id",
                              ("train", "--resume", value, "--store", "{store}"), "not found"))
            cases.append(Case(f"dynamics --run {label}", "run name or id", ("dynamics", "--run", value,
                                                                            "--store", "{store}"), "not found"))
    for label, value in [("newline", "a\nb"), ("5000 characters", LONG), ("escape sequence", "a\x1b[2Jb")]:
        cases.append(Case(f"train --name {label}", "run name or id",
                          ("train", "--name", value, "--epochs", "1", *TRAIN_NEW), "run name", new_store=True))
    cases.append(Case("repair --run path traversal", "run name or id", ("repair", "--run", "../../x",
                                                                         "--store", "{store}"), "not found"))
    return cases


def curriculum_file_cases() -> list[Case]:
    def train_with(name: str, path: str, setup: Setup, expected: str, xfail: str | None = None) -> Case:
        return Case(name, "curriculum file",
                    ("train", "--curriculum", f"{{work}}/{path}", "--epochs", "1", *TRAIN_NEW),
                    expected, setup, new_store=True, xfail=xfail)

    return [
        train_with("curriculum negative weight", "c.csv", csv_curriculum("sample_id,weight\n1,-3\n"),
                   "negative weight(s), first at sample_id 1"),
        train_with("curriculum unknown sample", "c.csv", csv_curriculum("sample_id,weight\n999999,1\n"),
                   "sample_id(s) not in the dataset"),
        train_with("curriculum missing column", "c.csv", csv_curriculum("sample_id\n1\n"), "missing column weight"),
        train_with("curriculum empty file", "c.csv", csv_curriculum(""), "cannot be read as csv"),
        train_with("curriculum weight nan", "c.csv", csv_curriculum("sample_id,weight\n1,nan\n"), "curriculum file"),
        train_with("curriculum weight inf", "c.csv", csv_curriculum("sample_id,weight\n1,inf\n"), "curriculum file"),
        train_with("curriculum weight text", "c.csv", csv_curriculum("sample_id,weight\n1,heavy\n"),
                   "curriculum file"),
        train_with("curriculum duplicate ids", "c.csv", csv_curriculum("sample_id,weight\n1,1\n1,2\n"),
                   "curriculum file"),
        train_with("curriculum start_epoch 1e30", "c.csv",
                   csv_curriculum("sample_id,weight,start_epoch\n1,1,1e30\n"), "curriculum file"),
        train_with("curriculum garbage parquet", "c.parquet", write_work_file("c.parquet", b"PAR1garbagePAR1"),
                   "curriculum file"),
        train_with("curriculum unknown extension", "c.txt", write_work_file("c.txt", "sample_id,weight\n1,1\n"),
                   "curriculum file"),
        train_with("side-car not JSON", "c.csv", csv_curriculum("sample_id,weight\n1,1\n", "{oops"),
                   "curriculum file"),
        train_with("side-car online.params a list", "c.csv",
                   csv_curriculum("sample_id,weight\n1,1\n", {"online": {"rule": "infobatch", "params": [1]}}),
                   "curriculum file"),
        train_with("side-car source_runs a number", "c.csv",
                   csv_curriculum("sample_id,weight\n1,1\n", {"source_runs": 5}), "curriculum file"),
        train_with("side-car unknown online rule", "c.csv",
                   csv_curriculum("sample_id,weight\n1,1\n", {"online": {"rule": "bogus", "params": {}}}),
                   "curriculum file"),
        train_with("side-car a JSON list", "c.csv", csv_curriculum("sample_id,weight\n1,1\n", "[]"),
                   "curriculum file"),
    ]


def url_cases() -> list[UrlCase]:
    unknown = "in this store; showing the newest run instead."
    run_page, compare = "views/run.py", "views/compare.py"
    return [
        UrlCase("?run=../..", run_page, {"run": "../.."}, unknown),
        UrlCase("?run=<img src=x>", run_page, {"run": "<img src=x onerror=alert(1)>"}, unknown),
        UrlCase("?run= 5,000 characters", run_page, {"run": LONG}, unknown),
        UrlCase("?run= with NUL", run_page, {"run": "a\0b"}, unknown),
        UrlCase("?run= markdown image", run_page, {"run": "![x](http://127.0.0.1:9/x.png)"}, unknown),
        UrlCase("?run= repeated", run_page, {"run": [DAMAGED_RUN, OTHER_RUN]}),
        UrlCase("?sample=-1", run_page, {"run": DAMAGED_RUN, "view": "Samples", "sample": "-1"}),
        UrlCase("?sample=abc", run_page, {"run": DAMAGED_RUN, "view": "Samples", "sample": "abc"}),
        UrlCase("?sample=1e99", run_page, {"run": DAMAGED_RUN, "view": "Samples", "sample": "1e99"}),
        UrlCase("?view=bogus", run_page, {"run": DAMAGED_RUN, "view": "<b>bogus</b>"}),
        UrlCase("?score=bogus", run_page, {"run": DAMAGED_RUN, "score": "../../x"}),
        UrlCase("?runs= traversal on Compare", compare, {"runs": ["../..", LONG]}),
        UrlCase("?runs= repeated on Compare", compare, {"runs": [DAMAGED_RUN, DAMAGED_RUN, OTHER_RUN]}),
        UrlCase("unknown parameters on Runs", None, {"bogus": "1", "run": "../.."}),
        UrlCase("damaged run.json on the Runs page", None, {}, f"runs/{DAMAGED_RUN}/run.json is damaged",
                run_json("[]")),
        UrlCase("damaged run.json on the Run page", run_page, {"run": DAMAGED_RUN}, "in this store",
                run_json("[]")),
        UrlCase("truncated summary on the Run page", run_page, {"run": DAMAGED_RUN, "view": "Samples"},
                "summary.parquet", damage_file("summary.parquet", truncate)),
    ]


def cli_cases() -> list[Case]:
    return (store_json_cases() + run_json_cases() + segment_cases() + flag_cases() + name_cases()
            + curriculum_file_cases())


# -- running ------------------------------------------------------------------------


def fill(argv: tuple[str, ...], store: Path, work: Path) -> list[str]:
    values = {"{store}": str(store), "{run}": DAMAGED_RUN, "{other}": OTHER_RUN, "{work}": str(work)}
    filled = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace(key, value)
        filled.append(arg)
    return filled


def prepare(case: Case | UrlCase, workdir: Path) -> Path:
    """The case's store: a damaged copy of the sample runs, or a new path (absent)."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / ("new-store" if getattr(case, "new_store", False) else "store")
    if not getattr(case, "new_store", False):
        shutil.copytree(SAMPLE_RUNS, store)
    case.setup(store)
    return store


def run_case(case: Case, workdir: Path, timeout: float = 300) -> Outcome:
    """Run one CLI case in a fresh ``workdir``."""
    store = prepare(case, workdir)
    before = checksum(store)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINMAP_STORE": str(workdir / "default-store")}
    result = subprocess.run([sys.executable, "-m", "training.cli", *fill(case.argv, store, workdir)],
                            capture_output=True, text=True, cwd=workdir, env=env, timeout=timeout)
    lines = tuple(line for line in result.stderr.splitlines() if line.strip())
    return Outcome(
        returncode=result.returncode,
        stderr_lines=lines,
        traceback="Traceback" in result.stderr,
        store_changed=False if case.new_store else checksum(store) != before,
        created=case.new_store and store.exists() or (workdir / "default-store").exists(),
    )


def batched(case: Case) -> bool:
    """Whether the case runs in the one shared process of ``run_cases``: the ``train`` refusals,
    which import torch (seconds each on their own); a known bug (``xfail``) runs alone."""
    return case.argv[0] == "train" and case.xfail is None


def run_cases(cases: list[Case], workdir: Path) -> dict[str, Outcome]:
    """Run ``cases`` (by name): ``batched`` ones in one process that calls ``trainmap``'s
    ``main`` once per case (stderr captured, an escaping exception printed as a traceback),
    the others each in its own process (``run_case``)."""
    outcomes = {case.name: run_case(case, workdir / f"case-{index}")
                for index, case in enumerate(cases) if not batched(case)}
    group = [(index, case) for index, case in enumerate(cases) if batched(case)]
    if not group:
        return outcomes
    jobs, stores, sums = [], {}, {}
    for index, case in group:
        work = workdir / f"case-{index}"
        stores[case.name] = prepare(case, work)
        sums[case.name] = checksum(stores[case.name])
        jobs.append({"argv": fill(case.argv, stores[case.name], work), "cwd": str(work),
                     "default_store": str(work / "default-store")})
    (workdir / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--batch", str(workdir / "jobs.json")],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, timeout=900,
                   stdout=subprocess.DEVNULL)
    results = json.loads((workdir / "jobs.json.out").read_text())
    for (index, case), result in zip(group, results):
        store = stores[case.name]
        stderr = result["stderr"]
        outcomes[case.name] = Outcome(
            returncode=result["returncode"],
            stderr_lines=tuple(line for line in stderr.splitlines() if line.strip()),
            traceback="Traceback" in stderr,
            store_changed=False if case.new_store else checksum(store) != sums[case.name],
            created=case.new_store and store.exists() or Path(result["default_store"]).exists(),
        )
    return outcomes


def run_batch(jobs_path: Path) -> None:
    """The shared process of ``run_cases``: writes ``<jobs>.out`` (exit status and stderr per job)."""
    import contextlib
    import io
    import traceback

    sys.path.insert(0, str(ROOT))
    from training.cli.main import main

    results = []
    for job in json.loads(jobs_path.read_text()):
        os.chdir(job["cwd"])
        os.environ["TRAINMAP_STORE"] = job["default_store"]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                returncode = main(job["argv"])
            except SystemExit as exit_:
                returncode = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except BaseException:  # what a user would see as a traceback
                traceback.print_exc(file=stderr)
                returncode = 1
        results.append({"returncode": returncode, "stderr": stderr.getvalue(),
                        "default_store": job["default_store"]})
    Path(f"{jobs_path}.out").write_text(json.dumps(results))


def run_url_case(case: UrlCase, workdir: Path) -> Outcome:
    """Open one hostile URL in ``AppTest``: ``stderr_lines`` holds the in-app messages,
    ``traceback`` whether an exception (or traceback text) was shown."""
    from streamlit.testing.v1 import AppTest

    store = prepare(case, workdir)
    before = checksum(store)
    os.environ["TRAINMAP_STORE"] = str(store)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    if case.page:
        at.switch_page(case.page)
    for key, value in case.params.items():
        at.query_params[key] = value
    at.run()
    messages = tuple(str(m.value) for m in (*at.warning, *at.error, *at.info))
    shown = "\n".join(messages + tuple(str(m.value) for m in (*at.markdown, *at.caption)))
    return Outcome(
        returncode=1 if at.exception else 0,
        stderr_lines=messages,
        traceback=bool(at.exception) or "Traceback" in shown,
        store_changed=checksum(store) != before,
        created=False,
    )


def url_problems(case: UrlCase, outcome: Outcome) -> list[str]:
    found = []
    if outcome.traceback:
        found.append("exception shown")
    if case.expected and not any(case.expected in line for line in outcome.stderr_lines):
        found.append(f"no message containing {case.expected!r} in {list(outcome.stderr_lines)!r}"[:300])
    if outcome.store_changed:
        found.append("store changed")
    return found


if __name__ == "__main__" and sys.argv[1:2] == ["--batch"]:
    run_batch(Path(sys.argv[2]))
elif __name__ == "__main__":  # list the corpus
    for item in (*cli_cases(), *url_cases()):
        print(f"{item.category:18} {item.name}")
    print(f"{len(cli_cases())} command-line cases, {len(url_cases())} dashboard URLs")
