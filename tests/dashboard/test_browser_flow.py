"""The whole decide-and-rerun flow in a real headless Chromium (Debian's) at 1400 x 900,
as a new user walks it on the shipped sample runs:

1. the Curriculum page opens on a fully scored source; a source that never presented some
   samples says so and asks what to do with them; the default prune shows its class warning;
2. a long rerun is launched, the page reloaded mid-run (the job is still there, with its step
   progress, and Launch is disabled for the same curriculum); a second curriculum's rerun
   queues behind it and is cancelled, then the running one is cancelled;
3. a relabel rerun is launched and trains to the end; its verdict is read;
4. a corner of the data map is box-selected and made a curriculum, which opens previewed on
   the Curriculum page, ready to launch.

It replaces the separate launch and jobs tests (one dashboard, one browser, the reruns
shared). Screenshots under ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from browser_session import ARTIFACTS, BROWSER_MARKS, chromium_page, dashboard_server

pytestmark = BROWSER_MARKS
expect = pytest.importorskip("playwright.sync_api").expect

#: a rerun that trains, loads its data and writes its store: slow on a busy 2-core machine
TRAINING_TIMEOUT_MS = 300_000


@pytest.fixture
def server(tmp_path):
    with dashboard_server(tmp_path) as served:
        yield served


@pytest.fixture
def page():
    with chromium_page(1400, 900, timeout_ms=60_000) as chromium:
        yield chromium


def run_ids(store_root: Path) -> dict[str, str]:
    return {json.loads(p.read_text())["name"]: p.parent.name for p in (store_root / "runs").glob("*/run.json")}


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


def choose(page, label: str, option: str) -> None:
    for _ in range(3):  # a click while the page reruns may land before the widget listens
        page.locator("[data-testid='stSelectbox']").filter(has_text=label).locator("input").click()
        try:
            expect(page.get_by_role("listbox")).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            page.wait_for_timeout(1000)
    page.keyboard.type(option.split(" ")[0])  # the list is virtual: filter it to the option
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_timeout(800)


def set_number(page, label: str, value) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(800)


def set_name(page, name: str) -> None:
    box = page.get_by_role("textbox", name="Rerun name")
    box.fill(name)
    box.press("Enter")
    page.wait_for_timeout(800)


def metric(page, label: str) -> str:
    """The value of the st.metric labelled ``label``."""
    card = page.locator("[data-testid='stMetric']").filter(
        has=page.locator("[data-testid='stMetricLabel']").get_by_text(label, exact=True))
    return card.locator("[data-testid='stMetricValue']").inner_text().strip()


def box_select(page, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
    """Drag a box over the data map from data coordinates ``x_range`` x ``y_range`` (its
    Plotly axes give the pixels) after choosing the chart's Box Select tool."""
    index = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].findIndex(
            g => g._fullLayout && g._fullLayout.xaxis && g._fullLayout.xaxis.title &&
                 String(g._fullLayout.xaxis.title.text || '').includes('variability'))""")
    assert index >= 0, "no data map drawn"
    chart = page.locator(".js-plotly-plot").nth(index)
    chart.scroll_into_view_if_needed()
    chart.hover()
    chart.locator(".modebar-btn[data-val='select']").first.click()
    corners = page.evaluate(
        """([xs, ys]) => {
            const gd = [...document.querySelectorAll('.js-plotly-plot')].find(
                g => g._fullLayout && g._fullLayout.xaxis && g._fullLayout.xaxis.title &&
                     String(g._fullLayout.xaxis.title.text || '').includes('variability'));
            const layout = gd._fullLayout, box = gd.getBoundingClientRect();
            const px = x => box.left + layout._size.l + layout.xaxis.l2p(x);
            const py = y => box.top + layout._size.t + layout.yaxis.l2p(y);
            return [px(xs[0]), py(ys[1]), px(xs[1]), py(ys[0])];
        }""",
        [list(x_range), list(y_range)],
    )
    page.mouse.move(corners[0], corners[1])
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(corners[0] + (corners[2] - corners[0]) * step / 10,
                        corners[1] + (corners[3] - corners[1]) * step / 10)
    page.mouse.up()


def test_the_whole_decide_and_rerun_flow(server, page):
    from store import Store, jobs

    base, store_root = server
    ids = run_ids(store_root)
    expect.set_options(timeout=60_000)  # a busy 2-core machine
    try:
        # 1. The source: the newest fully scored run by default; the pruned rerun as source
        # names its never-presented samples and asks; the default prune warns per class.
        page.goto(f"{base}/curriculum")
        expect(page.get_by_role("heading", name="Curriculum", exact=True)).to_be_visible()
        sources = page.locator("[data-testid='stMultiSelect']").filter(has_text="Source run")
        expect(sources).to_contain_text(f"cnn-noise20-s1 ({ids['cnn-noise20-s1']})")
        expect(page.get_by_text("class(es) below 0.5 of their share", exact=False).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "flow-1-class-warning.png"), full_page=True)
        sources.locator("input").first.click()
        page.keyboard.press("Backspace")  # the default source out ...
        expect(page.get_by_text("Choose at least one source run.")).to_be_visible()
        sources.locator("input").first.click()
        page.get_by_role("option", name=f"cnn-noise20-s0-clean ({ids['cnn-noise20-s0-clean']}, 800 of 4,000 "
                         "samples never presented)").click()
        page.keyboard.press("Escape")
        expect(page.get_by_text("800 of 4,000 samples were never presented in run", exact=False)).to_be_visible()
        expect(page.get_by_text("Choose what to do with the samples that were never presented")).to_be_visible()
        page.get_by_text("exclude from the ranking and keep them").click()
        expect(page.get_by_text("800 samples never presented in the source run(s) are kept, outside the ranking.")
               ).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "flow-2-unscored.png"), full_page=True)
        page.goto(f"{base}/curriculum")  # back to the default source
        expect(sources).to_contain_text(f"cnn-noise20-s1 ({ids['cnn-noise20-s1']})")

        # 2. A long rerun: launched, still listed after a reload, then a queued one cancelled
        # and the running one cancelled.
        choose(page, "Strategy", "downweight-noise (reweight)")
        expect(page.get_by_text("Flipped labels pruned")).to_be_visible()
        set_number(page, "Epochs", 500)
        set_name(page, "flow-long")
        page.get_by_role("button", name="Launch rerun").click()
        running = page.get_by_text("flow-long · running · step", exact=False)
        expect(running.first).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
        page.reload()
        expect(page.get_by_role("heading", name="Curriculum", exact=True)).to_be_visible()
        expect(running.first).to_be_visible()
        deadline = time.monotonic() + 120  # the live list refreshes every 2 s: steps advance
        while True:
            step, total = running.first.inner_text().split("step ", 1)[1].split(" ", 1)[0].split("/")
            if int(step) > 0 or time.monotonic() > deadline:
                break
            page.wait_for_timeout(1000)
        assert 0 < int(step) <= int(total)
        long_job = [job for job in jobs.list_jobs(store_root).jobs if job.run_name == "flow-long"][0]
        assert long_job.state == "running"
        choose(page, "Strategy", "downweight-noise (reweight)")  # the reload kept the URL, not the form
        expect(page.get_by_role("button", name="Launch rerun")).to_be_disabled()
        expect(page.get_by_text(f"already running as job {long_job.job_id}").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "flow-3-after-reload.png"), full_page=True)
        set_number(page, "Seed", 1)  # another curriculum: its rerun queues behind the running one
        set_name(page, "flow-queued")
        page.get_by_role("button", name="Launch rerun").click()
        queued = page.get_by_text("flow-queued · queued", exact=False)
        expect(queued.first).to_be_visible()
        queued_job = [job for job in jobs.list_jobs(store_root).jobs if job.run_name == "flow-queued"][0]
        page.locator(f".st-key-cur_cancel_{queued_job.job_id} button").first.click()
        expect(queued).to_have_count(0)
        page.locator(f".st-key-cur_cancel_{long_job.job_id} button").first.click()
        expect(running).to_have_count(0)
        assert [jobs.get_job(store_root, j.job_id).state for j in (queued_job, long_job)] == ["cancelled"] * 2
        long_run = jobs.get_job(store_root, long_job.job_id).run_id  # its training stopped, its run kept
        deadline = time.monotonic() + 60
        while Store(store_root).run_state(long_run)["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert Store(store_root).run_state(long_run)["status"] == "interrupted"

        # 3. A relabel rerun trains to the end; its verdict is shown.
        choose(page, "Strategy", "relabel (relabel)")
        expect(page.get_by_text("Flipped labels given their clean label")).to_be_visible()
        set_number(page, "Epochs", 1)
        set_name(page, "flow-relabel")
        expect(page.get_by_role("button", name="Launch rerun")).to_be_enabled()
        page.get_by_role("button", name="Launch rerun").click()
        outcome = page.get_by_text("Outcome: rerun vs parent").first
        failed = page.get_by_text("rerun flow-relabel failed", exact=False).first
        expect(outcome.or_(failed)).to_be_visible(timeout=TRAINING_TIMEOUT_MS)
        assert not failed.is_visible(), failed.inner_text()
        child_id = run_ids(store_root)["flow-relabel"]
        child = Store(store_root).run_info(child_id)
        assert child["status"] == "finished" and child["parent_run_id"] == ids["cnn-noise20-s1"]
        assert child["config"]["curriculum"] and child["config"]["epochs"] == 1
        verdict = page.get_by_text("the parent's 2 seeds differ by", exact=False).first
        expect(verdict).to_be_visible()
        assert f"→ {100 * child['best_val_accuracy']:.1f} %" in verdict.inner_text()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "flow-4-verdict.png"), full_page=True)

        # 4. A box on the data map's low-confidence, low-variability corner becomes a
        # curriculum that drops it, previewed on the Curriculum page.
        page.goto(f"{base}/run?run={ids['cnn-noise20-s1']}&view=Data+map")
        expect(page.get_by_text("easy-to-learn").first).to_be_visible()
        page.wait_for_timeout(2000)  # the scatter draws after the tab shows
        box_select(page, (0.0, 0.12), (0.0, 0.3))
        heading = page.get_by_role("heading", name="Selection:", exact=False)
        expect(heading).to_be_visible()
        selected = int(heading.inner_text().split(":")[1].split("samples")[0].replace(",", ""))
        assert 0 < selected < 4000
        name = page.get_by_role("textbox", name="Name (optional)")
        name.fill("flow corner")
        name.press("Enter")
        page.wait_for_timeout(800)
        page.get_by_role("button", name="Save curriculum").click()
        expect(page.get_by_text("flow-corner.parquet", exact=False).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "flow-5-selection.png"), full_page=True)
        page.get_by_text("Preview it and launch a rerun on the Curriculum page").click()
        expect(page.get_by_role("heading", name="Curriculum", exact=True)).to_be_visible()
        expect(page.get_by_text("Strategy map-selection", exact=False)).to_be_visible()
        expect(page.get_by_role("combobox", name="Saved curriculum (newest first)")).to_have_value(
            "flow-corner.parquet")
        assert metric(page, "Pruned") == f"{selected:,}"
        assert metric(page, "Kept") == f"{4000 - selected:,}"
        expect(page.get_by_role("button", name="Launch rerun")).to_be_enabled()
        page.screenshot(path=str(ARTIFACTS / "flow-6-saved-preview.png"), full_page=True)
        assert "Traceback" not in page.content()
    finally:
        stop_jobs(store_root)
