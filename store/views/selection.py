"""A curriculum from samples picked by hand on the data map (a box or lasso selection).

Three actions, one weight table each (every sample of the run gets a row):

* ``drop``: the selection gets weight 0, every other sample 1;
* ``down-weight``: the selection gets ``weight``, every other sample 1;
* ``keep-only``: the selection gets 1, every other sample 0.

The result is a ``store.curriculum.Curriculum`` made through its public constructor, with
the provenance (source run, action, weight, how many samples were selected) in its metadata,
so ``trainmap train --curriculum FILE`` reads it like any built curriculum.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

import numpy as np
import pandas as pd

from store.curriculum import FORMAT_VERSION, Curriculum, CurriculumError

#: The strategy name the file records.
SELECTION_STRATEGY = "map-selection"
SELECTION_ACTIONS = ("drop", "down-weight", "keep-only")


def selection_curriculum(
    sample_ids: Sequence[int],
    selected: Sequence[int],
    action: str,
    weight: float = 0.5,
    *,
    source_run: str,
    task: str | None = None,
    name: str | None = None,
) -> Curriculum:
    """The curriculum that applies ``action`` to the ``selected`` samples of a run.

    ``sample_ids``: every sample of the run (each gets a row); ``selected``: the picked
    ones, all of them among ``sample_ids``; ``weight``: the selection's weight for
    ``down-weight`` (finite, >= 0, below 1), ignored otherwise. Raises ``CurriculumError``
    for an unknown action, an empty or foreign selection, a bad weight, or a table that
    keeps no sample.
    """
    if action not in SELECTION_ACTIONS:
        raise CurriculumError(f"unknown selection action {action!r}; expected one of {', '.join(SELECTION_ACTIONS)}")
    ids = np.unique(np.asarray(sample_ids, dtype=np.int64))
    chosen = np.unique(np.asarray(selected, dtype=np.int64))
    if chosen.size == 0:
        raise CurriculumError("the selection is empty; select samples on the data map (box or lasso) first")
    foreign = chosen[~np.isin(chosen, ids)]
    if foreign.size:
        raise CurriculumError(f"{foreign.size} selected sample_id(s) are not in run {source_run!r}, "
                              f"e.g. {', '.join(map(str, foreign[:5].tolist()))}")
    in_selection = np.isin(ids, chosen)
    if action == "drop":
        weights = np.where(in_selection, 0.0, 1.0)
    elif action == "keep-only":
        weights = np.where(in_selection, 1.0, 0.0)
    else:
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and 0 <= weight < 1):
            raise CurriculumError(f"down-weight needs a weight in [0, 1), got {weight!r}")
        weights = np.where(in_selection, float(weight), 1.0)
    if not (weights > 0).any():
        raise CurriculumError(f"{action} of these {chosen.size} samples keeps no sample of run {source_run!r}")
    params: dict[str, object] = {"action": action, "selected": int(chosen.size)}
    if action == "down-weight":
        params["weight"] = float(weight)
    metadata: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "source_runs": [source_run],
        "score": None,
        "strategy": SELECTION_STRATEGY,
        "kind": "reweight" if action == "down-weight" else "prune",
        "params": params,
        "seed": 0,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "online": None,
    }
    if name:
        metadata["name"] = name
    return Curriculum(pd.DataFrame({"sample_id": ids, "weight": weights}), metadata)
