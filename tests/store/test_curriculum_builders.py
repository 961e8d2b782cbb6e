"""Curriculum builders: pruning, reweighting and pacing (``store/curriculum/prune.py``,
``reweight.py``, ``pace.py``), through ``build_curriculum`` and called directly."""

from __future__ import annotations

import numpy as np
import pytest

from store.curriculum import (
    STRATEGIES,
    CurriculumError,
    available_count,
    build_curriculum,
    downweight_noise_hard,
    downweight_noise_soft,
    pacing_fraction,
)
from store.curriculum.registry import PACING_DEFAULTS
from tests.store.curriculum_samples import kept, make_summary


# -- selection --------------------------------------------------------------------------


def test_keep_easy_hard_offset_random():
    s = make_summary()
    assert kept(build_curriculum(s, "keep-easy", "loss", keep=0.3)) == [0, 1, 2]
    assert kept(build_curriculum(s, "keep-hard", "loss", keep=0.3)) == [7, 8, 9]
    assert kept(build_curriculum(s, "keep-easy", "aum", keep=0.2)) == [0, 1]  # high AUM = easy
    assert kept(build_curriculum(s, "offset", "loss", keep=0.4, skip=0.2)) == [2, 3, 4, 5]
    random_a = build_curriculum(s, "random", keep=0.5, seed=3)
    random_b = build_curriculum(s, "random", keep=0.5, seed=3)
    assert kept(random_a) == kept(random_b) and len(kept(random_a)) == 5
    expected = sorted(np.random.default_rng(3).permutation(10)[:5].tolist())
    assert kept(random_a) == expected
    assert set(build_curriculum(s, "keep-easy", "loss", keep=0.3).table["weight"]) == {0.0, 1.0}


def test_forgetting_ranks_never_learned_hardest():
    s = make_summary()
    # forgetting: 8, 9 never learned -> hardest; then 4, 5 (2 events)
    assert kept(build_curriculum(s, "keep-hard", "forgetting_events", keep=0.4)) == [4, 5, 8, 9]


def test_stratified_spends_budget_evenly_over_bins():
    s = make_summary()
    s["loss"] = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 1.0, 0.99]  # bins: 8 low, 2 high
    c = build_curriculum(s, "stratified", "loss", keep=0.4, bins=2, seed=0)
    chosen = kept(c)
    assert len(chosen) == 4
    assert {8, 9} <= set(chosen)  # the small bin is taken whole
    assert len(set(chosen) & set(range(8))) == 2
    assert kept(build_curriculum(s, "stratified", "loss", keep=0.4, bins=2, seed=0)) == chosen


# -- reweighting ----------------------------------------------------------------------------


def test_upweight_hard_weights():
    c = build_curriculum(make_summary(), "upweight-hard", "loss", alpha=1.0)
    raw = 1 + np.arange(10) / 9
    np.testing.assert_allclose(c.table["weight"], raw / raw.mean())
    assert c.table["weight"].mean() == pytest.approx(1.0)


def test_downweight_noise_threshold_fraction_cartography_soft():
    s = make_summary()
    by_threshold = build_curriculum(s, "downweight-noise", "aum", threshold=-0.5)  # aum <= -0.5: 7, 8, 9
    assert by_threshold.table["weight"].tolist() == [1.0] * 7 + [0.0] * 3
    by_fraction = build_curriculum(s, "downweight-noise", "el2n", fraction=0.2, floor=0.25)
    assert by_fraction.table["weight"].tolist() == [1.0] * 8 + [0.25] * 2
    forgetting = build_curriculum(s, "downweight-noise", "forgetting_events", threshold=2)
    assert forgetting.table.loc[forgetting.table["weight"] == 0, "sample_id"].tolist() == [4, 5, 8, 9]
    carto = build_curriculum(s, "downweight-noise", "cartography")
    # hard-to-learn: confidence < 0.5 and variability < 0.2 -> 7, 8, 9 (6 is ambiguous)
    assert carto.table.loc[carto.table["weight"] == 0, "sample_id"].tolist() == [7, 8, 9]
    soft = build_curriculum(s, "downweight-noise", "loss", fraction=0.2, mode="soft", temperature=0.1)
    q = np.arange(10) / 9
    np.testing.assert_allclose(soft.table["weight"], 1 / (1 + np.exp((q - 0.8) / 0.1)))
    assert soft.metadata["params"] == {"fraction": 0.2, "mode": "soft", "floor": 0.0, "temperature": 0.1}


def test_class_balance():
    c = build_curriculum(make_summary(), "class-balance")
    # labels: six 0s, three 1s, one 2 -> N / (C n_c) = 10/18, 10/9, 10/3
    expected = [10 / 18] * 6 + [10 / 9] * 3 + [10 / 3]
    np.testing.assert_allclose(c.table["weight"], expected)
    assert c.metadata["score"] is None


def test_downweight_noise_modes_are_two_named_builders():
    s = make_summary()
    soft = build_curriculum(s, "downweight-noise", "loss", fraction=0.2, mode="soft", temperature=0.1)
    assert soft.table.equals(downweight_noise_soft(s, "loss", fraction=0.2, temperature=0.1))
    hard = build_curriculum(s, "downweight-noise", "el2n", fraction=0.2, floor=0.25)
    assert hard.table.equals(downweight_noise_hard(s, "el2n", fraction=0.2, threshold=None, floor=0.25))
    assert hard.metadata["params"] == {"fraction": 0.2, "mode": "hard", "floor": 0.25}  # no temperature
    assert STRATEGIES["downweight-noise"].modes == {"hard": downweight_noise_hard, "soft": downweight_noise_soft}
    # soft mode uses neither floor nor threshold, and refuses both out of place, as --mode soft always did
    with pytest.raises(CurriculumError, match="floor must be in"):
        build_curriculum(s, "downweight-noise", "loss", mode="soft", floor=2)
    with pytest.raises(CurriculumError, match="needs a score and fraction"):
        build_curriculum(s, "downweight-noise", "loss", mode="soft", threshold=0.5)
    with pytest.raises(CurriculumError, match="needs a score and fraction"):
        build_curriculum(s, "downweight-noise", "cartography", mode="soft")


# -- pacing ----------------------------------------------------------------------------------


def test_pacing_fractions_per_epoch():
    epochs = np.arange(6)
    # the registry's defaults for what each call leaves out (root: power 2, a square root)
    stages, power = PACING_DEFAULTS["stages"], PACING_DEFAULTS["power"]
    np.testing.assert_allclose(pacing_fraction(epochs, "linear", 0.2, 4, stages, power), [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    np.testing.assert_allclose(
        pacing_fraction(epochs, "root", 0.2, 4, stages, power), np.sqrt(0.04 + 0.96 * np.minimum(epochs / 4, 1))
    )
    np.testing.assert_allclose(pacing_fraction(epochs, "geometric", 0.25, 2, stages, power)[:3], [0.25, 0.5, 1.0])
    np.testing.assert_allclose(pacing_fraction(epochs, "step", 0.2, 4, stages=2, power=power), [0.2, 0.2, 0.6, 0.6, 1.0, 1.0])
    assert available_count(1, 10, pacing="linear", r0=0.2, duration=4, stages=stages, power=power) == 4


def test_easy_to_hard_and_anti_curriculum_start_epochs():
    s = make_summary()
    c = build_curriculum(s, "easy-to-hard", "loss", pacing="linear", r0=0.2, duration=4)
    # counts per epoch 2, 4, 6, 8, 10 -> samples 0-1 at 0, 2-3 at 1, ...
    assert c.table["start_epoch"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert c.table["stage"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert (c.table["weight"] == 1).all()
    anti = build_curriculum(s, "anti-curriculum", "loss", pacing="step", r0=0.2, duration=4, stages=2)
    # counts 2, 2, 6, 6, 10; hardest first
    assert anti.table["start_epoch"].tolist() == [4, 4, 4, 4, 2, 2, 2, 2, 0, 0]
    sp = build_curriculum(s, "self-paced", "loss", r0=0.5, duration=2)
    assert sp.metadata["online"] == {"rule": "self-paced", "params": {"pacing": "linear", "r0": 0.5, "duration": 2,
                                                                       "stages": 4, "power": 2.0}}


def test_averaged_scores_from_several_runs(store):
    from store import sample_summary
    from tests.conftest import write_synthetic_run

    p1 = np.tile(np.linspace(0.9, 0.1, 6)[:, None], (1, 3))
    p2 = np.tile(np.linspace(0.1, 0.9, 6)[:, None], (1, 3))
    p2[0] = 0.95  # in run 2 sample 0 is still easiest; sample 1 is averaged to the middle
    runs = [write_synthetic_run(store, p > 0.5, p, p - 0.5) for p in (p1, p2)]
    summary = sample_summary(store, runs)
    c = build_curriculum(summary, "keep-easy", "loss", keep=1 / 6, source_runs=runs)
    assert kept(c) == [0]
    assert c.metadata["source_runs"] == runs
