"""Rerun jobs in a real headless Chromium (Debian's, never `playwright install`): launch a
rerun, reload mid-run and still see the job with its step progress, Launch disabled for the
same curriculum, a second launch queued behind it and cancelled, then the running one
cancelled. Against a tmp copy of ``sample_runs/``; screenshots under ``test-artifacts/``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from browser_session import ARTIFACTS, BROWSER_MARKS, chromium_page, dashboard_server

pytestmark = BROWSER_MARKS
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def server(tmp_path):
    with dashboard_server(tmp_path) as served:
        yield served


@pytest.fixture
def page():
    with chromium_page(1500, 1100, timeout_ms=30_000) as chromium:
        yield chromium



def stop_jobs(store_root: Path) -> None:
    """Cancel what is left and stop the executor the dashboard started (its own session)."""
    from store import jobs

    for job in jobs.list_jobs(store_root).jobs:
        if job.active:
            try:
                jobs.cancel(store_root, job.job_id)
            except jobs.JobError:
                pass
    holder = jobs.executor_holder(store_root)
    if holder and holder.get("pid"):
        deadline = time.monotonic() + 60
        while jobs.executor_holder(store_root) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if jobs.executor_holder(store_root) is not None:
            os.killpg(holder["pid"], signal.SIGKILL)


def test_jobs_survive_a_reload_show_step_progress_and_cancel(server, page):
    from store import jobs

    base, store_root = server
    try:
        page.goto(f"{base}/curriculum")
        expect(page.get_by_role("heading", name="Curriculum", exact=True)).to_be_visible()
        name_box = page.get_by_role("textbox", name="Rerun name")
        expect(name_box).to_be_visible(timeout=120_000)  # the page's first render builds the preview
        suggested = name_box.input_value()
        assert suggested.startswith("cnn-") and " " not in suggested
        name_box.fill("browser-rerun")
        name_box.press("Enter")
        page.wait_for_timeout(1000)
        # Long enough to be still training after the reload below on a fast, idle machine
        # (the test cancels it).
        epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
        epochs.fill("500")
        epochs.press("Enter")
        page.wait_for_timeout(1000)
        launch = page.get_by_role("button", name="Launch rerun")
        expect(launch).to_be_enabled()
        launch.click()
        # The job trains in the executor the dashboard started; the live list shows its steps.
        row = page.get_by_text("browser-rerun · running · step", exact=False)
        expect(row.first).to_be_visible(timeout=240_000)
        page.wait_for_timeout(2500)  # a few more steps
        page.screenshot(path=str(ARTIFACTS / "jobs-1-running.png"), full_page=True)

        # A reload (a new session: nothing kept in the tab) still shows the job and its steps.
        page.reload()
        expect(page.get_by_role("heading", name="Curriculum", exact=True)).to_be_visible()
        expect(row.first).to_be_visible(timeout=120_000)
        text = row.first.inner_text()
        step, total = text.split("step ", 1)[1].split(" ", 1)[0].split("/")
        assert 0 < int(step) <= int(total), text
        assert "epoch " in text
        running = [job for job in jobs.list_jobs(store_root).jobs if job.active]
        assert [(job.run_name, job.state) for job in running] == [("browser-rerun", "running")]
        # The same curriculum of the same parent: Launch disabled, with the reason.
        expect(page.get_by_role("button", name="Launch rerun")).to_be_disabled(timeout=30_000)
        expect(page.get_by_text(f"already running as job {running[0].job_id}").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "jobs-2-after-reload.png"), full_page=True)

        # Another curriculum (built with seed 1) makes another rerun: it queues behind the running one.
        seed = page.get_by_role("spinbutton", name="Seed", exact=True)
        seed.fill("1")
        seed.press("Enter")
        page.wait_for_timeout(1000)
        name_box = page.get_by_role("textbox", name="Rerun name")
        name_box.fill("browser-rerun-3")
        name_box.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Launch rerun").click()
        queued = page.get_by_text("browser-rerun-3 · queued", exact=False)
        expect(queued.first).to_be_visible(timeout=30_000)
        second = [job for job in jobs.list_jobs(store_root).jobs if job.run_name == "browser-rerun-3"][0]
        assert second.state == "queued"
        page.screenshot(path=str(ARTIFACTS / "jobs-3-queued.png"), full_page=True)
        page.locator(f".st-key-cur_cancel_{second.job_id} button").click()
        expect(queued).to_have_count(0, timeout=30_000)
        assert jobs.get_job(store_root, second.job_id).state == "cancelled"

        # Cancel the running one: its training stops, its run is kept as interrupted.
        first = running[0]
        page.locator(f".st-key-cur_cancel_{first.job_id} button").click()
        expect(row).to_have_count(0, timeout=60_000)
        expect(page.get_by_role("button", name="Launch rerun")).to_be_enabled(timeout=30_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "jobs-4-cancelled.png"), full_page=True)
        assert jobs.get_job(store_root, first.job_id).state == "cancelled"
        assert "Traceback" not in page.content()
    finally:
        stop_jobs(store_root)
    final = jobs.get_job(store_root, first.job_id)
    assert final.run_id is not None
    from store import Store

    deadline = time.monotonic() + 60
    while Store(store_root).run_state(final.run_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert Store(store_root).run_state(final.run_id)["status"] == "interrupted"
