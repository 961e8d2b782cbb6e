"""`trainmap evidence --config tiny` runs end to end into a fresh store: every section's table
holds numbers and every plot is a PNG; its runs are ordinary runs of the store; a second
invocation finds every record and trains nothing; an interrupted one resumes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("cleanlab")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"1. Noise finding": "noise.png", "2. Pruning": "prune.png", "3. Noise-down-weighted": "reweight.png",
            "4. Online rules": "online.png", "5. Stability": "stability.png", "6. Cost": "cost.png"}
NUMBER = re.compile(r"^-?\d+(\.\d+)?")


def evidence(store: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", "evidence", "--config", "tiny", "--seeds", "1",
                           "--store", str(store), "--out", str(out), "--no-progress", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def tables(section: str) -> list[list[list[str]]]:
    """The Markdown tables of a section: rows of cells, header and separator dropped."""
    found, current = [], []
    for line in section.splitlines():
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            found.append(current[2:])
            current = []
    if current:
        found.append(current[2:])
    return found


def numbers(rows: list[list[str]]) -> list[float]:
    return [float(NUMBER.match(cell).group(0)) for row in rows for cell in row[1:] if NUMBER.match(cell)]


@pytest.mark.slow
def test_tiny_evidence_report_end_to_end_and_resumable(tmp_path):
    store, out = tmp_path / "store", tmp_path / "evidence"
    first = evidence(store, out)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (out / "README.md").read_text()
    assert "This report holds 14 of the 14 planned experiments" in report
    parts = re.split(r"^## ", report, flags=re.M)
    for title, png in SECTIONS.items():
        section = next(part for part in parts if part.startswith(title))
        section_tables = tables(section)
        assert section_tables, title
        values = numbers([row for rows in section_tables for row in rows])
        assert values and all(v == v for v in values), title
        assert f"![{png}]({png})" in section
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # values within their ranges: AUROCs and accuracies in [0, 1]
    noise_rows = tables(next(p for p in parts if p.startswith("1. Noise")))[0]
    by_score = {row[0]: row for row in noise_rows}
    for score in ("loss", "EL2N", "AUM", "GraNd", "cleanlab label quality"):
        assert 0.5 < float(NUMBER.match(by_score[score][1]).group(0)) <= 1.0, score
    prune_rows = tables(next(p for p in parts if p.startswith("2. Pruning")))[0]
    assert {row[0] for row in prune_rows} >= {"full data (no pruning)", "EL2N early, keep hard", "random"}
    assert all(0.0 < v <= 1.0 for v in numbers(prune_rows))

    # the runs are ordinary runs of the store, named by section, task, model, noise and seed
    records = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    assert len(records) == 14
    run_ids = {r["result"]["run_id"]: r["name"] for r in records if "run_id" in r["result"]}
    listed = subprocess.run([sys.executable, "-m", "training.cli", "runs", "--store", str(store), "--format", "json"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    runs = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert set(run_ids) <= set(runs)
    assert all(runs[rid]["name"] == name and runs[rid]["status"] == "finished" for rid, name in run_ids.items())
    assert "evidence-base-digits-mlp-noise20-seed0" in run_ids.values()
    # a pruned rerun names its parent
    pruned = next(rid for rid, name in run_ids.items() if name.startswith("evidence-prune-") and "random" in name)
    assert runs[pruned]["parent_run_id"]

    # resumable: a second invocation trains nothing, and a lost record is redone alone
    before = sorted(p.name for p in (store / "runs").iterdir())
    second = evidence(store, out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "14 of 14 planned experiments have records" in second.stderr and "0 to run now" in second.stderr
    assert sorted(p.name for p in (store / "runs").iterdir()) == before
    lost = next(p for p in (out / "results").glob("*.json") if json.loads(p.read_text())["name"].endswith("random-keep50"))
    lost.unlink()
    third = evidence(store, out, "--only", "prune")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "13 of 14" in third.stderr and "1 to run now" in third.stderr
    assert len(list((store / "runs").iterdir())) == len(before) + 1
    assert "This report holds 14 of the 14" in (out / "README.md").read_text()


def test_evidence_refuses_bad_input_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    result = evidence(tmp_path / "store", tmp_path / "file")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"trainmap: error: --out '{tmp_path / 'file'}' is a file; expected a folder for the report"]
    assert not (tmp_path / "store").exists()
    bad = subprocess.run([sys.executable, "-m", "training.cli", "evidence", "--only", "nothing"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_record_whose_run_is_not_in_this_store_is_redone_before_its_dependants(tmp_path):
    """Committed records name runs of the machine that made them: on a fresh store, an
    experiment that needs such a run (a curriculum built from it) has it trained again."""
    from training.evidence.plan import CONFIGS, build_plan
    from training.evidence.records import Records
    from training.evidence.runner import Runner

    config = CONFIGS["tiny"]()
    plan = build_plan(config, 1)
    records = Records(tmp_path / "evidence")
    runner = Runner(tmp_path / "store", records, plan, config, progress=False)
    assert runner.has_run({"run_id": "20261204-052120-27b949"}) is False  # not in this store
    assert runner.has_run({"auroc": 0.9}) is True  # cv, plain, analysis: nothing in a store
