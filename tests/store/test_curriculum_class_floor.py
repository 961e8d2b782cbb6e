"""Per-class floors of the prune strategies and the per-class effect a preview shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from store.curriculum import CurriculumError, build_curriculum
from store.curriculum.class_floor import class_minimums, floored_selection
from store.curriculum.effects import class_effect, effective_sample_count, relabel_counts


def two_classes() -> pd.DataFrame:
    """20 samples: class 0 = ids 0..9 (losses 0.0..0.9, the easy ones), class 1 = ids 10..19
    (losses 1.0..1.9); by loss every class-1 sample is harder than every class-0 one."""
    ids = np.arange(20)
    return pd.DataFrame({"sample_id": ids, "label": (ids >= 10).astype(int), "loss": ids / 10.0,
                         "label_noisy": ids % 7 == 3, "original_label": (ids >= 10).astype(int)})


def kept_ids(curriculum) -> list[int]:
    table = curriculum.table
    return table.loc[table["weight"] > 0, "sample_id"].tolist()


def test_keep_easy_without_a_floor_empties_the_hard_class():
    assert kept_ids(build_curriculum(two_classes(), "keep-easy", "loss", keep=0.5)) == list(range(10))


@pytest.mark.parametrize("class_floor, expected", [
    (1.0, [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]),     # floor(1 * 0.5 * 10) = 5 per class
    (0.4, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]),        # class 1 gets floor(0.4 * 5) = 2, the rest by loss
    (0.0, list(range(10))),
])
def test_keep_easy_with_a_class_floor(class_floor, expected):
    curriculum = build_curriculum(two_classes(), "keep-easy", "loss", keep=0.5, class_floor=class_floor)
    assert kept_ids(curriculum) == expected
    assert curriculum.metadata["params"]["class_floor"] == class_floor


def test_keep_hard_and_offset_with_a_floor_take_each_class_nearest_their_order():
    summary = two_classes()
    assert kept_ids(build_curriculum(summary, "keep-hard", "loss", keep=0.5, class_floor=1.0)) == \
        [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]
    # offset skip 0.5 keep 0.25: the window is ids 10..14; class 0 needs floor(1 * 0.25 * 10) = 2:
    # below the window, the hardest of the skipped (9, 8); class 1 keeps the window's first 2+1
    assert kept_ids(build_curriculum(summary, "offset", "loss", keep=0.25, skip=0.5, class_floor=1.0)) == \
        [8, 9, 10, 11, 12]


@pytest.mark.parametrize("strategy", ["random", "stratified"])
def test_random_and_stratified_meet_the_floor_and_keep_the_budget(strategy):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    summary = pd.DataFrame({"sample_id": np.arange(100), "label": labels,
                            "loss": np.where(labels == 2, 5.0, 0.0) + rng.random(100)})
    params = {"keep": 0.3, "class_floor": 1.0, **({"bins": 2} if strategy == "stratified" else {})}
    curriculum = build_curriculum(summary, strategy, "loss" if strategy == "stratified" else None, seed=1, **params)
    kept = summary.set_index("sample_id").loc[kept_ids(curriculum), "label"].value_counts()
    assert kept.sum() == 30
    for label, size in ((0, 50), (1, 30), (2, 20)):
        assert kept.get(label, 0) >= int(np.floor(0.3 * size))


def test_class_minimums_and_selection_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    assert class_minimums(labels, budget=4, class_floor=1.0) == {0: 2, 1: 1, 2: 0}
    # preference: class 0 first, then 1, then 2; floor 1 forces one of class 1 in
    assert floored_selection(labels, np.arange(7), 4, 1.0).tolist() == [0, 1, 2, 4]
    assert floored_selection(labels, np.arange(7), 4, None).tolist() == [0, 1, 2, 3]


def test_a_floor_outside_0_1_and_a_floor_without_labels_are_refused():
    with pytest.raises(CurriculumError, match=r"class_floor must be in \[0, 1\]"):
        build_curriculum(two_classes(), "keep-easy", "loss", keep=0.5, class_floor=1.5)
    unlabeled = two_classes().assign(label=pd.NA)
    with pytest.raises(CurriculumError, match="class label of every sample"):
        build_curriculum(unlabeled, "keep-easy", "loss", keep=0.5, class_floor=0.5)


def test_class_effect_by_hand():
    summary = two_classes()
    weight = np.where(summary["sample_id"] < 10, 1.0, 0.0)
    weight[10:13] = 1.0  # class 1 keeps 3 of 10
    effect = class_effect(summary, weight, floor=0.5).set_index("label")
    assert effect.loc[0, "kept"] == 10 and effect.loc[1, "kept"] == 3
    assert effect.loc[1, "kept_share"] == pytest.approx(0.3)
    assert effect.loc[1, "weight_share"] == pytest.approx(3 / 13)
    assert effect.loc[1, "weight_ratio"] == pytest.approx((3 / 13) / 0.5)
    assert effect["below_floor"].tolist() == [False, True]


def test_effective_sample_count_is_kish():
    assert effective_sample_count(np.ones(10)) == pytest.approx(10)
    assert effective_sample_count(np.array([1, 1, 0, 0.0])) == pytest.approx(2)
    weights = np.array([0.2, 1.0, 1.0, 0.5])
    assert effective_sample_count(weights) == pytest.approx(2.7 ** 2 / (0.04 + 1 + 1 + 0.25))
    assert effective_sample_count(np.zeros(3)) == 0


def test_relabel_counts_by_hand():
    summary = pd.DataFrame({"label": [1, 2, 0, 0], "original_label": [0, 2, 0, 1],
                            "label_noisy": [True, False, False, True]})
    counts = relabel_counts(summary, np.array([0, 1, 0, 2]))
    assert counts == {"replaced": 3, "flipped": 2, "flipped_fixed": 1, "clean_broken": 1}
