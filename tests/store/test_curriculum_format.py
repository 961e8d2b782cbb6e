"""The curriculum file (``store/curriculum/format.py``): round trips, plain files,
validation with one-line messages, atomic writes, the ``<store>/curricula/`` copies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from store.curriculum import (
    FORMAT_VERSION,
    Curriculum,
    CurriculumError,
    build_curriculum,
    curriculum_to_bytes,
    list_curricula,
    load_curriculum,
    save_curriculum,
    save_to_store,
)
from tests.store.curriculum_samples import make_summary


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(tmp_path, suffix):
    c = build_curriculum(make_summary(), "easy-to-hard", "loss", pacing="root", r0=0.3, duration=3,
                         task="mnist1d", source_runs=["run-a", "run-b"], seed=5, name="mine")
    c.table["weight"] = np.linspace(0.1, 2.0, 10) / 3  # non-trivial floats survive exactly
    path = save_curriculum(c, tmp_path / f"cur{suffix}")
    loaded = load_curriculum(path, task="mnist1d", sample_ids=np.arange(10))
    pd.testing.assert_frame_equal(loaded.table, c.table[loaded.table.columns], check_dtype=False)
    assert loaded.table["weight"].tolist() == c.table["weight"].tolist()
    assert loaded.metadata == json.loads(json.dumps(c.metadata))
    assert loaded.metadata["format_version"] == FORMAT_VERSION
    assert loaded.metadata["source_runs"] == ["run-a", "run-b"] and loaded.metadata["seed"] == 5
    for key in ("task", "score", "strategy", "params", "created_at"):
        assert loaded.metadata[key] == c.metadata[key]
    if suffix == ".csv":
        assert (tmp_path / "cur.csv.json").is_file()
        assert list(pd.read_csv(path).columns) == ["sample_id", "weight", "start_epoch", "stage"]
    else:
        assert b"trainmap.curriculum" in pq.read_schema(path).metadata
        assert list(pd.read_parquet(path).columns) == ["sample_id", "weight", "start_epoch", "stage"]


def test_plain_pandas_files_are_accepted(tmp_path):
    pd.DataFrame({"sample_id": [3, 1, 2], "weight": [1.0, 0.5, 0.0]}).to_csv(tmp_path / "plain.csv", index=False)
    c = load_curriculum(tmp_path / "plain.csv", task="mnist1d", sample_ids=np.arange(5))
    assert c.table["sample_id"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(c.weights_for(np.arange(5)), [0, 0.5, 0, 1, 0])  # unlisted = pruned
    pd.DataFrame({"sample_id": [0, 1], "weight": [1, 2]}).to_parquet(tmp_path / "plain.parquet")
    assert load_curriculum(tmp_path / "plain.parquet").metadata["format_version"] == 1
    # FILE.json side-car is read too
    pd.DataFrame({"sample_id": [0], "weight": [1.0]}).to_csv(tmp_path / "side.csv", index=False)
    (tmp_path / "side.json").write_text(json.dumps({"format_version": 1, "task": "digits"}))
    with pytest.raises(CurriculumError, match="built for task 'digits', not 'mnist1d'"):
        load_curriculum(tmp_path / "side.csv", task="mnist1d")


MALFORMED = [
    ("sample_id,w\n0,1\n", "missing column weight"),
    ("sample_id,weight,extra\n0,1,2\n", "unexpected column extra"),
    ("sample_id,weight\n0,abc\n", "non-numeric value 'abc'"),
    ("sample_id,weight\nx,1\n", "column sample_id has a non-numeric value 'x'"),
    ("sample_id,weight\n0.5,1\n", "column sample_id must hold integers"),
    ("sample_id,weight\n0,1\n1,\n", "1 NaN or empty weight\\(s\\), first at sample_id 1"),
    ("sample_id,weight\n0,1\n1,nan\n", "NaN or empty weight"),
    ("sample_id,weight\n0,1\n1,inf\n", "1 infinite weight\\(s\\), first at sample_id 1"),
    ("sample_id,weight\n0,1\n2,-0.5\n", "1 negative weight\\(s\\), first at sample_id 2"),
    ("sample_id,weight\n0,0\n1,0\n", "all weights are zero"),
    ("sample_id,weight\n0,1\n1,1\n0,0.5\n", "duplicate sample_id 0"),
    ("sample_id,weight\n0,1\n99,1\n", "1 sample_id\\(s\\) not in the dataset \\(it has 10 samples\\), e.g. 99"),
    ("sample_id,weight\n", "has no rows"),
    ("sample_id,weight,start_epoch\n0,1,-1\n", "start_epoch must be >= 0"),
]


@pytest.mark.parametrize("text,message", MALFORMED)
def test_malformed_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CurriculumError, match=message) as info:
        load_curriculum(path, task="mnist1d", sample_ids=np.arange(10))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_metadata(tmp_path):
    c = build_curriculum(make_summary(), "keep-easy", "loss", keep=0.5, task="mnist1d")
    for metadata, message in (
        ({**c.metadata, "format_version": FORMAT_VERSION + 1}, "format_version 2 is newer"),
        ({**c.metadata, "format_version": "one"}, "format_version must be a positive integer"),
        ({**c.metadata, "task": "digits"}, "built for task 'digits', not 'mnist1d'"),
        ({**c.metadata, "online": {"rule": "magic"}}, "unknown online rule"),
        ({**c.metadata, "online": {"rule": "infobatch", "params": {"prune_ratio": 1.5}}}, "prune_ratio must be in"),
    ):
        path = save_curriculum(Curriculum(c.table, metadata), tmp_path / "m.parquet")
        with pytest.raises(CurriculumError, match=message):
            load_curriculum(path, task="mnist1d")
    (tmp_path / "broken.csv").write_text("sample_id,weight\n0,1\n")
    (tmp_path / "broken.csv.json").write_text("{not json")
    with pytest.raises(CurriculumError, match="metadata is not valid JSON"):
        load_curriculum(tmp_path / "broken.csv")
    with pytest.raises(CurriculumError, match="does not exist"):
        load_curriculum(tmp_path / "nope.parquet")
    with pytest.raises(CurriculumError, match="unknown extension '.txt'"):
        load_curriculum(tmp_path / "x.txt")


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path, monkeypatch):
    c = build_curriculum(make_summary(), "keep-easy", "loss", keep=0.5, task="mnist1d")
    save_curriculum(c, tmp_path / "c.csv")
    side = (tmp_path / "c.csv.json").read_text()
    assert side == json.dumps(c.metadata, indent=2, sort_keys=True, default=str) + "\n"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        save_curriculum(Curriculum(c.table, {**c.metadata, "task": "other"}), tmp_path / "c.csv")
    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        save_curriculum(c, tmp_path / "new.parquet")
    # the old file and its side-car are whole, nothing half-written is left
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_store_copies_and_download_bytes(tmp_path):
    c = build_curriculum(make_summary(), "easy-to-hard", "loss", task="mnist1d")
    first = save_to_store(c, tmp_path, "cur.parquet")
    second = save_to_store(c, tmp_path, "cur.parquet")
    (tmp_path / "curricula" / "half.parquet.123.tmp").write_bytes(b"")  # a writer's temporary name
    assert [p.name for p in list_curricula(tmp_path)] == ["cur-1.parquet", "cur.parquet"]
    assert first.name == "cur.parquet" and second.name == "cur-1.parquet"
    download = tmp_path / "download.parquet"
    download.write_bytes(curriculum_to_bytes(c, ".parquet"))
    loaded = load_curriculum(download, task="mnist1d")
    assert loaded.table.equals(load_curriculum(first).table)
    assert loaded.metadata == json.loads(json.dumps(c.metadata))
    assert curriculum_to_bytes(c, ".csv").decode().splitlines()[0] == "sample_id,weight,start_epoch,stage"
