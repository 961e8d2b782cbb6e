"""The evidence report's noise-detection and stability numbers, on cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from training.evidence.metrics import auroc, detection, noise_detection, spearman  # noqa: E402


def test_auroc_and_precision_at_the_noise_rate():
    flipped = np.array([True, True, False, False, False])
    assert auroc(np.array([5, 4, 3, 2, 1]), flipped) == 1.0
    assert auroc(np.array([1, 2, 3, 4, 5]), flipped) == 0.0
    assert auroc(np.ones(5), flipped) == 0.5  # ties count half
    # one flipped sample above all three clean ones, the other above one of them: (3 + 1) / 6
    assert auroc(np.array([9, 2, 5, 3, 1]), flipped) == pytest.approx(4 / 6)
    assert math.isnan(auroc(np.ones(3), np.zeros(3, dtype=bool)))
    # the hardest 2 (the noise rate x N) hold one flipped label
    assert detection(np.array([9, 2, 5, 3, 1]), flipped)["precision_at_rate"] == 0.5


def test_spearman_over_known_pairs():
    a = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    assert spearman(a, np.array([10.0, 20.0, 30.0, 40.0, 0.0])) == pytest.approx(1.0)
    assert spearman(a, np.array([4.0, 3.0, 2.0, 1.0, 9.0])) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0])))  # 2 pairs


def test_noise_detection_orients_each_score_as_hardness():
    # loss high and AUM low on the flipped samples: both detect them perfectly
    summary = pd.DataFrame({"sample_id": range(6), "label_noisy": [True, True, False, False, False, False],
                            "loss": [3.0, 2.5, 0.1, 0.2, 0.3, 0.1], "aum": [-2.0, -1.0, 3.0, 2.0, 2.5, 4.0]})
    found = noise_detection(summary)
    assert found["loss"]["auroc"] == 1.0 and found["aum"]["auroc"] == 1.0
    assert found["loss"]["precision_at_rate"] == 1.0
