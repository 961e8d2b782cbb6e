"""Smoke run of the page benchmark (``benchmarks/bench_pages.py``): one page, one repeat,
idle; the report has the page's row with a positive time and describes the machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]
pytest.importorskip("playwright.sync_api")


def seconds_in_row(text: str, page: str) -> list[float]:
    """The numbers of the table row of ``page`` (cold s, warm s, ratios, CPU seconds)."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {page} |")]
    assert len(rows) == 1, text
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return [float(cell) for cell in cells[1:-1]]


def test_one_page_one_repeat_reports_a_positive_time(tmp_path):
    report = tmp_path / "pages.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_pages.py", "--repeat", "1", "--cases", "curves", "--no-training",
         "-o", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    # exit 1 only says a page missed the 2 s target (a loaded machine); 2 is a usage error
    assert done.returncode in (0, 1), done.stderr[-3000:]
    text = report.read_text()
    assert "Chromium" in text and "CPU cores" in text and "Load average" in text
    baseline = seconds_in_row(text, "baseline: one st.write")
    cold, warm, cold_ratio, warm_ratio, server_cpu, browser_cpu = seconds_in_row(text, "Run · Curves")
    assert cold > 0 and warm > 0 and server_cpu > 0 and browser_cpu > 0
    # the ratios are the page's times over the baseline's, as printed (two decimals, one decimal)
    assert cold_ratio == pytest.approx(cold / baseline[0], abs=0.06 + 0.03 * cold / baseline[0])
    assert warm_ratio == pytest.approx(warm / baseline[1], abs=0.06 + 0.03 * warm / baseline[1])
    assert baseline[2] == baseline[3] == 1.0
    # the last column follows the 2 s target (the times are printed rounded: 2.00 may be either)
    slowest = max(cold, warm)
    verdict = "yes" if slowest < 2.0 else r"\*\*no\*\*" if slowest > 2.0 else r"(yes|\*\*no\*\*)"
    assert re.search(rf"^\| Run · Curves \| .* \| {verdict} \|$", text, re.MULTILINE)
    assert "### idle" in text and "### training" not in text
