"""Online rules (``store/curriculum/online.py``): InfoBatch's plan, Sow et al.'s weights."""

from __future__ import annotations

import numpy as np
import pytest

from store.curriculum import STRATEGIES, build_curriculum, infobatch_plan, normalise_losses, sow_g, sow_weights
from tests.store.curriculum_samples import make_summary

INFOBATCH = STRATEGIES["infobatch"].defaults
LOSS_REWEIGHT = STRATEGIES["loss-reweight"].defaults


def test_infobatch_plan_drop_probabilities_and_weights():
    loss = np.array([0.1, 0.2, 0.3, 1.4])  # mean 0.5: first three are below
    delta = INFOBATCH["delta"]  # the registry's default: full data from epoch 7 of 8
    keep, weight, probability = infobatch_plan(loss, epoch=0, max_epochs=8, prune_ratio=0.5, delta=delta,
                                               rng=np.random.default_rng(0))
    np.testing.assert_allclose(probability, [0.5, 0.5, 0.5, 0.0])
    assert keep[3]
    np.testing.assert_allclose(weight[keep], np.where(probability[keep] > 0, 2.0, 1.0))
    assert (weight[~keep] == 0).all()
    # from delta * max_epochs = 7 on: full data, weight 1
    keep, weight, probability = infobatch_plan(loss, epoch=7, max_epochs=8, prune_ratio=0.5, delta=delta)
    assert keep.all() and (weight == 1).all() and (probability == 0).all()
    # no losses yet: full data
    keep, _, probability = infobatch_plan(np.full(4, np.nan), epoch=0, max_epochs=8, **INFOBATCH)
    assert keep.all() and (probability == 0).all()
    # the drop rate is r in expectation
    big = np.r_[np.zeros(5000), np.ones(5000)]
    keep, _, _ = infobatch_plan(big, 0, 8, prune_ratio=0.3, delta=delta, rng=np.random.default_rng(1))
    assert abs((~keep[:5000]).mean() - 0.3) < 0.03 and keep[5000:].all()
    c = build_curriculum(make_summary(), "infobatch", prune_ratio=0.3)
    assert (c.table["weight"] == 1).all()
    assert c.metadata["online"] == {"rule": "infobatch", "params": {"prune_ratio": 0.3, "delta": 0.875}}


def test_sow_weights():
    losses = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(normalise_losses(losses, 1.0), [-1, 0, 1])
    for g, expected_z in (("linear-upper", [-1, 0, 1]), ("quadratic", [-1, 0, -1]), ("extremes", [1, 0, 1])):
        w = sow_weights(losses, g=g, delta=1.0, tau=0.5)
        z = np.exp(np.array(expected_z) / 0.5)
        np.testing.assert_allclose(w, z / z.sum())
        assert w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(sow_weights(np.full(4, 0.7), **LOSS_REWEIGHT), 0.25)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert sow_weights(rng.random(64) * 5, "quadratic", 2.0, 0.3).sum() == pytest.approx(1.0)


def test_sow_g_functions_by_name():
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(sow_g(x, "linear-upper"), x)
    np.testing.assert_allclose(sow_g(x, "quadratic"), -(x**2))
    np.testing.assert_allclose(sow_g(x, "extremes"), np.abs(x))
    with pytest.raises(ValueError, match="unknown g 'cubic'; expected one of linear-upper, quadratic, extremes"):
        sow_g(x, "cubic")
