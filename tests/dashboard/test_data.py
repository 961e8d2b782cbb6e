"""dashboard.data: the one module that talks to store/, against a tmp copy of sample_runs/.

Its cached functions are called outside a Streamlit script here (``st.cache_data`` then
caches in memory); each answer is compared with what the store itself says.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import store as store_api
from dashboard import data
from store import Store

REPO = Path(__file__).resolve().parents[2]
SAMPLE_RUNS = REPO / "sample_runs"


@pytest.fixture
def root(tmp_path) -> str:
    target = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, target)
    return str(target)


def run_id_of(root: str, name: str) -> str:
    store = Store(root)
    return next(r for r in store.run_ids() if store.run_info(r)["name"] == name)


def test_store_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINMAP_STORE", str(tmp_path / "somewhere"))
    assert data.store_root() == str((tmp_path / "somewhere").resolve())


def test_check_store_refuses_a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("")
    with pytest.raises(data.StoreError, match="is a file"):
        data.check_store(str(path))
    assert data.check_store(str(tmp_path)) == str(tmp_path)


def test_versions_change_when_a_run_reports_progress(root):
    run_id = run_id_of(root, "cnn-noise20-s0")
    listing = data.listing_version(root)
    assert [entry[0] for entry in listing] == sorted(Store(root).run_ids())
    version = data.run_version(root, run_id)
    assert version == store_api.run_version(Store(root), run_id)
    Store(root).update_run(run_id, epochs_done=21)
    assert data.listing_version(root) != listing
    assert data.run_version(root, run_id) != version
    assert data.run_info(root, run_id, data.run_version(root, run_id))["epochs_done"] == 21
    assert data.listing_version(str(Path(root) / "no-such-store")) == ()


def test_cached_queries_answer_like_the_store(root):
    store = Store(root)
    run_id = run_id_of(root, "cnn-noise20-s0")
    version = data.run_version(root, run_id)
    assert sorted(data.runs_frame(root, data.listing_version(root))["run_id"]) == store.run_ids()
    overview = data.overview(root, run_id, version)
    assert overview == store_api.summary_overview(store, run_id)
    assert data.recorded_scores(root, run_id, version) == overview["recorded_scores"]
    assert data.sample_id_range(root, run_id, version) == store_api.sample_id_range(store, run_id)
    assert data.hardest_samples(root, run_id, version, "aum", 5)["sample_id"].tolist() == \
        store_api.hardest_samples(store, run_id, "aum", 5)["sample_id"].tolist()
    assert data.sample_record(root, run_id, version, 7)["label"] == store_api.sample_record(store, run_id, 7)["label"]
    assert len(data.trajectory(root, run_id, version, 7)) == len(data.epoch_metrics(root, run_id, version)) == 20
    other = run_id_of(root, "cnn-clean-s0")
    stacked = data.stacked_epoch_metrics(root, {other: data.run_version(root, other), run_id: version})
    assert stacked["run_id"].tolist() == [other] * 20 + [run_id] * 20
    assert stacked["val_accuracy"].tolist()[20:] == data.epoch_metrics(root, run_id, version)["val_accuracy"].tolist()
    assert data.data_map(root, run_id, version, "aum").total == 4000
    assert data.step_curves(root, run_id, version).total == 1260
    assert data.region_counts(root, run_id, version, 0.2, 0.5)["samples"].sum() == 4000
    assert data.score_histograms(root, run_id, version, ("loss",))["loss"].bins["samples"].sum() == 4000
    assert data.forgetting_counts(root, run_id, version)["samples"].sum() == 4000
    agreement = data.score_agreement(root, run_id, version, run_id, version, "el2n", 0.1)
    assert agreement.spearman == pytest.approx(1.0) and agreement.top_k == 400


def test_presentations_and_dataset_inputs(root):
    run_id = run_id_of(root, "cnn-clean-s0")
    assert data.presentations_recorded(root, run_id)
    empty = Store(root).create_run(name="empty", task="mnist1d", model="cnn", seed=0, max_epochs=1)
    assert not data.presentations_recorded(root, empty)
    assert data.dataset_path(root, "mnist1d") == Path(root) / "datasets" / "mnist1d.parquet"
    mtime = data.dataset_version(root, "mnist1d")
    assert mtime == data.dataset_path(root, "mnist1d").stat().st_mtime_ns
    assert data.sample_input(root, "mnist1d", mtime, 7).shape == (40,)
    assert data.dataset_version(root, "no-such-task") is None


def test_a_rerun_finds_its_curriculum_in_a_moved_store(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded path is relative to where the sample runs were made
    rerun = run_id_of(root, "cnn-noise20-s0-clean")
    info = data.run_info(root, rerun, data.run_version(root, rerun))
    recorded = info["config"]["curriculum"]
    # the recorded path does not lead anywhere from here: the copy in this store's
    # curricula/ stands in for it
    assert data.curriculum_file(root, recorded) == Path(root) / "curricula" / Path(recorded).name
    curriculum = data.recorded_curriculum(root, info)
    assert isinstance(curriculum, data.Curriculum) and len(curriculum.table) == 4000
    assert data.curriculum_file(root, None) is None and data.curriculum_file(root, "/nowhere/c.parquet") is None
    assert data.recorded_curriculum(root, {"config": {}}) is None
    (Path(root) / "curricula" / Path(recorded).name).write_text("not a curriculum")
    assert data.recorded_curriculum(root, info) is None  # unreadable: no outcome table, no traceback


def test_curriculum_preview_and_outcome_tables(root):
    parent_id = run_id_of(root, "cnn-noise20-s0")
    rerun_id = run_id_of(root, "cnn-noise20-s0-clean")
    versions = {r: data.run_version(root, r) for r in (parent_id, rerun_id)}
    summary = data.sample_summary(root, (parent_id,), (versions[parent_id],))
    curriculum = data.build_curriculum(summary, "keep-easy", "loss", keep=0.75)
    weight = data.curriculum_weights(summary, curriculum)
    assert weight.shape == (4000,) and int((weight == 0).sum()) == 1000
    preview = data.curriculum_preview(summary, weight)
    assert preview.kept_per_class["kept"].sum() == 3000
    path = data.save_curriculum(curriculum, root)
    assert path.parent == Path(root) / "curricula" and path.is_file()
    rerun = data.sample_summary(root, (rerun_id,), (versions[rerun_id],))
    fate = data.sample_fate_table(summary, rerun, curriculum)
    assert fate.set_index(["group", "label_noisy"])["samples"].sum() == 4000
    assert set(fate["group"]) == {"kept", "pruned"}
    accuracy = data.class_accuracy(root, rerun_id, versions[rerun_id])
    assert set(accuracy.columns) >= {"epoch", "label", "accuracy"}


def test_output_kind_defaults_to_classification():
    assert data.output_kind({"output_kind": "sequence"}) == "sequence" and data.output_kind({}) == "classification"
