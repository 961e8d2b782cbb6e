"""Smoke runs of the recorder's scale benchmark and of its GPU profiling script, on tiny
sizes on the CPU: the reports have the expected rows and physically sane values, and the
profile's sync detector finds a sync that is put there on purpose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(arguments: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_scale_benchmark_quick_run_reports_every_workload_with_sane_values(tmp_path):
    out, report = tmp_path / "scale.md", tmp_path / "scale.json"
    done = run(["benchmarks/bench_recorder_scale.py", "--quick", "--sizes", "3000", "--classes", "10,100",
                "--lm-sequences", "48", "--out", str(out), "--json", str(report)], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {row["workload"]: row for row in json.loads(report.read_text())}
    assert sorted(results) == ["classifier-n3000-c10", "classifier-n3000-c100", "lm-n48-c256"]
    for key, row in results.items():
        runs = row["memory_runs"]
        assert set(runs) == {"plain", "imported", "recorded"}, key
        for variant, measured in runs.items():
            assert measured["error"] is None, (key, variant, measured["error"])
            # torch and Lightning alone take well over 100 MB; a peak is at least the RSS before the fit
            assert 100 < measured["rss_before_fit_mb"] <= measured["train_peak_mb"] < 8000, (key, variant)
        # the plain and imported processes start no child; the recorded one its writer only
        assert runs["plain"]["child_processes"] == runs["imported"]["child_processes"] == 0, key
        assert runs["recorded"]["child_processes"] == 1, key
        assert runs["plain"]["writer_peak_mb"] == 0
        assert 20 < runs["recorded"]["writer_peak_mb"] < 2000, key  # a Python process with pyarrow
        memory = row["memory"]
        assert memory["extra_total_mb"] == pytest.approx(memory["extra_train_mb"] + memory["writer_mb"])
        assert memory["extra_train_mb"] == pytest.approx(
            runs["recorded"]["train_peak_mb"] - runs["plain"]["train_peak_mb"]
        )
        timing = row["timing"]
        assert timing["error"] is None, (key, timing["error"])
        assert timing["ratios"] and all(0.1 < ratio < 10 for ratio in timing["ratios"]), key
        assert timing["steps_per_epoch"] == (-(-3000 // 256) if key.startswith("classifier") else 3)
    text = out.read_text()
    for name in ("classifier N 3,000, C 10 |", "classifier N 3,000, C 100 |", "causal LM, 48 sequences x T 32, V 256 |"):
        assert text.count(name) == 2, name  # one memory row, one timing row
    assert f"torch {__import__('torch').__version__}" in text and "CPU cores" in text  # the machine is described


def test_gpu_profile_script_on_cpu_finds_no_per_step_sync_and_catches_an_injected_one(tmp_path):
    arguments = ["scripts/gpu_profile_recorder.py", "--device", "cpu", "--model", "mlp", "--classes", "100",
                 "--steps", "24", "--batch-size", "32", "--chunk-rows", "256", "--epoch-steps", "4", "--epochs", "12"]
    done = run([*arguments, "--json", str(tmp_path / "clean.json")], timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    clean = json.loads((tmp_path / "clean.json").read_text())
    assert clean["profile"]["unexpected_per_step_syncs"] == {}
    assert clean["profile"]["hook_ranges"] >= 24  # at least one traced hook per step
    assert clean["overhead"]["ratios"] >= 1

    injected = run([*arguments, "--inject-sync", "--json", str(tmp_path / "injected.json")], timeout=600)
    assert injected.returncode == 1, injected.stdout[-2000:]
    found = json.loads((tmp_path / "injected.json").read_text())["profile"]
    # the injected float(loss) syncs at every step; the first batch and the chunk hand-overs
    # (every 8 steps of 32 rows with chunk_rows 256) are reported apart
    assert found["steps_syncing"] == list(range(24))
    assert len(found["first_batch_syncs"]) == 1
    assert len(found["chunk_step_syncs"]) <= 5
    assert len(found["unexpected_per_step_syncs"]) + len(found["chunk_step_syncs"]) == 23
    assert all(counts.get("aten::_local_scalar_dense", 0) >= 1
               for counts in found["unexpected_per_step_syncs"].values())


def test_big_store_benchmark_on_a_tiny_run_measures_every_step(tmp_path):
    out, report = tmp_path / "big.md", tmp_path / "big.json"
    done = run(["benchmarks/bench_big_store.py", "--sizes", "3000x4", "--repeat", "1", "--work", str(tmp_path / "work"),
                "-o", str(out), "--json", str(report)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(report.read_text())["results"]
    assert (result["samples"], result["epochs"], result["rows"]) == (3000, 4, 12_000)
    ingest = result["ingest"]
    assert ingest["segments"] == 4  # one chunk per epoch (3,000 rows < 65,536)
    assert ingest["writer_cpu_seconds"] > 0 and ingest["baseline"]["rows"] == 12_000
    assert result["run"] == {"status": "finished", "compacted": True}
    assert 50 < result["compaction"]["peak_rss_mb"] < 4096 and result["compaction"]["seconds"] > 0
    assert result["scores"]["rows"] == result["scores"]["summary_rows"] == 3000
    dashboard = result["dashboard"]
    assert 50 < dashboard["peak_rss_mb"] < 2048
    assert set(dashboard["views"]) >= {"Runs", "Run · Samples + sample", "Curriculum (default preview)"}
    assert all(view["cold"] > 0 for view in dashboard["views"].values())
    assert set(result["labels"]) == {"predicted_live", "predicted_materialised", "suggested_live", "suggested_materialised"}
    text = out.read_text()
    assert "| 3,000 × 4 | 12,000 | 4 |" in text and "CPU cores" in text  # ingestion row; the machine described
