"""The per-sample scores: what each one is and which direction means "harder".

One registry (model: cleanlab's ``rank.py``): the sort direction lives on the spec, so
every consumer (``trainmap scores``, the dashboard, curriculum builders) ranks the same
way. The values themselves are computed by ``training.reduce`` (per presentation, on the
training device) and
``store/sql/summary.sql`` (per sample).

Which scores a run has depends on what its recorder could read (run.json ``output_kind``):
a classification run records every presentation quantity but ``token_accuracy``; a sequence
run (logits ``[B, T, V]``) records token means and ``token_accuracy``; a per-sample-loss
run only ``loss``. ``RECORDED_BY_KIND`` says so, and ``store.views.recorded_scores`` finds
the scores a run's summary actually holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from store.settings import OUTPUT_KINDS


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    description: str
    citation: str
    higher_is_harder: bool
    #: never-learned samples rank as the hardest, whatever their value (e.g. forgetting)
    never_learned_hardest: bool = False
    #: the recorded quantity it is derived from (a presentations column, or "grand": the
    #: exact GraNd table), see ``RECORDED_BY_KIND``
    needs: str = "loss"


SCORES: dict[str, ScoreSpec] = {
    spec.name: spec
    for spec in (
        ScoreSpec(
            "loss",
            "mean loss over presentations: cross-entropy of the given label (classification), mean token "
            "cross-entropy (sequences), or the module's per_sample_loss",
            "",
            True,
        ),
        ScoreSpec(
            "el2n",
            "mean ||softmax(logits) - onehot(y)||_2 (sequences: the mean over tokens)",
            "Paul et al. 2021, Deep Learning on a Data Diet",
            True,
            needs="el2n",
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
            needs="grand_last",
        ),
        ScoreSpec(
            "forgetting_events",
            "correct at one presentation, incorrect at the next; never-learned rank first",
            "Toneva et al. 2019, An Empirical Study of Example Forgetting",
            True,
            never_learned_hardest=True,
            needs="correct",
        ),
        ScoreSpec(
            "first_learned_epoch",
            "first epoch the sample was classified correctly; never-learned rank first",
            "Toneva et al. 2019",
            True,
            never_learned_hardest=True,
            needs="correct",
        ),
        ScoreSpec(
            "confidence",
            "mean probability of the given label over epochs",
            "Swayamdipta et al. 2020, Dataset Cartography",
            False,
            needs="p_true",
        ),
        ScoreSpec(
            "variability",
            "population std of the probability of the given label over epochs",
            "Swayamdipta et al. 2020, Dataset Cartography",
            True,
            needs="p_true",
        ),
        ScoreSpec(
            "correctness",
            "fraction of presentations classified correctly",
            "Swayamdipta et al. 2020, Dataset Cartography",
            False,
            needs="correct",
        ),
        ScoreSpec(
            "aum",
            "area under the margin: mean of (logit_y - max other logit); low = likely mislabeled",
            "Pleiss et al. 2020, Identifying Mislabeled Data using the Area Under the Margin",
            False,
            needs="margin",
        ),
        ScoreSpec(
            "token_accuracy",
            "sequences: mean fraction of the tokens that count (ignore_index and the loss mask excluded) "
            "predicted correctly",
            "",
            False,
            needs="token_accuracy",
        ),
    )
}

#: The quantities each output kind records per presentation ("grand" wherever a GraNd
#: schedule asks for it). Everything else is NULL in its rows and in its summary.
RECORDED_BY_KIND: dict[str, frozenset[str]] = {
    "classification": frozenset({"loss", "el2n", "p_true", "correct", "margin", "grand_last", "grand"}),
    "sequence": frozenset({"loss", "el2n", "p_true", "correct", "margin", "token_accuracy", "grand_last", "grand"}),
    "loss": frozenset({"loss", "grand"}),
}


def output_kind(info: dict) -> str:
    """The output kind of a run from its run.json (``classification`` when it names none)."""
    kind = info.get("output_kind") or "classification"
    if kind not in RECORDED_BY_KIND:
        raise ValueError(f"unknown output_kind {kind!r} in run.json; expected one of {', '.join(OUTPUT_KINDS)}")
    return kind


def scores_of_kind(kind: str) -> list[str]:
    """The registered scores a run of this output kind can have (in registry order)."""
    if kind not in RECORDED_BY_KIND:
        raise ValueError(f"unknown output kind {kind!r}; expected one of {', '.join(OUTPUT_KINDS)}")
    return [name for name, spec in SCORES.items() if spec.needs in RECORDED_BY_KIND[kind]]


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


#: Cartography regions (Swayamdipta et al. 2020 read them off the map and, in their
#: experiments, take each region as a third of the data). The cut-offs are computed per run
#: by ``region_cutoffs`` (per-run thirds) unless a caller gives fixed ones.
REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")
#: Quantile of the variability above which a sample is ambiguous: the top third.
AMBIGUOUS_QUANTILE = 2 / 3
#: Quantile of the confidence, among the samples that are not ambiguous, at or above which
#: a sample is easy-to-learn (below it hard-to-learn): the two halves of the other two thirds.
EASY_QUANTILE = 1 / 2
#: How ``region_cutoffs`` cuts, in words (shown by the dashboard and the CLI).
REGION_RULE = (
    "per-run thirds: ambiguous = variability above its 2/3 quantile (the top third); the other "
    "two thirds split at their median confidence: easy-to-learn at or above it, hard-to-learn below"
)


@dataclass(frozen=True)
class RegionCutoffs:
    """Where a run's data map is cut into regions (see ``cartography_region``)."""

    #: a sample is ambiguous when its variability is above this
    ambiguous_variability: float
    #: otherwise easy-to-learn when its confidence is at or above this, hard-to-learn below
    easy_confidence: float


def region_cutoffs(confidence: pd.Series, variability: pd.Series) -> RegionCutoffs:
    """Per-run thirds: the variability's ``AMBIGUOUS_QUANTILE`` and, among the samples at or
    below it, the confidence's ``EASY_QUANTILE`` (linear interpolation, numpy's default).

    Samples without a confidence or variability are left out. Raises ``ValueError`` when
    no sample has both (nothing to cut).
    """
    confidence_values = confidence.to_numpy(dtype=float, na_value=np.nan)
    variability_values = variability.to_numpy(dtype=float, na_value=np.nan)
    scored = ~(np.isnan(confidence_values) | np.isnan(variability_values))
    if not scored.any():
        raise ValueError("no sample has both a confidence and a variability: the run recorded no "
                         "p(label) or presented no sample yet; region cut-offs need at least one")
    ambiguous = float(np.quantile(variability_values[scored], AMBIGUOUS_QUANTILE))
    stable = scored & (variability_values <= ambiguous)
    easy = float(np.quantile(confidence_values[stable], EASY_QUANTILE))
    return RegionCutoffs(ambiguous_variability=ambiguous, easy_confidence=easy)


def cartography_region(
    confidence: pd.Series,
    variability: pd.Series,
    cutoffs: RegionCutoffs | None = None,
) -> pd.Series:
    """easy-to-learn / ambiguous / hard-to-learn for each sample.

    Ambiguous: variability > ``cutoffs.ambiguous_variability``; otherwise easy-to-learn when
    confidence >= ``cutoffs.easy_confidence`` and hard-to-learn below it. Without
    ``cutoffs`` they are ``region_cutoffs`` of these samples (per-run thirds: pass the whole
    run). A sample without a confidence or variability (not presented yet, or a run that
    recorded no p_true) is in no region: a missing value.
    """
    confidence_values = confidence.to_numpy(dtype=float, na_value=np.nan)
    variability_values = variability.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(confidence_values) | np.isnan(variability_values)
    if missing.all():
        return pd.Series([None] * len(confidence), index=confidence.index, name="region", dtype=object)
    if cutoffs is None:
        cutoffs = region_cutoffs(confidence, variability)
    with np.errstate(invalid="ignore"):
        region = np.where(
            variability_values > cutoffs.ambiguous_variability,
            REGIONS[1],
            np.where(confidence_values >= cutoffs.easy_confidence, REGIONS[0], REGIONS[2]),
        ).astype(object)
    region[missing] = None
    return pd.Series(region, index=confidence.index, name="region")
