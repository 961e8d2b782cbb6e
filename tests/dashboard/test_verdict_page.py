"""The verdict on a rerun (Curriculum page's outcome, Compare page) through Streamlit's
AppTest, on a tmp copy of ``sample_runs/``: cnn-noise20-s0 and -s1 are seeds of one setting,
cnn-noise20-s0-clean a rerun of -s0 on a curriculum. Values are checked against run.json."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from store import Store

from conftest import SAMPLE_RUNS, sample_run_ids
from tests.dashboard.app_pages import app_test, run_clean, texts

RUNS = sample_run_ids()
PARENT, SIBLING, RERUN = RUNS["cnn-noise20-s0"], RUNS["cnn-noise20-s1"], RUNS["cnn-noise20-s0-clean"]


def outcome_script(root: str, parent_id: str, rerun_id: str, queue_kind: str) -> None:
    """The outcome as the Curriculum page shows it, with a queue that records its calls
    ("record"), one that refuses them as the jobs store does a duplicate ("refuse"), or none."""
    import streamlit as st

    from dashboard import data
    from dashboard.views import curriculum_outcome

    def record(store_root: str, parent_run_ids: list[str], curriculum_path: str) -> list[str]:
        st.session_state["queued"] = (store_root, list(parent_run_ids), curriculum_path)
        return [f"job-{index}" for index in range(len(parent_run_ids))]

    def refuse(store_root: str, parent_run_ids: list[str], curriculum_path: str) -> list[str]:
        raise data.StoreError("duplicates job job-1, queued")

    info = data.run_info(root, rerun_id, data.run_version(root, rerun_id))
    curriculum_outcome.show_outcome(root, parent_id, rerun_id, data.recorded_curriculum(root, info), "t",
                                    {"record": record, "refuse": refuse}.get(queue_kind))


def run_outcome(root, queue_kind: str = "record", parent_id: str = PARENT, rerun_id: str = RERUN) -> AppTest:
    at = AppTest.from_function(outcome_script, args=(str(root), parent_id, rerun_id, queue_kind),
                               default_timeout=60)
    return run_clean(at)


@pytest.fixture
def fresh_root(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    return root


def run_json(root, run_id: str) -> dict:
    return json.loads((root / "runs" / run_id / "run.json").read_text())


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def test_outcome_shows_parent_rerun_difference_seed_spread_and_verdict(fresh_root):
    at = run_outcome(fresh_root)
    parent, sibling, rerun = (run_json(fresh_root, r) for r in (PARENT, SIBLING, RERUN))
    best = [parent["best_val_accuracy"], sibling["best_val_accuracy"]]
    difference = rerun["best_val_accuracy"] - parent["best_val_accuracy"]
    spread = abs(best[0] - best[1])
    verdict = next(m.value for m in at.markdown if m.value.startswith("**Verdict.**"))
    assert f"The rerun is {100 * difference:.1f} points better than its parent" in verdict
    assert f"the parent's 2 seeds differ by {100 * spread:.1f} points" in verdict
    assert ("the difference exceeds seed noise" if abs(difference) > spread
            else "not distinguishable from seed noise") in verdict
    table = at.dataframe[0].value.set_index("metric")
    row = table.loc["Best validation accuracy"]
    assert row["parent"] == percent(best[0]) and row["rerun"] == percent(rerun["best_val_accuracy"])
    assert row["difference"] == f"{100 * difference:+.1f} pp"
    assert row["seeds mean"] == percent(sum(best) / 2) and row["seeds std"] == f"{100 * pd.Series(best).std():.1f} pp"
    assert row["seeds min"] == percent(min(best)) and row["seeds max"] == percent(max(best))
    # one unit per metric: every accuracy row in %, every accuracy difference in pp
    for name in ("Best validation accuracy", "Last validation accuracy", "Last training accuracy"):
        assert table.loc[name, "parent"].endswith(" %") and table.loc[name, "difference"].endswith(" pp")
    assert table.loc["Last validation loss", "rerun"] == f"{rerun['final_val_loss']:.3f}"
    assert table.loc["Samples presented", "parent"] == "80,000" and table.loc["Samples presented", "rerun"] == "64,000"
    assert "cnn-noise20-s0, cnn-noise20-s1" in texts(at)
    classes = at.dataframe[1].value
    assert classes["class"].tolist() == [str(label) for label in range(10)]
    assert all(value.endswith(" pp") for value in classes["difference"])
    # the offer to rerun the curriculum on the other seed, and what it queues
    button = next(b for b in at.button if b.key == "t_seed_button")
    assert button.label == "Rerun this curriculum on the parent's other seeds (1: cnn-noise20-s1)"
    assert not button.disabled
    button.click()
    at = run_clean(at)
    store_root, parents, path = at.session_state["queued"]
    assert store_root == str(fresh_root) and parents == [SIBLING]
    assert path == str(fresh_root / "curricula" / "noise20-s0-drop-loss-20.parquet")
    assert [s.value for s in at.success] == ["Queued 1 rerun job\\: job-0"]
    assert not at.error


def test_without_the_jobs_queue_the_offer_is_disabled_and_says_why(fresh_root):
    at = run_outcome(fresh_root, queue_kind="none")
    button = next(b for b in at.button if b.key == "t_seed_button")
    assert button.disabled
    assert "Not available here yet: queuing reruns on several seeds needs the rerun jobs queue." in texts(at)


def test_a_refused_queue_is_shown_as_an_error(fresh_root):
    at = run_outcome(fresh_root, queue_kind="refuse")
    next(b for b in at.button if b.key == "t_seed_button").click()
    at = run_clean(at)
    assert [e.value for e in at.error] == ["Cannot queue the seed reruns\\: duplicates job job-1, queued"]
    assert not at.success


def test_a_parent_without_siblings_gets_no_seed_verdict(fresh_root):
    Store(fresh_root).delete_run(SIBLING)
    at = run_outcome(fresh_root)
    page = texts(at)
    assert "the parent has no sibling seeds in the store" in page and "train the parent's settings" in page
    assert at.dataframe[0].value.columns.tolist() == ["metric", "parent", "rerun", "difference"]
    assert not [b for b in at.button if b.key == "t_seed_button"]


def test_reruns_over_both_seeds_are_compared_paired(fresh_root):
    # a rerun of the same curriculum from the seed-1 parent (a copy of the seed-0 rerun's files)
    other = "20261126-140000-abcdef"
    shutil.copytree(fresh_root / "runs" / RERUN, fresh_root / "runs" / other)
    info = run_json(fresh_root, RERUN)
    info.update(run_id=other, name="cnn-noise20-s1-clean", seed=1, parent_run_id=SIBLING,
                created_at="2026-11-26T14:00:00+00:00", finished_at="2026-11-26T14:00:06+00:00",
                best_val_accuracy=0.9, config=info["config"] | {"seed": 1, "name": "cnn-noise20-s1-clean"})
    (fresh_root / "runs" / other / "run.json").write_text(json.dumps(info))
    at = run_outcome(fresh_root)
    parents = [run_json(fresh_root, r)["best_val_accuracy"] for r in (PARENT, SIBLING)]
    reruns = [run_json(fresh_root, RERUN)["best_val_accuracy"], 0.9]
    differences = pd.Series(reruns) - pd.Series(parents)
    over = next(m.value for m in at.markdown if m.value.startswith("**Over seeds.**"))
    assert f"Over 2 seeds, the reruns of this curriculum average {percent(sum(reruns) / 2)}" in over
    assert f"against their parents' {percent(sum(parents) / 2)}" in over
    assert f"{100 * differences.mean():.1f} points better" in over
    se = differences.std() / 2 ** 0.5
    assert f"standard error {100 * se:.1f} points" in over
    paired = next(frame.value for frame in at.dataframe if "mean difference" in frame.value.columns)
    assert paired.set_index("metric").loc["Best validation accuracy", "mean difference"] == \
        f"{100 * differences.mean():+.1f} pp"
    assert "This curriculum has a rerun on each of the parent's 2 seeds." in texts(at)
    assert not [b for b in at.button if b.key == "t_seed_button"]


def test_compare_page_gives_the_verdict_when_a_rerun_and_its_parent_are_picked(sample_store):
    at = run_clean(app_test(sample_store, "views/compare.py", runs=[PARENT, RERUN]))
    assert "Verdict: cnn-noise20-s0-clean vs its parent cnn-noise20-s0" in [s.value for s in at.subheader]
    assert any(m.value.startswith("**Verdict.** The rerun is") for m in at.markdown)
    at = run_clean(app_test(sample_store, "views/compare.py", runs=[PARENT, SIBLING]))
    assert not [s for s in at.subheader if s.value.startswith("Verdict")]
