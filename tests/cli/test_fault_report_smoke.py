"""``scripts/fault_report.py --smoke``: three corpus cases and one kill scenario through the
report's own code path, written as the report's Markdown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fault_report_smoke_run_writes_its_tables(tmp_path):
    output = tmp_path / "faults.md"
    result = subprocess.run([sys.executable, "scripts/fault_report.py", "--smoke", "-o", str(output)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = output.read_text()
    assert "3 command lines and 0 dashboard URLs" in text
    assert "| **all** | 3 | 3 | 3 | 0 | 0 | 0 | 0 |" in text  # all three refused cleanly
    kill = next(line for line in text.splitlines() if line.startswith("| SIGKILL to the process group mid-epoch"))
    cells = [cell.strip() for cell in kill.strip("|").split("|")]
    assert cells[1] == "-9" and cells[3] == "running" and cells[4] == "interrupted"  # killed: nothing wrote
    assert cells[8] == "interrupted (compacted)" and cells[10] in ("yes", "no")  # partial epoch: "no"
    assert "kill 1/1: SIGKILL to the process group mid-epoch: readers show interrupted" in result.stderr
