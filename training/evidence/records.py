"""The evidence records: one small JSON file per finished experiment,
``<out>/results/<key>.json``, written atomically, so an interrupted regeneration resumes where
it stopped and a record committed from another machine is never redone."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from store.files import write_text_atomic
from training.evidence.plan import Experiment


class Records:
    def __init__(self, out: Path) -> None:
        self.folder = Path(out) / "results"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a damaged record is redone

    def result(self, key: str) -> dict[str, Any] | None:
        record = self.get(key)
        return None if record is None else record["result"]

    def write(self, experiment: Experiment, result: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "key": experiment.key,
            "section": experiment.section,
            "kind": experiment.kind,
            "name": experiment.name,
            "settings": experiment.settings,
            "result": result,
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        path = self.path(experiment.key)
        write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=float) + "\n")
        return path
