"""The group-weights curriculum: a weight per group turned into per-sample weights through
each sample's group in the source run; the table in every form, kept in the file's
metadata and read back; ``trainmap curriculum --strategy group-weights``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import sample_summary
from store.curriculum import (
    STRATEGIES,
    CurriculumError,
    build_curriculum,
    load_curriculum,
    parse_group_weights,
    save_curriculum,
    validate_metadata,
)
from store.groups import with_group_names
from tests.store.curriculum_samples import make_summary
from tests.store.group_runs import GROUP_IDS, sample_groups, write_grouped_run

NAMES = {gid: name for name, gid in GROUP_IDS.items()}


def grouped_summary() -> pd.DataFrame:
    summary = make_summary()
    summary["group"] = ["docs", "code", "math", "docs", None, "code", "docs", "math", "code", "docs"]
    return summary


def test_the_table_is_read_in_every_form(tmp_path):
    expected = {"docs": 2.0, "code": 0.5}
    assert parse_group_weights("docs=2, code = 0.5") == expected
    assert parse_group_weights({"docs": 2, "code": 0.5}) == expected
    (tmp_path / "w.json").write_text(json.dumps({"docs": 2, "code": 0.5}))
    assert parse_group_weights(str(tmp_path / "w.json")) == expected
    (tmp_path / "w.csv").write_text("group,weight\ndocs,2\ncode,0.5\n")
    assert parse_group_weights(tmp_path / "w.csv") == expected
    (tmp_path / "none.csv").write_text("group,weight\nNone,2\nNA,1\n")  # names are never read as missing
    assert parse_group_weights(tmp_path / "none.csv") == {"None": 2.0, "NA": 1.0}


@pytest.mark.parametrize("value, message", [
    ("docs=2,code", "cannot read 'code'; expected NAME=WEIGHT"),
    ("docs=-1", "the weight of group 'docs' must be a finite number >= 0, got '-1'"),
    ("docs=nan", "the weight of group 'docs' must be a finite number >= 0"),
    ("docs=x", "the weight of group 'docs' must be a finite number >= 0, got 'x'"),
    ("docs=1,docs=2", "group 'docs' is given twice"),
    ("missing.csv", "no file 'missing.csv'"),
    ({"docs": True}, "the weight of group 'docs' must be a finite number >= 0, got True"),
    ({3: 1.0}, "group names must be non-empty strings, got 3"),
    (2.0, "expected NAME=WEIGHT"),
])
def test_a_bad_table_is_refused_in_one_line(value, message):
    with pytest.raises(CurriculumError, match=message.replace("(", "\\(").replace(")", "\\)")) as error:
        parse_group_weights(value)
    assert "\n" not in str(error.value)


def test_a_csv_table_needs_its_two_columns(tmp_path):
    (tmp_path / "w.csv").write_text("name,w\ndocs,2\n")
    with pytest.raises(CurriculumError, match="must have the columns group,weight; got name,w"):
        parse_group_weights(tmp_path / "w.csv")


def test_each_sample_weighs_its_groups_weight():
    summary = grouped_summary()
    c = build_curriculum(summary, "group-weights", group_weights="docs=2,code=0.5", task="t")
    expected = summary["group"].map({"docs": 2.0, "code": 0.5}).fillna(1.0)  # math and no group: default 1
    assert c.table["weight"].tolist() == expected.tolist()
    assert c.metadata["params"] == {"group_weights": {"docs": 2.0, "code": 0.5}, "default_weight": 1.0}
    assert c.group_weights == {"docs": 2.0, "code": 0.5}
    assert c.label == "group-weights default_weight=1.0 group_weights={docs: 2, code: 0.5}"
    other = build_curriculum(summary, "group-weights", group_weights={"math": 0}, default_weight=0.25)
    assert other.table["weight"].tolist() == summary["group"].map({"math": 0.0}).fillna(0.25).tolist()
    assert STRATEGIES["group-weights"].kind == "reweight" and not STRATEGIES["group-weights"].needs_score


def test_unknown_groups_and_runs_without_groups_are_refused():
    with pytest.raises(CurriculumError, match="'dcos' is no group of the source runs; their groups: code, docs, math"):
        build_curriculum(grouped_summary(), "group-weights", group_weights="dcos=2,code=1")
    with pytest.raises(CurriculumError, match="group_weights names 'docs', but the source runs recorded no groups"):
        build_curriculum(make_summary(), "group-weights", group_weights="docs=2")
    with pytest.raises(CurriculumError, match="keeps no samples"):
        build_curriculum(grouped_summary(), "group-weights", group_weights="docs=0,code=0,math=0", default_weight=0)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_table_is_kept_in_the_file_and_read_back(tmp_path, suffix):
    c = build_curriculum(grouped_summary(), "group-weights", group_weights="docs=2,code=0.5", task="t")
    path = save_curriculum(c, tmp_path / f"cur{suffix}")
    loaded = load_curriculum(path, task="t")
    assert loaded.group_weights == {"docs": 2.0, "code": 0.5}
    assert loaded.table["weight"].tolist() == c.table["weight"].tolist()
    if suffix == ".csv":
        assert json.loads((tmp_path / "cur.csv.json").read_text())["params"]["group_weights"] == {
            "docs": 2.0, "code": 0.5}
    with pytest.raises(CurriculumError, match="group_weights: the weight of group 'docs' must be a finite number"):
        validate_metadata({"params": {"group_weights": {"docs": -2}}}, Path("f.parquet"))


def test_from_a_recorded_run_the_weights_follow_each_samples_latest_group(store):
    run = write_grouped_run(store, finish=True)
    summary = with_group_names(store, run.run_id, sample_summary(store, run.run_id))
    c = build_curriculum(summary, "group-weights", group_weights="docs=3,math=0")
    group = c.table["sample_id"].map(sample_groups(run.rows).map(NAMES))
    np.testing.assert_array_equal(c.table["weight"], group.map({"docs": 3.0, "math": 0.0}).fillna(1.0))
    assert c.table.loc[c.table["sample_id"] == 0, "weight"].item() == 1.0  # no group: the default


def test_the_command_builds_and_reports_the_weights(store, tmp_path, capsys):
    from training.cli.main import main

    run = write_grouped_run(store)
    out = tmp_path / "cur.csv"
    status = main(["curriculum", "--run", run.run_id, "--strategy", "group-weights", "--group-weights",
                   "docs=2,code=0.5", "-o", str(out), "--store", str(store.root)])
    _, err = capsys.readouterr()
    assert status == 0
    counts = sample_groups(run.rows).map(NAMES).value_counts()
    assert (f"weight per group: code 0.5 ({counts['code']} samples), docs 2 ({counts['docs']} samples), "
            f"math 1 ({counts['math']} samples)") in err
    assert load_curriculum(out, task="grouped-task").group_weights == {"docs": 2.0, "code": 0.5}
    assert main(["curriculum", "--run", run.run_id, "--strategy", "group-weights",
                 "--store", str(store.root)]) == 1
    assert "strategy group-weights needs --group-weights NAME=WEIGHT" in capsys.readouterr().err
    assert main(["curriculum", "--run", run.run_id, "--strategy", "group-weights", "--group-weights", "web=2",
                 "--store", str(store.root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'web' is no group of the source runs; their groups: code, docs, math" in err


def test_a_rerun_trains_each_sample_with_its_groups_weight(store, tmp_path):
    torch = pytest.importorskip("torch")
    from training.curriculum_run import attach_curriculum
    from training.module import SequenceDataset

    run = write_grouped_run(store, finish=True)
    summary = with_group_names(store, run.run_id, sample_summary(store, run.run_id))
    path = save_curriculum(build_curriculum(summary, "group-weights", group_weights="docs=2,math=0",
                                            task="grouped-task", source_runs=[run.run_id]), tmp_path / "c.parquet")
    tokens = np.zeros((15, 4), dtype=np.int64)
    dataset = SequenceDataset(tokens, tokens, [str(g) for g in summary["group"]])

    class Config:
        curriculum, seed, epochs, keep_steps = str(path), 0, 2, False

    attachment = attach_curriculum(Config(), dataset, task_name="grouped-task", batch_size=4)
    expected = summary["group"].map({"docs": 2.0, "math": 0.0}).fillna(1.0).to_numpy(np.float32)
    assert torch.equal(dataset.weights, torch.as_tensor(expected))
    assert attachment.group_weights == {"docs": 2.0, "math": 0.0}
    assert "group_weights={docs: 2, math: 0}" in attachment.curriculum_label
    assert attachment.parent_run_id == run.run_id
    drawn = sorted(attachment.sampler)  # math is weight 0: never drawn
    assert drawn == [i for i in range(15) if expected[i] > 0]
