"""Samples a source run never presented: refused until the caller says keep or drop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from store import sample_summary
from store.curriculum import CurriculumError, build_curriculum


def with_gaps() -> pd.DataFrame:
    """8 samples; 2 and 5 never presented (no loss, presentations NA)."""
    loss = np.array([0.1, 0.2, np.nan, 0.4, 0.5, np.nan, 0.7, 0.8])
    return pd.DataFrame({"sample_id": np.arange(8), "label": [0, 1] * 4, "loss": loss,
                         "presentations": pd.array([3, 3, pd.NA, 3, 3, 0, 3, 3], dtype="Int64")})


def test_a_source_with_unscored_samples_is_refused_with_the_counts():
    with pytest.raises(CurriculumError, match=r"^2 of 8 samples were never presented in run r1"):
        build_curriculum(with_gaps(), "keep-easy", "loss", keep=0.5, source_runs=["r1"])


def test_keep_and_drop_rank_only_the_scored_samples():
    # 6 scored samples, keep 0.5 -> the 3 easiest of them: 0, 1, 3
    kept = build_curriculum(with_gaps(), "keep-easy", "loss", keep=0.5, unscored="keep")
    assert kept.table["sample_id"].tolist() == list(range(8))
    assert kept.table["weight"].tolist() == [1, 1, 1, 1, 0, 1, 0, 0]
    assert kept.metadata["unscored"] == {"samples": 2, "treatment": "keep"}
    dropped = build_curriculum(with_gaps(), "keep-easy", "loss", keep=0.5, unscored="drop")
    assert dropped.table["weight"].tolist() == [1, 1, 0, 1, 0, 0, 0, 0]


def test_paced_tables_make_kept_unscored_samples_available_from_the_start():
    curriculum = build_curriculum(with_gaps(), "easy-to-hard", "loss", unscored="keep")
    table = curriculum.table.set_index("sample_id")
    assert table.loc[[2, 5], "start_epoch"].tolist() == [0, 0]
    assert table.loc[[2, 5], "weight"].tolist() == [1, 1]


def test_strategies_without_a_score_and_fully_scored_sources_need_no_choice():
    assert build_curriculum(with_gaps(), "class-balance").summary()["kept"] == 8
    scored = with_gaps().dropna(subset=["loss"])
    assert "unscored" not in build_curriculum(scored, "keep-easy", "loss", keep=0.5).metadata


def test_a_bad_choice_is_refused():
    with pytest.raises(CurriculumError, match="unscored must be one of keep, drop"):
        build_curriculum(with_gaps(), "keep-easy", "loss", keep=0.5, unscored="hard")


def test_the_shipped_pruned_rerun_has_its_pruned_samples_unscored(sample_store):
    from conftest import sample_run_ids

    rerun = sample_run_ids()["cnn-noise20-s0-clean"]
    summary = sample_summary(sample_store, [rerun])
    with pytest.raises(CurriculumError, match=r"^800 of 4000 samples were never presented"):
        build_curriculum(summary, "downweight-noise", "loss", fraction=0.2)
    curriculum = build_curriculum(summary, "downweight-noise", "loss", fraction=0.2, unscored="keep")
    # 0.2 of the 3,200 presented samples are pruned, the 800 never presented are kept
    assert curriculum.summary()["pruned"] == 640
    presented = summary["presentations"].fillna(0).to_numpy() > 0
    weights = curriculum.weights_for(summary["sample_id"].to_numpy())
    assert (weights[~presented] == 1).all()
