"""Curriculum builders, the file format and its validation (torch-free, fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from store.curriculum import (
    FORMAT_VERSION,
    Curriculum,
    CurriculumError,
    available_count,
    build_curriculum,
    infobatch_plan,
    list_curricula,
    load_curriculum,
    normalise_losses,
    pacing_fraction,
    save_curriculum,
    sow_weights,
)

REPO = Path(__file__).resolve().parent.parent


def make_summary() -> pd.DataFrame:
    """10 samples; loss = sample_id / 10 (sample 0 easiest), AUM falls with the id."""
    ids = np.arange(10)
    return pd.DataFrame({
        "sample_id": ids,
        "label": [0, 0, 0, 0, 0, 0, 1, 1, 1, 2],
        "original_label": [0, 0, 0, 0, 0, 0, 1, 1, 2, 0],
        "label_noisy": [False] * 8 + [True, True],
        "loss": ids / 10.0,
        "el2n": ids / 10.0,
        "aum": 3.0 - ids * 0.5,  # 3.0 ... -1.5; sample 9 lowest (hardest)
        "forgetting_events": [0, 0, 1, 1, 2, 2, 0, 0, 0, 0],
        "never_learned": [False] * 8 + [True, True],
        "confidence": [0.9, 0.9, 0.8, 0.8, 0.6, 0.5, 0.4, 0.3, 0.1, 0.05],
        "variability": [0.05, 0.05, 0.1, 0.1, 0.3, 0.3, 0.25, 0.1, 0.05, 0.05],
    })


def kept(curriculum: Curriculum) -> list[int]:
    table = curriculum.table
    return table.loc[table["weight"] > 0, "sample_id"].tolist()


# -- selection --------------------------------------------------------------------------


def test_keep_easy_hard_offset_random():
    s = make_summary()
    assert kept(build_curriculum(s, "keep-easy", "loss", keep=0.3)) == [0, 1, 2]
    assert kept(build_curriculum(s, "keep-hard", "loss", keep=0.3)) == [7, 8, 9]
    assert kept(build_curriculum(s, "keep-easy", "aum", keep=0.2)) == [0, 1]  # high AUM = easy
    assert kept(build_curriculum(s, "offset", "loss", keep=0.4, skip=0.2)) == [2, 3, 4, 5]
    random_a = build_curriculum(s, "random", keep=0.5, seed=3)
    random_b = build_curriculum(s, "random", keep=0.5, seed=3)
    assert kept(random_a) == kept(random_b) and len(kept(random_a)) == 5
    expected = sorted(np.random.default_rng(3).permutation(10)[:5].tolist())
    assert kept(random_a) == expected
    assert set(build_curriculum(s, "keep-easy", "loss", keep=0.3).table["weight"]) == {0.0, 1.0}


def test_forgetting_ranks_never_learned_hardest():
    s = make_summary()
    # forgetting: 8, 9 never learned -> hardest; then 4, 5 (2 events)
    assert kept(build_curriculum(s, "keep-hard", "forgetting_events", keep=0.4)) == [4, 5, 8, 9]


def test_stratified_spends_budget_evenly_over_bins():
    s = make_summary()
    s["loss"] = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 1.0, 0.99]  # bins: 8 low, 2 high
    c = build_curriculum(s, "stratified", "loss", keep=0.4, bins=2, seed=0)
    chosen = kept(c)
    assert len(chosen) == 4
    assert {8, 9} <= set(chosen)  # the small bin is taken whole
    assert len(set(chosen) & set(range(8))) == 2
    assert kept(build_curriculum(s, "stratified", "loss", keep=0.4, bins=2, seed=0)) == chosen


def test_bad_parameters_are_named():
    s = make_summary()
    with pytest.raises(CurriculumError, match="keep must be in"):
        build_curriculum(s, "keep-easy", "loss", keep=1.5)
    with pytest.raises(CurriculumError, match="does not take bins"):
        build_curriculum(s, "keep-easy", "loss", keep=0.5, bins=3)
    with pytest.raises(CurriculumError, match="unknown score"):
        build_curriculum(s, "keep-easy", "nope", keep=0.5)
    with pytest.raises(CurriculumError, match="unknown strategy"):
        build_curriculum(s, "keep-most", "loss")
    with pytest.raises(CurriculumError, match="skip \\+ keep"):
        build_curriculum(s, "offset", "loss", keep=0.6, skip=0.5)


# -- reweighting ----------------------------------------------------------------------------


def test_upweight_hard_weights():
    c = build_curriculum(make_summary(), "upweight-hard", "loss", alpha=1.0)
    raw = 1 + np.arange(10) / 9
    np.testing.assert_allclose(c.table["weight"], raw / raw.mean())
    assert c.table["weight"].mean() == pytest.approx(1.0)


def test_downweight_noise_threshold_fraction_cartography_soft():
    s = make_summary()
    by_threshold = build_curriculum(s, "downweight-noise", "aum", threshold=-0.5)  # aum <= -0.5: 7, 8, 9
    assert by_threshold.table["weight"].tolist() == [1.0] * 7 + [0.0] * 3
    by_fraction = build_curriculum(s, "downweight-noise", "el2n", fraction=0.2, floor=0.25)
    assert by_fraction.table["weight"].tolist() == [1.0] * 8 + [0.25] * 2
    forgetting = build_curriculum(s, "downweight-noise", "forgetting_events", threshold=2)
    assert forgetting.table.loc[forgetting.table["weight"] == 0, "sample_id"].tolist() == [4, 5, 8, 9]
    carto = build_curriculum(s, "downweight-noise", "cartography")
    # hard-to-learn: confidence < 0.5 and variability < 0.2 -> 7, 8, 9 (6 is ambiguous)
    assert carto.table.loc[carto.table["weight"] == 0, "sample_id"].tolist() == [7, 8, 9]
    soft = build_curriculum(s, "downweight-noise", "loss", fraction=0.2, mode="soft", temperature=0.1)
    q = np.arange(10) / 9
    np.testing.assert_allclose(soft.table["weight"], 1 / (1 + np.exp((q - 0.8) / 0.1)))
    assert soft.metadata["params"] == {"fraction": 0.2, "mode": "soft", "floor": 0.0, "temperature": 0.1}


def test_class_balance():
    c = build_curriculum(make_summary(), "class-balance")
    # labels: six 0s, three 1s, one 2 -> N / (C n_c) = 10/18, 10/9, 10/3
    expected = [10 / 18] * 6 + [10 / 9] * 3 + [10 / 3]
    np.testing.assert_allclose(c.table["weight"], expected)
    assert c.metadata["score"] is None


# -- pacing ----------------------------------------------------------------------------------


def test_pacing_fractions_per_epoch():
    epochs = np.arange(6)
    np.testing.assert_allclose(pacing_fraction(epochs, "linear", 0.2, 4), [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    np.testing.assert_allclose(
        pacing_fraction(epochs, "root", 0.2, 4), np.sqrt(0.04 + 0.96 * np.minimum(epochs / 4, 1))
    )
    np.testing.assert_allclose(pacing_fraction(epochs, "geometric", 0.25, 2)[:3], [0.25, 0.5, 1.0])
    np.testing.assert_allclose(pacing_fraction(epochs, "step", 0.2, 4, stages=2), [0.2, 0.2, 0.6, 0.6, 1.0, 1.0])
    assert available_count(1, 10, pacing="linear", r0=0.2, duration=4) == 4


def test_easy_to_hard_and_anti_curriculum_start_epochs():
    s = make_summary()
    c = build_curriculum(s, "easy-to-hard", "loss", pacing="linear", r0=0.2, duration=4)
    # counts per epoch 2, 4, 6, 8, 10 -> samples 0-1 at 0, 2-3 at 1, ...
    assert c.table["start_epoch"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert c.table["stage"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert (c.table["weight"] == 1).all()
    anti = build_curriculum(s, "anti-curriculum", "loss", pacing="step", r0=0.2, duration=4, stages=2)
    # counts 2, 2, 6, 6, 10; hardest first
    assert anti.table["start_epoch"].tolist() == [4, 4, 4, 4, 2, 2, 2, 2, 0, 0]
    sp = build_curriculum(s, "self-paced", "loss", r0=0.5, duration=2)
    assert sp.metadata["online"] == {"rule": "self-paced", "params": {"pacing": "linear", "r0": 0.5, "duration": 2,
                                                                       "stages": 4, "power": 2.0}}


# -- online rules ----------------------------------------------------------------------------


def test_infobatch_plan_drop_probabilities_and_weights():
    loss = np.array([0.1, 0.2, 0.3, 1.4])  # mean 0.5: first three are below
    keep, weight, probability = infobatch_plan(loss, epoch=0, max_epochs=8, prune_ratio=0.5,
                                               rng=np.random.default_rng(0))
    np.testing.assert_allclose(probability, [0.5, 0.5, 0.5, 0.0])
    assert keep[3]
    np.testing.assert_allclose(weight[keep], np.where(probability[keep] > 0, 2.0, 1.0))
    assert (weight[~keep] == 0).all()
    # from delta * max_epochs = 7 on: full data, weight 1
    keep, weight, probability = infobatch_plan(loss, epoch=7, max_epochs=8, prune_ratio=0.5)
    assert keep.all() and (weight == 1).all() and (probability == 0).all()
    # no losses yet: full data
    keep, _, probability = infobatch_plan(np.full(4, np.nan), epoch=0, max_epochs=8)
    assert keep.all() and (probability == 0).all()
    # the drop rate is r in expectation
    big = np.r_[np.zeros(5000), np.ones(5000)]
    keep, _, _ = infobatch_plan(big, 0, 8, prune_ratio=0.3, rng=np.random.default_rng(1))
    assert abs((~keep[:5000]).mean() - 0.3) < 0.03 and keep[5000:].all()
    c = build_curriculum(make_summary(), "infobatch", prune_ratio=0.3)
    assert (c.table["weight"] == 1).all()
    assert c.metadata["online"] == {"rule": "infobatch", "params": {"prune_ratio": 0.3, "delta": 0.875}}


def test_sow_weights():
    losses = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(normalise_losses(losses, 1.0), [-1, 0, 1])
    for g, expected_z in (("linear-upper", [-1, 0, 1]), ("quadratic", [-1, 0, -1]), ("extremes", [1, 0, 1])):
        w = sow_weights(losses, g=g, delta=1.0, tau=0.5)
        z = np.exp(np.array(expected_z) / 0.5)
        np.testing.assert_allclose(w, z / z.sum())
        assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(sow_weights(np.full(4, 0.7)), 0.25)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert sow_weights(rng.random(64) * 5, "quadratic", 2.0, 0.3).sum() == pytest.approx(1.0)


def test_averaged_scores_from_several_runs(store):
    from store import sample_summary
    from tests.conftest import write_synthetic_run

    p1 = np.tile(np.linspace(0.9, 0.1, 6)[:, None], (1, 3))
    p2 = np.tile(np.linspace(0.1, 0.9, 6)[:, None], (1, 3))
    p2[0] = 0.95  # in run 2 sample 0 is still easiest; sample 1 is averaged to the middle
    runs = [write_synthetic_run(store, p > 0.5, p, p - 0.5) for p in (p1, p2)]
    summary = sample_summary(store, runs)
    c = build_curriculum(summary, "keep-easy", "loss", keep=1 / 6, source_runs=runs)
    assert kept(c) == [0]
    assert c.metadata["source_runs"] == runs


# -- the file --------------------------------------------------------------------------------


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


# -- the command ----------------------------------------------------------------------------


def _trainmap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_curriculum_command_writes_file_and_store_copy(store, tmp_path):
    from tests.conftest import write_synthetic_run

    p = np.tile(np.linspace(0.95, 0.05, 10)[:, None], (1, 3))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5, noisy=np.arange(10) >= 8)
    out = tmp_path / "cur.csv"
    result = _trainmap("curriculum", "--run", run_id, "--score", "aum", "--strategy", "downweight-noise",
                       "--fraction", "0.2", "-o", str(out), "--store", str(store.root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "8 of 10 samples kept; of 2 flipped labels 2 pruned" in result.stderr
    c = load_curriculum(out, task="synthetic")
    assert c.table["weight"].tolist() == [1.0] * 8 + [0.0] * 2
    assert c.metadata["source_runs"] == [run_id] and c.metadata["strategy"] == "downweight-noise"
    copies = list_curricula(store.root)
    assert len(copies) == 1 and load_curriculum(copies[0]).table.equals(c.table)


def test_curriculum_command_errors_are_one_line_and_change_nothing(store, tmp_path):
    from tests.conftest import write_synthetic_run

    p = np.tile(np.linspace(0.95, 0.05, 10)[:, None], (1, 3))
    run_id = write_synthetic_run(store, p > 0.5, p, p - 0.5)
    before = _snapshot(store.root)
    for args, message in (
        (["--run", run_id, "--score", "loss", "--strategy", "keep-easy", "--keep", "2"], "keep must be in (0, 1], got 2.0"),
        (["--run", "nope", "--score", "loss", "--strategy", "keep-easy"], "run 'nope' not found"),
        (["--run", run_id, "--score", "loss", "--strategy", "keep-easy", "--bins", "3"], "does not take bins"),
        (["--run", run_id, "--score", "zzz", "--strategy", "keep-easy"], "unknown score 'zzz'"),
        (["--run", run_id, "--score", "loss", "--strategy", "keep-easy", "-o", str(tmp_path / "c.txt")], "ends in .parquet or .csv"),
    ):
        result = _trainmap("curriculum", *args, "--store", str(store.root))
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trainmap: error: ") and message in lines[0], lines
    assert _snapshot(store.root) == before


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
