"""The analysis experiments: numbers computed from runs already in the store (their
``deps``), each returned as its record's result."""

from __future__ import annotations

import time
from typing import Any


def noise_averaged(runner: Any, experiment: Any) -> dict[str, Any]:
    """Noise detection by every score averaged over the seeds' runs (same noisy labels)."""
    from store import sample_summary
    from training.evidence.metrics import noise_detection

    runs = [runner.run_id(key) for key in experiment.settings["runs"]]
    return {"runs": runs, "noise": noise_detection(sample_summary(runner.store, runs))}


def stability(runner: Any, experiment: Any) -> dict[str, Any]:
    """Spearman correlations of the scores across seeds and between the two models."""
    from store import run_summary
    from training.evidence.metrics import stability as correlations

    runs = experiment.settings["runs"]
    models = list(runs)
    summaries = {model: [run_summary(runner.store, runner.run_id(key)) for key in keys] for model, keys in runs.items()}
    result: dict[str, Any] = {"models": models, "seeds": len(runs[models[0]])}
    result["spearman"] = correlations(summaries, models[0], models[1] if len(models) > 1 else None)
    return result


def cost(runner: Any, experiment: Any) -> dict[str, Any]:
    """Wall times: plain training, recorded training, recorded with each GraNd schedule, and
    the per-sample summary queries (materialised at compaction, and recomputed by DuckDB over
    an epoch window)."""
    from store import run_summary

    s = experiment.settings
    plain = runner.records.result(s["plain"])
    recorded = runner.records.result(s["recorded"])
    grand = {schedule: runner.records.result(key) for schedule, key in s["grand"].items()}
    run_id = next(iter(grand.values()))["run_id"]
    epochs = len(next(iter(grand.values()))["val_loss"])
    timings = {}
    for label, window in (("summary (materialised)", None), ("summary (DuckDB over all epochs)", (0, epochs - 1))):
        started = time.perf_counter()
        run_summary(runner.store, run_id, window)
        timings[label] = time.perf_counter() - started
    return {
        "plain_seconds": plain["wall_seconds"],
        "recorded_seconds": recorded["wall_seconds"],
        "grand_seconds": {schedule: r["wall_seconds"] for schedule, r in grand.items()},
        "query_seconds": timings,
        "plain_cpu_seconds": plain.get("cpu_seconds"),
        "recorded_cpu_seconds": recorded.get("cpu_seconds"),
        "grand_cpu_seconds": {schedule: r.get("cpu_seconds") for schedule, r in grand.items()},
    }


ANALYSES = {"noise-averaged": noise_averaged, "stability": stability, "cost": cost}
