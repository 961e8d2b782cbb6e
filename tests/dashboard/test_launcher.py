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


@pytest.mark.slow
def test_page_builds_previews_and_launches_a_rerun(tmp_path):
    import shutil
    import time

    from store import Store

    root = tmp_path / "store"
    shutil.copytree(REPO / "sample_runs", root)
    at = _page(root)
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="cur_strategy").set_value("downweight-noise").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == "4,000" and metrics["Pruned"] == "800"  # fraction 0.2 by loss
    at.number_input(key="cur_epochs").set_value(1).run()
    at.button(key="cur_launch").click().run()
    assert not at.exception, at.exception
    launch = at.session_state["curriculum_launch"]
    assert launch.process is not None and "--curriculum" in launch.args
    launch.process.wait(timeout=150)
    at.run()  # AppTest runs no timers: a rerun stands in for the fragment's refresh
    assert not at.exception, at.exception
    text = _texts(at)
    assert f"rerun {launch.name} finished" in text, text + Path(launch.log_path).read_text()[-2000:]
    store = Store(root)
    rerun = [r for r in store.run_ids() if store.run_info(r).get("name") == launch.name][0]
    info = store.run_info(rerun)
    assert info["status"] == "finished" and info["epochs_done"] == 1 and info["parent_run_id"] in store.run_ids()
    assert "Validation accuracy per class" in text and "What happened to the pruned" in text
    assert len(list((root / "curricula").glob("*.parquet"))) >= 1


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
    assert "curriculum_launch" not in at.session_state
    errors = [e.value for e in at.error]
    assert any("needs torch: install the training extra (pip install 'trainmap[train]')" in e for e in errors), errors
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
