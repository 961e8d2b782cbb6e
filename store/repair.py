"""``trainmap repair``: bring the runs a dead process left behind to a state every reader agrees on.

A run whose training process died (killed with its whole group, its node lost, killed during
the end-of-run compaction) may say ``running`` in run.json and keep its segments uncompacted.
Readers already show it right (``Store.run_state``: ``interrupted``) and read its segments;
repairing writes that down:

- run.json gets the status a reader shows, with the reason, and a ``finished_at``; a run that
  had recorded all its ``max_epochs`` when it died (so it died compacting) is ``finished``;
- its segments are compacted (``store.queries.compact_run``, which picks up where an
  interrupted compaction stopped: tables already compacted are kept, the rest are written,
  then the segments are removed), so no row is lost or counted twice.

A run that is still training is left alone, and so is one that needs nothing.
"""

from __future__ import annotations

from store.errors import StoreError
from store.layout import Store, utc_now
from store.queries import compact_run
from store.schema import SEGMENT_TABLES

__all__ = ["needs_compaction", "repair_run"]


def needs_compaction(store: Store, run_id: str) -> bool:
    """Whether the run still has segments, or misses a compacted table."""
    run_path = store.run_dir(run_id)
    return any((run_path / name).is_dir() or not (run_path / f"{name}.parquet").exists() for name in SEGMENT_TABLES)


def repair_run(store: Store, run_id: str) -> str | None:
    """Repair one run (module docstring); returns what was done, or None when nothing was."""
    info = store.run_info(run_id)
    state = store.run_state(run_id)
    if state["status"] == "running":
        return None  # alive: its own process will finish it
    compact = needs_compaction(store, run_id)
    damaged = store.damaged_file(run_id) if compact else None
    if damaged is not None:  # refuse before writing anything: the files are the user's to restore
        raise StoreError(f"cannot repair run {run_id}: {damaged} (nothing was changed)")
    done = []
    if info["status"] == "running":
        epochs, planned = int(info.get("epochs_done") or 0), info.get("max_epochs")
        if isinstance(planned, int) and planned > 0 and epochs >= planned:
            status, error = "finished", None
            done.append(f"marked finished (all {planned} epochs recorded; its process died while compacting)")
        else:
            status, error = "interrupted", state.get("error")
            done.append(f"marked interrupted ({error})")
        store.update_run(run_id, status=status, error=error, finished_at=info.get("finished_at") or utc_now())
    if compact:
        try:
            compact_run(store, run_id)
        except (StoreError, OSError) as error:
            raise StoreError(f"run {run_id}: compaction failed ({error}); its segments are kept") from error
        done.append("compacted")
    return "; ".join(done) or None
