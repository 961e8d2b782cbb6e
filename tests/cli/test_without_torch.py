"""On an install without the ``train`` extra (torch and Lightning cannot be imported), the
commands that read a store work, ``trainmap --help`` works, and ``trainmap train`` says
which extra to install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "lightning", "torchvision", "mnist1d", "sklearn", "mlxtend")


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory):
    """Environment whose interpreter cannot import the training extra's packages."""
    site = tmp_path_factory.mktemp("no-torch")
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys

        class BlockTrainingExtra:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, BlockTrainingExtra())
    """))
    return {"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(site)}


def trainmap(env, *args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_the_blocker_really_blocks_torch(without_torch):
    result = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=without_torch)
    assert result.returncode == 1 and "No module named 'torch'" in result.stderr


def test_help_and_the_store_commands_need_no_torch(without_torch, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", store)
    run_id = "20261126-132606-daddb8"  # the 20 % label-noise seed-0 sample run
    help_text = trainmap(without_torch, "--help")
    assert help_text.returncode == 0 and "curriculum" in help_text.stdout
    assert "mnist1d" in trainmap(without_torch, "train", "--help").stdout

    runs = trainmap(without_torch, "runs", "--format", "csv", "--store", str(store))
    assert runs.returncode == 0, runs.stderr
    assert run_id in runs.stdout and len(runs.stdout.strip().splitlines()) == 1 + 5

    scores = trainmap(without_torch, "scores", "--run", run_id, "--sort", "loss", "--top", "800",
                      "-o", str(tmp_path / "top.csv"), "--store", str(store))
    assert scores.returncode == 0, scores.stderr
    top = pd.read_csv(tmp_path / "top.csv")
    assert len(top) == 800 and top["loss"].is_monotonic_decreasing
    assert top["label_noisy"].sum() > 600  # the hardest by loss are mostly the flipped labels

    dynamics = trainmap(without_torch, "dynamics", "--run", run_id, "-o", str(tmp_path / "d.parquet"),
                        "--store", str(store))
    assert dynamics.returncode == 0, dynamics.stderr
    assert len(pd.read_parquet(tmp_path / "d.parquet")) == 20 * 4000

    curriculum = trainmap(without_torch, "curriculum", "--run", run_id, "--score", "loss", "--strategy",
                          "downweight-noise", "--fraction", "0.2", "-o", str(tmp_path / "c.parquet"),
                          "--store", str(store))
    assert curriculum.returncode == 0, curriculum.stderr
    assert (pd.read_parquet(tmp_path / "c.parquet")["weight"] == 0).sum() == 800


def test_train_names_the_extra_to_install_and_creates_nothing(without_torch, tmp_path):
    store = tmp_path / "store"
    result = trainmap(without_torch, "train", "--epochs", "1", "--store", str(store))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "trainmap: error: `trainmap train` needs torch and Lightning, which this install lacks "
        "(No module named 'lightning'); install the training extra: pip install 'trainmap[train]'"
    ]
    assert not store.exists()
    bad = trainmap(without_torch, "train", "--task", "imagenet", "--store", str(store))
    assert bad.returncode == 2 and "invalid choice: 'imagenet'" in bad.stderr


def test_the_dashboard_refuses_to_launch_a_rerun_and_names_the_extra(without_torch, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from dashboard import launcher
        try:
            launcher.start_executor({str(tmp_path)!r})  # what Launch rerun starts for a queued job
        except launcher.LaunchError as error:
            print(error)
        assert "torch" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=without_torch,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("a rerun trains a model, which needs torch and lightning: install the "
                                     "training extra (pip install 'trainmap[train]') where the dashboard runs")
    assert list(tmp_path.iterdir()) == []  # refused before it created the jobs' log folder
