"""The Curriculum page started from a saved curriculum: the data map's selection saved into
the store's curricula/ opens (``?start=saved&curriculum=FILE``) previewed on its source run,
and its rerun queues that very file; unreadable files and foreign sources are named."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from app_pages import app_test, metrics, texts
from conftest import SAMPLE_RUNS, sample_run_ids
from store import Store, jobs
from store.curriculum.format import save_to_store
from store.views.selection import selection_curriculum


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(SAMPLE_RUNS, tmp_path / "store")
    return Store(tmp_path / "store")


def saved_selection(store: Store, action: str = "drop", weight: float = 0.25, name: str = "corner"):
    parent = sample_run_ids()["cnn-noise20-s1"]
    curriculum = selection_curriculum(np.arange(4000), np.arange(100, 400), action, weight,
                                      source_run=parent, task="mnist1d", name=name)
    return parent, save_to_store(curriculum, store.root, f"{name}.parquet")


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_saved_selection_is_previewed_on_its_source_and_its_rerun_queues_that_file(store):
    parent, path = saved_selection(store)
    at = run(app_test(store, "views/curriculum.py", start="saved", curriculum=path.name))
    assert at.radio(key="start").value == "saved"
    assert at.selectbox(key="curriculum").value == "corner.parquet"
    shown = metrics(at)
    assert (shown["Samples"], shown["Kept"], shown["Pruned"]) == ("4,000", "3,700", "300")
    assert "Strategy **map-selection**" in texts(at) and f"cnn-noise20-s1 ({parent})" in texts(at)
    assert at.text_input(key="cur_name").value == "cnn-noise20-s1-map-selection"
    # Launch queues the saved file itself (no copy in curricula/) as a rerun of its source run.
    # The test holds the executor lock: the job is queued, no executor starts training it.
    before = sorted(p.name for p in (store.root / "curricula").iterdir())
    assert jobs.acquire_executor_lock(store.root)
    try:
        at.number_input(key="cur_epochs").set_value(1)
        run(at)
        at.button(key="cur_launch").click()
        run(at)
        assert not at.session_state["cur_launch_error"]
        queued = jobs.list_jobs(store.root).jobs
        assert [(job.state, job.parent_run_id, job.run_name) for job in queued] == [
            ("queued", parent, "cnn-noise20-s1-map-selection")]
        assert queued[0].curriculum == "curricula/corner.parquet"
        assert sorted(p.name for p in (store.root / "curricula").iterdir()) == before
        assert f"already queued as job {queued[0].job_id}" in texts(at)
        jobs.cancel(store.root, queued[0].job_id)
    finally:
        jobs.release_executor_lock(store.root)


def test_soft_selection_shows_weights_and_the_start_can_go_back_to_scores(store):
    _, path = saved_selection(store, "down-weight", 0.25, "soft-corner")
    at = run(app_test(store, "views/curriculum.py", start="saved", curriculum=path.name))
    assert metrics(at)["Pruned"] == "0"
    assert metrics(at)["Effective sample count"] == f"{(3700 + 75) ** 2 / (3700 + 300 * 0.0625):,.0f}"
    at.radio(key="start").set_value("scores")
    run(at)
    assert at.multiselect(key="cur_sources").value == [sample_run_ids()["cnn-noise20-s1"]]


def test_no_saved_file_a_damaged_file_and_a_foreign_source_are_said(store):
    shutil.rmtree(store.root / "curricula")  # the shipped rerun's curriculum
    at = run(app_test(store, "views/curriculum.py", start="saved"))
    assert "No saved curricula in this store yet" in texts(at)
    (store.root / "curricula").mkdir(exist_ok=True)
    (store.root / "curricula" / "broken.parquet").write_bytes(b"not parquet")
    at = run(app_test(store, "views/curriculum.py", start="saved", curriculum="broken.parquet"))
    assert "Cannot read curriculum broken.parquet" in texts(at)
    curriculum = selection_curriculum(np.arange(10), [1, 2], "drop", source_run="20990101-000000-abcdef",
                                      task="mnist1d")
    save_to_store(curriculum, store.root, "foreign.parquet")
    at = run(app_test(store, "views/curriculum.py", start="saved", curriculum="foreign.parquet"))
    assert "which this store does not hold as finished runs" in texts(at)
    assert not at.get("button") or all(b.key != "cur_launch" for b in at.button)


def test_a_named_selection_is_saved_under_its_name(store):
    from dashboard import data, data_map

    parent = sample_run_ids()["cnn-noise20-s1"]
    version = data.run_version(str(store.root), parent)
    first = data_map.save_selection_curriculum(str(store.root), parent, version, "mnist1d", (1, 2, 3), "drop", 0.25,
                                               "hard corner/../x")
    second = data_map.save_selection_curriculum(str(store.root), parent, version, "mnist1d", (4,), "drop", 0.25,
                                                "hard corner/../x")
    unnamed = data_map.save_selection_curriculum(str(store.root), parent, version, "mnist1d", (5,), "drop", 0.25, None)
    assert (first.name, second.name) == ("hard-corner-..-x.parquet", "hard-corner-..-x-1.parquet")
    assert first.parent == second.parent == unnamed.parent == store.root / "curricula"
    assert unnamed.name.endswith("-map-selection-none.parquet")
    assert data_curriculum_names(store)[:3] == sorted([first.name, second.name, unnamed.name],
                                                      key=lambda n: (store.root / "curricula" / n).stat().st_mtime_ns,
                                                      reverse=True)


def data_curriculum_names(store) -> list[str]:
    from dashboard import data_curriculum

    return data_curriculum.saved_curricula(str(store.root))


def test_compare_tells_apart_two_runs_of_one_name(store):
    """Two runs named alike (two generated runs, two seeds given one name) are both
    comparable: the Run A / Run B pickers name them with their ids."""
    import json

    ids = sample_run_ids()
    a, b = ids["cnn-noise20-s0"], ids["cnn-noise20-s1"]
    path = store.root / "runs" / b / "run.json"
    info = json.loads(path.read_text())
    info["name"] = "cnn-noise20-s0"
    path.write_text(json.dumps(info))
    at = app_test(store, "views/compare.py")
    at.query_params["runs"] = [a, b]
    run(at)
    assert "Pick two different runs as A and B." not in texts(at)
    assert (at.selectbox(key="compare_a").value, at.selectbox(key="compare_b").value) == (a, b)
    assert at.selectbox(key="compare_b").format_func(b) == f"cnn-noise20-s0 ({b})"
