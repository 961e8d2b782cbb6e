"""The bad-input corpus (``scripts/fault_corpus.py``): every bad command line gives one line
naming what was wrong and what was expected, a non-zero exit, no traceback, an unchanged
store and nothing created; every hostile dashboard URL an in-app message and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import fault_corpus  # noqa: E402

CLI_CASES = fault_corpus.cli_cases()
URL_CASES = fault_corpus.url_cases()


def marked(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name.replace(" ", "_")[:80], marks=marks)


def test_the_corpus_is_large_and_its_names_unique():
    names = [case.name for case in (*CLI_CASES, *URL_CASES)]
    assert len(names) == len(set(names))
    assert len(names) >= 60
    categories = {case.category for case in CLI_CASES}
    assert {"store.json", "run.json", "compacted file", "Parquet segment", "flag", "run name or id",
            "curriculum file"} <= categories


@pytest.fixture(scope="module")
def batch_outcomes(tmp_path_factory):
    """The ``train`` refusals, run in one process (each would import torch on its own)."""
    cases = [case for case in CLI_CASES if fault_corpus.batched(case)]
    return fault_corpus.run_cases(cases, tmp_path_factory.mktemp("corpus-batch"))


@pytest.mark.parametrize("case", [marked(case) for case in CLI_CASES])
def test_a_bad_command_line_is_refused_in_one_line_and_changes_nothing(case, batch_outcomes, tmp_path):
    if fault_corpus.batched(case):
        outcome = batch_outcomes[case.name]
    else:
        outcome = fault_corpus.run_case(case, tmp_path / "work")
    assert outcome.problems(case.expected) == [], outcome.stderr_lines[-3:]


@pytest.mark.parametrize("case", [marked(case) for case in URL_CASES])
def test_a_hostile_url_shows_a_message_and_no_traceback(case, tmp_path):
    outcome = fault_corpus.run_url_case(case, tmp_path / "work")
    assert fault_corpus.url_problems(case, outcome) == []


def test_a_damaged_run_json_leaves_the_other_runs_listed(tmp_path):
    case = next(case for case in CLI_CASES if case.name == "run.json a JSON list")
    store = fault_corpus.prepare(case, tmp_path / "work")
    listing = subprocess.run([sys.executable, "-m", "training.cli", "runs", "--format", "json", "--store", str(store)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert listing.returncode == 0, listing.stderr
    listed = {run["run_id"] for run in json.loads(listing.stdout)}
    shipped = {path.name for path in (fault_corpus.SAMPLE_RUNS / "runs").iterdir()}
    assert listed == shipped - {fault_corpus.DAMAGED_RUN}
    assert f"runs/{fault_corpus.DAMAGED_RUN}/run.json" in listing.stderr  # skipped, with a warning
