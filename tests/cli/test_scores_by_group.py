"""``trainmap scores --by group``: one row per group, against pandas from the run's rows; a
run without groups is refused in one line with exit status 2."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from training.cli.main import build_parser, main
from tests.store.group_runs import GROUP_IDS, sample_groups, write_grouped_run

REPO = Path(__file__).resolve().parents[2]
NAMES = {gid: name for name, gid in GROUP_IDS.items()}


def scores(capsys, store, *args: str) -> tuple[int, pd.DataFrame | None, str]:
    status = main(["scores", *args, "--store", str(store.root)])
    out, err = capsys.readouterr()
    return status, (pd.read_csv(io.StringIO(out)) if out else None), err


def test_by_group_gives_one_row_per_group(store, capsys):
    run = write_grouped_run(store, world_size=2, finish=True)
    status, frame, _ = scores(capsys, store, "--run", run.run_id, "--by", "group")
    assert status == 0
    assert frame["group"].tolist() == ["code", "docs", "math"]
    rows = run.rows
    groups = sample_groups(rows).map(NAMES)
    per_sample = rows.groupby("sample_id").agg(loss=("loss", "mean"), presentations=("loss", "size"),
                                               confidence=("p_true", "mean")).loc[groups.index]
    expected = per_sample.groupby(groups).agg(loss=("loss", "mean"), presentations=("presentations", "sum"),
                                              samples=("loss", "size"), confidence=("confidence", "mean"))
    frame = frame.set_index("group")
    np.testing.assert_allclose(frame["loss"], expected["loss"], rtol=1e-6)
    np.testing.assert_allclose(frame["confidence"], expected["confidence"], rtol=1e-6)
    assert frame["samples"].tolist() == expected["samples"].tolist()
    assert frame["presentations"].tolist() == expected["presentations"].tolist()

    # sorted hardest first by the group's mean (loss: the "math" group has the largest losses)
    status, ranked, _ = scores(capsys, store, "--run", run.run_id, "--by", "group", "--sort", "loss", "--top", "2")
    assert status == 0 and ranked["group"].tolist() == list(expected["loss"].sort_values(ascending=False).index[:2])


def test_per_sample_rows_name_each_samples_group(store, capsys):
    run = write_grouped_run(store)
    status, frame, _ = scores(capsys, store, "--run", run.run_id)
    assert status == 0
    assert list(frame.columns[frame.columns.get_loc("group_id"):][:2]) == ["group_id", "group"]
    named = frame.set_index("sample_id")["group"]
    assert named.drop(index=0).to_dict() == sample_groups(run.rows).map(NAMES).to_dict()
    assert pd.isna(named.loc[0])


def test_a_run_without_groups_is_refused_with_status_2(store, capsys):
    from conftest import write_synthetic_run

    p = np.tile(np.linspace(0.9, 0.1, 5)[:, None], (1, 2))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5)
    # per sample, such a run's output is as before groups existed: no group column
    status, frame, _ = scores(capsys, store, "--run", run_id)
    assert status == 0 and "group_id" not in frame and "group" not in frame
    result = subprocess.run([sys.executable, "-m", "training.cli", "scores", "--run", run_id, "--by", "group",
                             "--store", str(store.root)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"trainmap: error: run '{run_id}' recorded no groups; a batch gives each")


def test_help_names_the_choice():
    text = build_parser()._subparsers._group_actions[0].choices["scores"].format_help()
    assert "--by {sample,group}" in text and "one row per group" in " ".join(text.split())
