"""Stored fields never become Markdown or paths: a run named with Markdown image syntax shows as
typed, a task naming a path outside the store opens nothing, and a dead run reads interrupted."""

from __future__ import annotations

import json
import shutil

import pytest

from app_pages import app_test, run_clean, texts
from store import Store, StoreError
from tests.conftest import SAMPLE_RUNS  # noqa: F401  (the shipped runs' folder)

HOSTILE = "![x](http://127.0.0.1:9/evil.png) **bold** `code` :red[alarm]"


def hostile_store(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    store = Store(root)
    run_id = store.run_ids()[0]
    info = json.loads((root / "runs" / run_id / "run.json").read_text())
    info.update(name=HOSTILE, task="../../../outside", status="failed", error=f"boom {HOSTILE}")
    (root / "runs" / run_id / "run.json").write_text(json.dumps(info))
    return store, run_id


def test_a_hostile_name_and_task_render_as_text_and_open_nothing(tmp_path):
    store, run_id = hostile_store(tmp_path)
    (tmp_path / "outside.parquet").write_text("not read")  # where ../../../outside would lead
    at = run_clean(app_test(store, "views/run.py", run=run_id, view="Samples"))
    title = at.title[0].value
    assert "\\!\\[x\\](http" in title  # escaped: Streamlit shows the characters, fetches nothing
    shown = texts(at)
    assert "boom \\!\\[x\\]" in shown and "![x](" not in shown.replace("\\", "|")
    with pytest.raises(StoreError, match="invalid dataset key '../../../outside'"):
        store.dataset_path("../../../outside")
    from dashboard import data

    assert data.dataset_path(str(store.root), "../../../outside") is None
    assert data.dataset_version(str(store.root), "../../../outside") is None
    at = run_clean(app_test(store))  # the runs list: the failed run's warning, escaped
    assert "Run **\\!\\[x\\]" in texts(at)


def test_a_run_whose_process_died_reads_interrupted_in_the_dashboard(tmp_path):
    store, run_id = hostile_store(tmp_path)
    store.update_run(run_id, status="running", pid=2**22 + 12345, host=__import__("socket").gethostname(),
                     name="ghost")
    at = run_clean(app_test(store, "views/run.py", run=run_id))
    assert "interrupted" in [badge.proto.label for badge in at.get("badge")] or "interrupted" in texts(at)
    assert "is no longer running" in texts(at)


def test_an_unknown_run_in_the_url_is_said_not_silently_replaced(sample_store):
    at = run_clean(app_test(sample_store, "views/run.py", run="20991231-000000-ffffff"))
    assert "No run '20991231-000000-ffffff' in this store; showing the newest run instead." in texts(at)
    at = run_clean(app_test(sample_store, "views/run.py", run="../../etc/passwd" + "x" * 5000))
    assert "in this store; showing the newest run instead." in texts(at)


def test_a_truncated_segment_is_named_in_one_warning_and_the_other_runs_stay_usable(tmp_path):
    store, run_id = hostile_store(tmp_path)
    store.update_run(run_id, name="damaged", status="finished", error=None, task="mnist1d")
    store.reopen_run(run_id)  # back to segments, as a live or killed run has them
    segment = store.run_dir(run_id) / "presentations" / "part-compacted.parquet"
    segment.write_bytes(segment.read_bytes()[:1000])  # cut short: no Parquet footer
    other = [r for r in store.run_ids() if r != run_id][0]
    for page, params in [("views/run.py", {"run": run_id, "view": "Curves"}),
                         ("views/compare.py", {"runs": [run_id, other]})]:
        at = run_clean(app_test(store, page, **params))
        warnings = [w.value for w in at.warning]
        assert any("part-compacted.parquet" in w and "Could not show the" in w for w in warnings), warnings
    at = run_clean(app_test(store, "views/run.py", run=other, view="Curves"))
    assert not at.warning and at.get("plotly_chart")
