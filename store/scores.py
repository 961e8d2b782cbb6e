"""The per-sample scores: what each one is and which direction means "harder".

One registry (model: cleanlab's ``rank.py``): the sort direction lives on the spec, so
every consumer (``trainmap scores``, the dashboard, curriculum builders) ranks the same
way. The values themselves are computed by ``training.scores`` (per presentation) and
``store/sql/summary.sql`` (per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    description: str
    citation: str
    higher_is_harder: bool
    #: never-learned samples rank as the hardest, whatever their value (e.g. forgetting)
    never_learned_hardest: bool = False
    #: what must have been recorded: "presentations" or "grand"
    needs: str = "presentations"


SCORES: dict[str, ScoreSpec] = {
    spec.name: spec
    for spec in (
        ScoreSpec("loss", "mean cross-entropy of the given label", "", True),
        ScoreSpec(
            "el2n",
            "mean ||softmax(logits) - onehot(y)||_2",
            "Paul et al. 2021, Deep Learning on a Data Diet",
            True,
        ),
        ScoreSpec(
            "grand",
            "mean per-sample gradient norm ||grad_theta loss_i||_2",
            "Paul et al. 2021, Deep Learning on a Data Diet",
            True,
            needs="grand",
        ),
        ScoreSpec(
            "grand_last",
            "last-layer GraNd approximation EL2N * sqrt(||h||^2 + 1), h the head's input",
            "Paul et al. 2021 (last-layer bound); DESIGN.md",
            True,
        ),
        ScoreSpec(
            "forgetting_events",
            "correct at one presentation, incorrect at the next; never-learned rank first",
            "Toneva et al. 2019, An Empirical Study of Example Forgetting",
            True,
            never_learned_hardest=True,
        ),
        ScoreSpec(
            "first_learned_epoch",
            "first epoch the sample was classified correctly; never-learned rank first",
            "Toneva et al. 2019",
            True,
            never_learned_hardest=True,
        ),
        ScoreSpec(
            "confidence",
            "mean probability of the given label over epochs",
            "Swayamdipta et al. 2020, Dataset Cartography",
            False,
        ),
        ScoreSpec(
            "variability",
            "population std of the probability of the given label over epochs",
            "Swayamdipta et al. 2020, Dataset Cartography",
            True,
        ),
        ScoreSpec(
            "correctness",
            "fraction of presentations classified correctly",
            "Swayamdipta et al. 2020, Dataset Cartography",
            False,
        ),
        ScoreSpec(
            "aum",
            "area under the margin: mean of (logit_y - max other logit); low = likely mislabeled",
            "Pleiss et al. 2020, Identifying Mislabeled Data using the Area Under the Margin",
            False,
        ),
    )
}


def get_score(name: str) -> ScoreSpec:
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; expected one of {', '.join(SCORES)}")
    return SCORES[name]


def hardness(summary: pd.DataFrame, score: str) -> pd.Series:
    """A float per sample where larger means harder, for any registered score.

    Never-learned samples get +inf for scores that say so; missing values (a score that
    was not recorded for a sample) get NaN and sort last.
    """
    spec = get_score(score)
    values = summary[spec.name].astype("float64")
    key = values if spec.higher_is_harder else -values
    if spec.never_learned_hardest and "never_learned" in summary:
        key = key.where(~summary["never_learned"].fillna(False).astype(bool), np.inf)
    return key


def rank_hardest(summary: pd.DataFrame, score: str) -> pd.DataFrame:
    """``summary`` sorted hardest first by ``score`` (stable: ties keep sample_id order)."""
    key = hardness(summary, score)
    order = np.argsort(-key.fillna(-np.inf).to_numpy(), kind="stable")
    return summary.iloc[order].reset_index(drop=True)


#: Cartography regions (Swayamdipta et al. 2020 read them off the map; these cut-offs
#: make that reading reproducible and are parameters wherever regions are used).
DEFAULT_AMBIGUOUS_VARIABILITY = 0.2
DEFAULT_EASY_CONFIDENCE = 0.5
REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")


def cartography_region(
    confidence: pd.Series,
    variability: pd.Series,
    ambiguous_variability: float = DEFAULT_AMBIGUOUS_VARIABILITY,
    easy_confidence: float = DEFAULT_EASY_CONFIDENCE,
) -> pd.Series:
    """easy-to-learn / ambiguous / hard-to-learn for each sample.

    Ambiguous: variability >= ``ambiguous_variability``; otherwise easy-to-learn when
    confidence >= ``easy_confidence`` and hard-to-learn below it.
    """
    region = np.where(
        variability.to_numpy() >= ambiguous_variability,
        REGIONS[1],
        np.where(confidence.to_numpy() >= easy_confidence, REGIONS[0], REGIONS[2]),
    )
    return pd.Series(region, index=confidence.index, name="region")
