"""``trainmap curriculum``: the command writes the file and the store copy; its errors
are one line and change nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from store.curriculum import list_curricula, load_curriculum

REPO = Path(__file__).resolve().parents[2]


def _trainmap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_curriculum_command_writes_file_and_store_copy(store, tmp_path):
    from tests.conftest import write_synthetic_run

    p = np.tile(np.linspace(0.95, 0.05, 10)[:, None], (1, 3))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5, noisy=np.arange(10) >= 8)
    out = tmp_path / "cur.csv"
    result = _trainmap("curriculum", "--run", run_id, "--score", "aum", "--strategy", "downweight-noise",
                       "--fraction", "0.2", "-o", str(out), "--store", str(store.root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "8 of 10 samples kept; of 2 flipped labels 2 pruned" in result.stderr
    c = load_curriculum(out, task="synthetic")
    assert c.table["weight"].tolist() == [1.0] * 8 + [0.0] * 2
    assert c.metadata["source_runs"] == [run_id] and c.metadata["strategy"] == "downweight-noise"
    copies = list_curricula(store.root)
    assert len(copies) == 1 and load_curriculum(copies[0]).table.equals(c.table)


def test_curriculum_command_errors_are_one_line_and_change_nothing(store, tmp_path):
    from tests.conftest import write_synthetic_run

    p = np.tile(np.linspace(0.95, 0.05, 10)[:, None], (1, 3))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5)
    before = _snapshot(store.root)
    for args, message in (
        (["--run", run_id, "--score", "loss", "--strategy", "keep-easy", "--keep", "2"], "keep must be in (0, 1], got 2.0"),
        (["--run", "nope", "--score", "loss", "--strategy", "keep-easy"], "run 'nope' not found"),
        (["--run", run_id, "--score", "loss", "--strategy", "keep-easy", "--bins", "3"], "does not take bins"),
        (["--run", run_id, "--score", "zzz", "--strategy", "keep-easy"], "unknown score 'zzz'"),
        (["--run", run_id, "--score", "loss", "--strategy", "keep-easy", "-o", str(tmp_path / "c.txt")], "ends in .parquet or .csv"),
    ):
        result = _trainmap("curriculum", *args, "--store", str(store.root))
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trainmap: error: ") and message in lines[0], lines
    assert _snapshot(store.root) == before
