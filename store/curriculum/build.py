"""Build a curriculum from a per-sample summary with one of the registered strategies.

``build_curriculum`` checks the score, takes each parameter's default from
``store.curriculum.registry``, calls the strategy's builder and records the provenance
(strategy, score, parameters, source runs, seed) in the metadata the file keeps. Samples
the source runs never presented are ranked by no strategy: ``unscored`` says whether they
are kept or pruned (``store.curriculum.unscored``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.format import FORMAT_VERSION, Curriculum
from store.curriculum.registry import Strategy, keyword_arguments, strategy_named, strategy_values
from store.curriculum.reweight import CARTOGRAPHY
from store.curriculum.unscored import check_unscored, unscored_mask, unscored_message, with_unscored
from store.scores import SCORES


def check_score(strategy: Strategy, summary: pd.DataFrame, score: str | None) -> str | None:
    """The score ``strategy`` ranks by (``None`` for one that needs none), checked
    against the strategy and the summary's columns."""
    if not strategy.needs_score:
        return None
    if score is None:
        raise CurriculumError(f"strategy {strategy.name!r} needs a score (one of {', '.join(SCORES)})")
    if score not in strategy.scores:
        raise CurriculumError(f"unknown score {score!r}; expected one of {', '.join(strategy.scores)}")
    needed = ["confidence", "variability"] if score == CARTOGRAPHY else [score]
    missing = [c for c in needed if c not in summary]
    if missing:
        raise CurriculumError(f"the scores have no column {', '.join(missing)}")
    unrecorded = [c for c in needed if summary[c].isna().all()]
    if unrecorded:
        raise CurriculumError(not_recorded_message(score, unrecorded))
    return score


def not_recorded_message(score: str, columns: list[str]) -> str:
    """Why ``score`` cannot rank these runs: its ``columns`` hold no value, and what to record."""
    needs = {SCORES[c].needs for c in columns if c in SCORES}
    if needs & {"p_true", "correct", "margin", "el2n"}:
        return (f"score {score!r} was not recorded for these runs (all values missing): it needs the "
                "probability of the label per presentation, which a run that records only a per-sample "
                "loss does not have; record logits with class or token targets, or choose a loss-based score")
    return f"score {score!r} was not recorded for these runs (all values missing)"


def build_curriculum(
    summary: pd.DataFrame,
    strategy: str,
    score: str | None = None,
    *,
    seed: int = 0,
    task: str | None = None,
    source_runs: list[str] | None = None,
    name: str | None = None,
    unscored: str | None = None,
    **params: Any,
) -> Curriculum:
    """Build a curriculum from a per-sample summary with one of ``STRATEGIES``.

    Parameters not given take the strategy's defaults; a parameter the strategy does not
    use is an error (so a typo never silently does nothing). ``seed`` seeds the
    strategies that draw at random. ``unscored`` ("keep" / "drop"): what happens to samples
    the source runs never presented, when a strategy ranks by a score; such a summary
    without it is refused (``store.curriculum.unscored``).
    """
    spec = strategy_named(strategy)
    values = strategy_values(spec, params)
    check_unscored(unscored)
    if len(summary) == 0:
        raise CurriculumError("the scores have no samples")
    missing = unscored_mask(summary) if spec.needs_score else None
    unscored_count = int(missing.sum()) if missing is not None else 0
    if unscored_count:
        if unscored is None:
            raise CurriculumError(unscored_message(unscored_count, len(summary), list(source_runs or [])))
        if unscored_count == len(summary):
            raise CurriculumError("no sample of the source runs was presented, so none has a score")
        unscored_rows, summary = summary[missing], summary[~missing].reset_index(drop=True)
    score = check_score(spec, summary, score)
    if spec.online_check is not None:  # an online rule's parameters, refused now rather than in training
        spec.online_check(**keyword_arguments(spec.online_check, values))
    if spec.prepare is not None:
        values = spec.prepare(values, score)
    builder = spec.builder_for(values)
    arguments = keyword_arguments(builder, {**values, "seed": seed})
    table = builder(summary, score, **arguments) if spec.needs_score else builder(summary, **arguments)
    if unscored_count:
        table = with_unscored(table, unscored_rows, unscored)
    if not (table["weight"] > 0).any():
        raise CurriculumError(f"strategy {strategy!r} with these parameters keeps no samples")
    recorded = {key: value for key, value in values.items() if value is not None}
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "source_runs": list(source_runs or []),
        "score": score,
        "strategy": strategy,
        "kind": spec.kind,
        "params": recorded,
        "seed": seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "online": None,
    }
    if unscored_count:
        metadata["unscored"] = {"samples": unscored_count, "treatment": unscored}
    if name:
        metadata["name"] = name
    if spec.online_rule:
        metadata["online"] = {"rule": spec.online_rule, "params": dict(recorded)}
    return Curriculum(table, metadata)
