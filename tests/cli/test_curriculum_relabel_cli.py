"""``trainmap curriculum --unscored`` and ``--strategy relabel --relabel-epochs``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import sample_run_ids
from store.curriculum import load_curriculum
from store.views.relabel import suggested_labels

REPO = Path(__file__).resolve().parents[2]


def trainmap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_unscored_samples_need_a_flag_and_relabel_writes_labels(sample_store, tmp_path):
    ids = sample_run_ids()
    refused = trainmap("curriculum", "--run", ids["cnn-noise20-s0-clean"], "--score", "loss", "--strategy",
                       "keep-easy", "--store", str(sample_store.root))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"trainmap: error: 800 of 4000 samples were never presented in run {ids['cnn-noise20-s0-clean']}")
    out = tmp_path / "relabel.parquet"
    parent = ids["cnn-noise20-s0"]
    made = trainmap("curriculum", "--run", parent, "--score", "loss", "--strategy", "relabel", "--fraction", "0.2",
                    "--relabel-epochs", "5:9", "-o", str(out), "--store", str(sample_store.root))
    assert made.returncode == 0, made.stderr
    curriculum = load_curriculum(out, num_classes=10)
    assert curriculum.metadata["relabel_epochs"] == [[5, 9]]
    table = curriculum.table.set_index("sample_id")
    suggestions = suggested_labels(sample_store, parent, (5, 9)).set_index("sample_id")
    changed = table.index[table["label"] != suggestions.loc[table.index, "label"]]
    # every replaced label is the suggestion over epochs 5..9
    assert (table.loc[changed, "label"] == suggestions.loc[changed, "suggested_label"]).all()
    fixed = int((table.loc[changed, "label"] == suggestions.loc[changed, "original_label"]).sum())
    assert f"{len(changed)} labels replaced ({fixed} back to the clean label)" in made.stderr
    wrong_strategy = trainmap("curriculum", "--run", parent, "--score", "loss", "--strategy", "keep-easy",
                              "--relabel-epochs", "5:9", "--store", str(sample_store.root))
    assert "--relabel-epochs is for --strategy relabel, not keep-easy" in wrong_strategy.stderr
    assert pd.Series(table["weight"]).eq(1).all()
