"""Bad input to the command line and damaged store files: one line naming what was wrong and
what was expected, a non-zero exit, no traceback, and nothing in the store changed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RUNS = ROOT / "sample_runs"


def checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    if folder.exists():
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def trainmap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def one_line_refusal(result: subprocess.CompletedProcess, *expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for part in expected:
        assert part in lines[0], lines[0]


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, path)
    return path


@pytest.mark.parametrize("version, shown", [
    (-5, "-5"), (1.9, "1.9"), (True, "True"), ("4", "'4'"), (None, "None"), ("1e999", "'1e999'"),
])
def test_a_store_json_with_a_bad_schema_version(store, version, shown):
    (store / "store.json").write_text(json.dumps({"format": "trainmap-store", "schema_version": version}))
    before = checksum(store)
    one_line_refusal(trainmap("runs", "--store", str(store)), f"schema_version {shown}", "expected a whole number")
    assert checksum(store) == before


@pytest.mark.parametrize("content, problem", [
    ("[]", "it holds a JSON list"),
    ('{"status": "finished", "config": "lr=0.1"}', "its 'config' is a str"),
    ('{"status": "done"}', "its 'status' is 'done'"),
    ("{not json", "cannot read"),
])
def test_a_damaged_run_json_names_the_file_and_leaves_the_other_runs_usable(store, content, problem):
    run_id = sorted(p.name for p in (store / "runs").iterdir())[0]
    (store / "runs" / run_id / "run.json").write_text(content)
    before = checksum(store)
    shown = trainmap("scores", "--store", str(store), "--run", run_id)
    one_line_refusal(shown, f"runs/{run_id}/run.json", problem)
    listing = trainmap("runs", "--store", str(store))
    assert listing.returncode == 0 and run_id not in listing.stdout  # skipped, with a warning
    assert len(listing.stdout.strip().splitlines()) > 2
    assert checksum(store) == before


@pytest.mark.parametrize("args, expected", [
    (("ui", "--port", "70000"), "expected a port (1-65535) integer, got 70000"),
    (("ui", "--port", "0"), "expected a port (1-65535) integer, got 0"),
    (("ui", "--host", "bogus.invalid"), "--host 'bogus.invalid' is not an address of this machine"),
    (("scores",), "the following arguments are required: --run"),
    (("runs", "--bogus"), "unrecognized arguments: --bogus"),
    (("train", "--accelerator", "bogus"), "argument --accelerator: invalid choice: 'bogus'"),
    (("train", "--accelerator", "gpu", "--devices", "64"), "--accelerator gpu --devices 64: this machine has"),
    (("train", "--label-noise-seed", "-5"), "label noise seed must be an integer >= 0, got -5"),
    (("train", "--seed", "-1"), "seed must be an integer >= 0, got -1"),
    (("train", "--devices", "9999"), "--devices 9999 on the CPU starts 9999 training processes"),
    (("train", "--lr", "inf"), "learning rate must be a positive finite number, got inf"),
    (("train", "--lr", "nan"), "learning rate must be a positive finite number, got nan"),
    (("train", "--epochs", "1e3"), "argument --epochs: expected a positive integer, got '1e3'"),
    (("train", "--grand", "bogus"), "bad GraNd schedule 'bogus'"),
    (("train", "--task", "pydoc-lm", "--label-noise", "0.2"), "pydoc-lm"),
    (("train", "--curriculum", "/nonexistent/c.parquet"), "curriculum file '/nonexistent/c.parquet' does not exist"),
])
def test_bad_arguments_are_one_line_and_create_nothing(tmp_path, args, expected):
    store = tmp_path / "new-store"
    one_line_refusal(trainmap(*args, "--store", str(store)), expected)
    assert not store.exists()


@pytest.mark.parametrize("content, expected", [
    ("sample_id,weight\n1,-3\n", "negative weight(s), first at sample_id 1"),
    ("sample_id,weight\n999999,1\n", "sample_id(s) not in the dataset"),
    ("sample_id\n1\n", "missing column weight"),
    ("", "cannot be read as csv"),
])
def test_a_bad_curriculum_on_a_new_store_creates_nothing(tmp_path, content, expected):
    curriculum = tmp_path / "c.csv"
    curriculum.write_text(content)
    store = tmp_path / "new-store"
    one_line_refusal(trainmap("train", "--curriculum", str(curriculum), "--epochs", "1", "--store", str(store)),
                     "curriculum file", expected)
    assert not store.exists()
