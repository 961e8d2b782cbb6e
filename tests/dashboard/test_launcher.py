"""The curriculum page and the rerun launch path (``dashboard/launcher.py``).

Moved verbatim from ``tests/store/test_curriculum.py`` when ``store/curriculum.py``
became a package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# -- the dashboard page and the launch path ---------------------------------------------------


def _page(store_root: Path):
    import os

    from streamlit.testing.v1 import AppTest

    os.environ["TRAINMAP_STORE"] = str(store_root)
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
    at.run()  # run once first: st.navigation registers the page under its url_path
    at.switch_page("views/curriculum.py")
    return at


def _texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def test_launch_path_is_torch_free_and_validates():
    from dashboard import launcher

    code = ("import sys, dashboard.launcher, store.curriculum; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True).returncode == 0
    with pytest.raises(launcher.LaunchError, match="not a built-in task"):
        launcher.rerun_args({"task": "synthetic", "model": "cnn"}, __file__, store="/tmp", name="x")
    with pytest.raises(launcher.LaunchError, match="run name"):
        launcher.rerun_args({"task": "mnist1d", "model": "cnn"}, __file__, store="/tmp", name="a b; rm")
    args = launcher.rerun_args({"task": "mnist1d", "model": "mlp", "epochs": 3, "seed": 2, "label_noise": 0.2},
                               __file__, store="/tmp/s", name="r1", keep_steps=True)
    assert args[:8] == ["train", "--task", "mnist1d", "--model", "mlp", "--epochs", "3", "--seed"]
    assert "--keep-steps" in args and args[args.index("--label-noise") + 1] == "0.2"
    assert "--grad-norm-every" not in args  # a parent recorded before the option: the default
    args = launcher.rerun_args({"task": "mnist1d", "model": "mlp", "grad_norm_every": 1}, __file__, store="/tmp/s", name="r2")
    assert args[args.index("--grad-norm-every") + 1] == "1"


def test_a_rerun_repeats_every_setting_of_the_parent(tmp_path):
    """For every field of ``TrainConfig`` set to a non-default value in a parent's config, the
    rerun's ``trainmap train`` arguments, parsed by the real parser, carry that value; a new
    field that ``rerun_args`` does not know is refused, never dropped."""
    import dataclasses

    from dashboard import launcher
    from training.cli.main import build_parser
    from training.config import TrainConfig

    curriculum = tmp_path / "c.parquet"
    curriculum.write_bytes(b"")
    parent = {"task": "digits", "model": "mlp", "epochs": 7, "seed": 3, "label_noise": 0.1, "label_noise_seed": 2,
              "batch_size": 32, "lr": 0.005, "weight_decay": 1e-2, "store": "elsewhere", "name": "parent",
              "devices": 2, "strategy": "ddp_spawn", "accelerator": "auto", "curriculum": "old.parquet",
              "keep_steps": True, "grand": "init+every:3", "progress": False, "grad_norm_every": 4}
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    assert set(parent) == set(defaults), "a new TrainConfig field: give it a non-default value here"
    differ = [key for key, value in parent.items() if value == defaults[key]]
    assert differ == list(launcher.FIXED_SETTINGS), differ  # every settable one differs from its default
    assert launcher.FIXED_SETTINGS == {key: defaults[key] for key in launcher.FIXED_SETTINGS}
    args = launcher.rerun_args(parent, curriculum, store=tmp_path, name="child")
    parsed = vars(build_parser().parse_args(args))
    for key in launcher.REPEATED:
        assert parsed[key] == parent[key], key
    assert parsed["curriculum"] == str(curriculum.resolve()) and parsed["name"] == "child"
    assert parsed["store"] == str(tmp_path.resolve()) and parsed["no_progress"]
    overridden = vars(build_parser().parse_args(
        launcher.rerun_args(parent, curriculum, store=tmp_path, name="c2", epochs=2, keep_steps=False, seed=5)))
    assert (overridden["epochs"], overridden["keep_steps"], overridden["seed"]) == (2, False, 5)
    with pytest.raises(launcher.LaunchError, match="setting\\(s\\) momentum that a rerun"):
        launcher.rerun_args({**parent, "momentum": 0.9}, curriculum, store=tmp_path, name="c3")
    with pytest.raises(launcher.LaunchError, match="weight_decay is 0.1, but `trainmap train` always uses 0.01"):
        launcher.rerun_args({**parent, "weight_decay": 0.1}, curriculum, store=tmp_path, name="c4")


def test_suggested_names_are_valid_and_new():
    from dashboard import launcher

    assert launcher.suggest_name("cnn-noise20-s0", "drop-hardest", "loss", set()) == "cnn-noise20-s0-drop-hardest-loss"
    assert launcher.suggest_name("my run/1", "random", None, {"my-run-1-random"}) == "my-run-1-random-2"
    taken = {"a-b-c", "a-b-c-2"}
    assert launcher.suggest_name("a", "b", "c", taken) == "a-b-c-3"
    assert launcher.check_name("cnn.noise_20-s0") == "cnn.noise_20-s0"
    for name in ("a b", "", "x" * 81, "../etc", "a;rm"):
        with pytest.raises(launcher.LaunchError, match="may only hold letters"):
            launcher.check_name(name)


def test_the_page_queues_a_job_disables_the_same_launch_and_cancels_it(tmp_path):
    """With this test process holding the store's executor lock (a live executor, as far as
    the page can tell), a launch stays queued: the page shows it, refuses the same launch
    with the reason, and its Cancel button cancels it (Launch comes back)."""
    import shutil

    from store import Store, jobs

    root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", root)
    assert jobs.acquire_executor_lock(root)
    try:
        at = _page(root)
        at.run()
        assert not at.exception, at.exception
        parent = at.session_state["cur_parent"]
        parent_name = Store(root).run_info(parent)["name"]
        name = at.text_input(key="cur_name").value
        assert name.startswith(parent_name + "-" + at.selectbox(key="cur_strategy").value)
        assert not at.button(key="cur_launch").disabled
        at.number_input(key="cur_epochs").set_value(2).run()
        at.button(key="cur_launch").click().run()
        assert not at.exception, at.exception
        listing = jobs.list_jobs(root)
        assert [(job.state, job.run_name, job.parent_run_id) for job in listing.jobs] == [("queued", name, parent)]
        job = listing.jobs[0]
        assert job.args[job.args.index("--epochs") + 1] == "2" and "--grand" in job.args
        assert at.button(key="cur_launch").disabled
        assert f"already queued as job {job.job_id}" in _texts(at)
        at.button(key=f"cur_cancel_{job.job_id}").click().run()
        assert not at.exception, at.exception
        assert jobs.get_job(root, job.job_id).state == "cancelled"
        at.run()
        assert not at.button(key="cur_launch").disabled
        at.text_input(key="cur_name").set_value("bad name!").run()
        assert at.button(key="cur_launch").disabled and "may only hold letters" in _texts(at)
    finally:
        jobs.release_executor_lock(root)


def test_a_refused_launch_says_why_and_saves_nothing(tmp_path, monkeypatch):
    """Without torch (as on a browse-only install) the page names the extra to install and
    the store is left as it was: no curriculum copy, no launches folder."""
    import shutil

    from dashboard import launcher

    root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", root)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    monkeypatch.setattr(launcher, "importable", lambda module: module != "torch")
    at = _page(root)
    at.run()
    at.button(key="cur_launch").click().run()
    assert not at.exception, at.exception
    assert "cur_last_job" not in at.session_state
    errors = [e.value for e in at.error]
    assert any("needs torch: install the training extra (pip install 'trainmap[train]')" in e for e in errors), errors
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before


def test_queue_seed_reruns_queues_one_job_per_sibling_seed(tmp_path):
    """The verdict's "rerun over the same seeds": one job per parent, each with its own seed
    and the parent's other settings, the same curriculum; asking again is refused."""
    import shutil

    from dashboard.views import curriculum_jobs
    from store import Store, jobs

    root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", root)
    parents = ["20261126-132606-daddb8", "20261126-132613-99d44c"]  # cnn-noise20 seeds 0 and 1
    curriculum = str(root / "curricula" / "noise20-s0-drop-loss-20.parquet")
    assert jobs.acquire_executor_lock(root)  # a live executor: the jobs stay queued
    try:
        job_ids = curriculum_jobs.queue_seed_reruns(str(root), parents, curriculum)
        queued = [jobs.get_job(root, job_id) for job_id in job_ids]
        assert [job.parent_run_id for job in queued] == parents
        assert [job.run_name for job in queued] == ["cnn-noise20-s0-rerun-noise20-s0-drop-loss-20",
                                                   "cnn-noise20-s1-rerun-noise20-s0-drop-loss-20"]
        for job, parent in zip(queued, parents):
            config = Store(root).run_info(parent)["config"]
            assert job.state == "queued" and job.curriculum == "curricula/noise20-s0-drop-loss-20.parquet"
            assert jobs.option_value(job.args, "--seed") == str(config["seed"])
            assert jobs.option_value(job.args, "--epochs") == "20" and jobs.option_value(job.args, "--grand") == "on"
        with pytest.raises(jobs.JobError, match=f"already queued as job {job_ids[0]}"):
            curriculum_jobs.queue_seed_reruns(str(root), parents[:1], curriculum)
    finally:
        jobs.release_executor_lock(root)
