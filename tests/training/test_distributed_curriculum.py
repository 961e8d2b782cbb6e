"""The distributed curriculum sampler: ranks' shares against the single-process sampler,
torch's DistributedSampler padding rule, mid-epoch resume, a chi-squared check of draw
counts, and two real gloo processes gathering losses for an online rule."""

from __future__ import annotations

import io
import pickle
import socket
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import DistributedSampler

from store.curriculum.errors import CurriculumError
from store.curriculum.online import infobatch_plan
from training.curriculum_run import CurriculumSampler, LatestLoss, sow_hook
from training.distributed_curriculum import (
    DistributedCurriculumSampler,
    gather_losses,
    gathered_batch_losses,
    gathered_online_weights,
)

# fractional weights, two pruned positions, pacing: positions 10-19 join at epoch 1, 20-29 at 2
WEIGHTS = np.array([0.25, 1.5, 0.0, 0.75, 2.0, 0.5, 1.0, 0.0, 3.0, 0.1] * 3)
START = np.repeat([0, 1, 2], 10)


def single(seed=7, **kwargs) -> CurriculumSampler:
    return CurriculumSampler(WEIGHTS, START, num_samples=len(WEIGHTS), seed=seed, **kwargs)


def single_order(epoch: int, **kwargs) -> list[int]:
    sampler = single(**kwargs)
    sampler.set_epoch(epoch)
    return list(sampler)


def shares(epoch: int, num_replicas: int, drop_last: bool = False, **kwargs) -> list[list[int]]:
    result = []
    for rank in range(num_replicas):
        sampler = DistributedCurriculumSampler(single(**kwargs), num_replicas=num_replicas, rank=rank,
                                               drop_last=drop_last)
        sampler.set_epoch(epoch)
        result.append(list(sampler))
    return result


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4, 7])
def test_ranks_together_draw_the_single_process_multiset(num_replicas):
    for epoch in range(4):
        order = single_order(epoch)
        pad = -len(order) % num_replicas
        parts = shares(epoch, num_replicas)
        assert len({len(part) for part in parts}) == 1  # every rank takes as many steps
        padded_draws = []
        for rank in range(num_replicas):
            sampler = DistributedCurriculumSampler(single(), num_replicas=num_replicas, rank=rank)
            sampler.set_epoch(epoch)
            share = list(sampler)
            padded_draws.append(share[len(share) - sampler.padded_draws:])
        assert sorted(sum(padded_draws, [])) == sorted(order[:pad])  # each rank knows its padding
        # padding repeats the order's first draws, nothing else is added
        assert Counter(sum(parts, [])) == Counter(order) + Counter(order[:pad])
        trimmed = shares(epoch, num_replicas, drop_last=True)
        assert Counter(sum(trimmed, [])) == Counter(order[: len(order) - len(order) % num_replicas])
        # step j of all ranks (batch b) is the block of b * num_replicas draws of one process
        b = 2
        padded = order + order[:pad]
        for j in range(len(parts[0]) // b):
            step = sorted(sum((part[j * b:(j + 1) * b] for part in parts), []))
            assert step == sorted(padded[j * b * num_replicas:(j + 1) * b * num_replicas])


def test_no_sample_twice_across_ranks_unless_cycled_or_padded():
    # a pool as long as the epoch, divisible by 4: the shares partition the pool
    sampler_args = {"num_samples": None, "seed": 3}
    weights = np.linspace(0.1, 2.0, 24)
    parts = [list(DistributedCurriculumSampler(CurriculumSampler(weights, **sampler_args), num_replicas=4, rank=r))
             for r in range(4)]
    assert sorted(sum(parts, [])) == list(range(24))
    # 10 positions on 4 ranks: the two padded draws are the only ones drawn twice
    order = list(CurriculumSampler(np.ones(10), seed=3))
    parts = [list(DistributedCurriculumSampler(CurriculumSampler(np.ones(10), seed=3), num_replicas=4, rank=r))
             for r in range(4)]
    counts = Counter(sum(parts, []))
    assert sorted(i for i, c in counts.items() if c == 2) == sorted(order[:2])
    assert all(c == 1 for i, c in counts.items() if i not in order[:2])
    # pacing cycles a 7-position pool over 30 draws: repeats are the curriculum's own
    epoch0 = shares(0, 3)
    assert Counter(sum(epoch0, [])) == Counter(single_order(0))
    assert set(sum(epoch0, [])) == set(np.flatnonzero((WEIGHTS > 0) & (START == 0)))


def test_deterministic_by_seed_and_epoch():
    assert shares(2, 3) == shares(2, 3)
    assert shares(2, 3) != shares(2, 3, seed=8)
    assert shares(1, 3) != shares(2, 3)
    # without set_epoch each pass is the next epoch, as for CurriculumSampler
    sampler = DistributedCurriculumSampler(single(), num_replicas=3, rank=1)
    passes = [list(sampler) for _ in range(3)]
    assert passes == [shares(epoch, 3)[1] for epoch in range(3)]
    sampler.set_epoch(1)
    assert list(sampler) == passes[1] and list(sampler) == passes[2]


@pytest.mark.parametrize("pool,num_replicas,drop_last", [
    (10, 4, False), (10, 4, True), (12, 4, False), (2, 5, False), (3, 7, False), (9, 2, True),
])
def test_padding_and_trimming_follow_torch_distributed_sampler(pool, num_replicas, drop_last):
    order = list(CurriculumSampler(np.ones(pool), seed=11))
    for rank in range(num_replicas):
        reference = DistributedSampler(range(pool), num_replicas=num_replicas, rank=rank, shuffle=False,
                                       drop_last=drop_last)
        ours = DistributedCurriculumSampler(CurriculumSampler(np.ones(pool), seed=11), num_replicas=num_replicas,
                                            rank=rank, drop_last=drop_last)
        assert len(ours) == len(reference) == ours.num_samples
        assert ours.total_size == reference.total_size
        assert list(ours) == [order[i] for i in reference]


def test_too_few_draws_to_trim_and_bad_ranks_are_refused():
    with pytest.raises(CurriculumError, match="fewer than the 4 ranks"):
        list(DistributedCurriculumSampler(CurriculumSampler(np.ones(3)), num_replicas=4, rank=0, drop_last=True))
    with pytest.raises(CurriculumError, match=r"rank 3 is outside \[0, 3\)"):
        DistributedCurriculumSampler(single(), num_replicas=3, rank=3)
    with pytest.raises(CurriculumError, match="give both num_replicas and rank"):
        DistributedCurriculumSampler(single(), num_replicas=3)
    with pytest.raises(CurriculumError, match="wraps a CurriculumSampler"):
        DistributedCurriculumSampler(DistributedSampler(range(4), num_replicas=1, rank=0))


def test_not_distributed_it_is_the_single_process_sampler():
    sampler = DistributedCurriculumSampler(single())
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert [list(sampler) for _ in range(3)] == [single_order(epoch) for epoch in range(3)]
    ids, losses = gather_losses(torch.tensor([4, 2]), torch.tensor([0.5, 1.5]))
    assert ids.tolist() == [4, 2] and losses.tolist() == [0.5, 1.5]


class LossPlan:
    """An online plan: the positions whose loss is at most the median of the known ones
    (all while none is known). ``losses`` is what a rule would have learnt by then."""

    def __init__(self, n: int) -> None:
        self.losses = np.full(n, np.nan)

    def __call__(self, epoch: int) -> np.ndarray:
        if np.isnan(self.losses).all():
            return np.ones(len(self.losses), dtype=bool)
        return self.losses <= np.nanmedian(self.losses)


def learnt(epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng(epoch).random(n)


def test_state_dict_resumes_mid_epoch_with_the_same_draws():
    n, num_replicas, rank, cut = 30, 3, 1, 4
    plan = LossPlan(n)
    uninterrupted = DistributedCurriculumSampler(
        CurriculumSampler(np.ones(n), seed=5, plan=plan), num_replicas=num_replicas, rank=rank)
    expected = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        expected.append(list(uninterrupted))
        plan.losses = learnt(epoch, n)  # what the epoch taught the rule

    plan = LossPlan(n)
    first = DistributedCurriculumSampler(CurriculumSampler(np.ones(n), seed=5, plan=plan),
                                         num_replicas=num_replicas, rank=rank)
    first.set_epoch(0)
    assert list(first) == expected[0]
    plan.losses = learnt(0, n)
    first.set_epoch(1)
    drawn = iter(first)
    head = [next(drawn) for _ in range(cut)]
    assert head == expected[1][:cut]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["epoch"] == 1 and state["position"] == cut

    # a new process: its rule has learnt nothing yet, so its plan would pick another pool
    plan = LossPlan(n)
    resumed = DistributedCurriculumSampler(CurriculumSampler(np.ones(n), seed=5, plan=plan),
                                           num_replicas=num_replicas, rank=rank)
    fresh = DistributedCurriculumSampler(CurriculumSampler(np.ones(n), seed=5, plan=LossPlan(n)),
                                         num_replicas=num_replicas, rank=rank)
    fresh.set_epoch(1)
    assert list(fresh)[cut:] != expected[1][cut:]
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # Lightning sets the epoch again when it restarts it
    assert len(resumed) == len(expected[1]) - cut
    assert resumed.state_dict()["position"] == cut
    assert list(resumed) == expected[1][cut:]
    plan.losses = learnt(1, n)  # the rule's owner restores what it had learnt
    assert resumed.state_dict() == {"epoch": 2, "position": 0, "num_replicas": num_replicas}
    assert list(resumed) == expected[2]

    other = DistributedCurriculumSampler(CurriculumSampler(np.ones(n), seed=5), num_replicas=2, rank=0)
    with pytest.raises(CurriculumError, match="mid-epoch with 3 ranks, this run has 2"):
        other.load_state_dict(state)
    other.load_state_dict({"epoch": 4, "position": 0, "num_replicas": 3})  # an epoch's end: any ranks
    assert list(other) == shares_of(CurriculumSampler(np.ones(n), seed=5), 4, 2)[0]


def shares_of(sampler: CurriculumSampler, epoch: int, num_replicas: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    order = list(sampler)
    order += order[: -len(order) % num_replicas]
    return [order[rank::num_replicas] for rank in range(num_replicas)]


def test_chi_squared_draw_counts_match_the_single_process_expectation():
    """Over many epochs each position's draws summed over 3 ranks (padding included) match
    its expectation from the single-process sampler: for each epoch it is drawn from, the
    padded epoch length over the pool size (a weight scales the loss, not the draws)."""
    num_replicas, epochs = 4, 400  # 30 draws an epoch: 2 padded
    reference = single()
    expected = np.zeros(len(WEIGHTS))
    samplers = [DistributedCurriculumSampler(single(), num_replicas=num_replicas, rank=r)
                for r in range(num_replicas)]
    counts = np.zeros(len(WEIGHTS))
    padding_at_start = np.zeros(len(WEIGHTS))
    for epoch in range(epochs):
        reference.set_epoch(epoch)
        pool = reference.eligible(epoch)
        total = -(-len(reference) // num_replicas) * num_replicas
        expected[pool] += total / len(pool)
        for sampler in samplers:
            sampler.set_epoch(epoch)
            np.add.at(counts, list(sampler), 1)
        padding_at_start[pool[0]] += total - len(reference)
    drawn = WEIGHTS > 0
    assert counts.sum() == pytest.approx(expected.sum())
    assert (counts[~drawn] == 0).all()
    assert chisquare(counts[drawn], expected[drawn]).pvalue > 0.01
    # the test has power: padding that always repeated the pool's first position would fail
    biased = counts + padding_at_start
    biased *= counts.sum() / biased.sum()
    assert chisquare(biased[drawn], expected[drawn]).pvalue < 1e-6


# -- two real processes ------------------------------------------------------------------

N, BATCH, EPOCHS, SEED = 23, 3, 4, 5
SAMPLE_IDS = np.arange(N) * 7 + 3


def loss_of(sample_ids: np.ndarray, epoch: int) -> np.ndarray:
    return (((sample_ids * 37 + epoch * 11) % 17) / 7.0).astype(np.float32)


def infobatch(latest: LatestLoss):
    def plan(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([SEED, 7919, epoch])
        keep, _, _ = infobatch_plan(latest.loss, epoch, EPOCHS, 0.5, 1.0, rng=rng)
        return keep

    return plan


def _rank_run(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        latest = LatestLoss(SAMPLE_IDS)
        record = gathered_batch_losses(latest)
        reweigh = gathered_online_weights(sow_hook("quadratic", 1.0, 0.5))
        sampler = DistributedCurriculumSampler(CurriculumSampler(np.ones(N), seed=SEED, plan=infobatch(latest)))
        result = {"world": (sampler.num_replicas, sampler.rank), "epochs": []}
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            positions = np.array(list(sampler))
            steps = []
            for start in range(0, len(positions), BATCH):
                ids = torch.as_tensor(SAMPLE_IDS[positions[start:start + BATCH]])
                losses = torch.as_tensor(loss_of(ids.numpy(), epoch))
                record(ids, losses)
                steps.append((ids.tolist(), reweigh(ids, losses).tolist()))
            result["epochs"].append({"positions": positions.tolist(), "latest": latest.loss.copy(), "steps": steps})
        with open(f"{out}/rank{rank}.pkl", "wb") as file:
            pickle.dump(result, file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch: past 20 s on a busy 2-core machine
def test_two_gloo_processes_draw_and_decide_like_one(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank_run, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    assert [r["world"] for r in ranks] == [(2, 0), (2, 1)]

    # one process: the same sampler and rule, fed the global step blocks
    latest = LatestLoss(SAMPLE_IDS)
    reference = CurriculumSampler(np.ones(N), seed=SEED, plan=infobatch(latest))
    sow = sow_hook("quadratic", 1.0, 0.5)
    pruned_epochs = 0
    for epoch in range(EPOCHS):
        reference.set_epoch(epoch)
        order = list(reference)
        pruned_epochs += len(order) < N
        padded = order + order[: len(order) % 2]
        drawn = ranks[0]["epochs"][epoch]["positions"] + ranks[1]["epochs"][epoch]["positions"]
        assert Counter(drawn) == Counter(padded)
        steps = zip(ranks[0]["epochs"][epoch]["steps"], ranks[1]["epochs"][epoch]["steps"])
        for j, ((ids0, w0), (ids1, w1)) in enumerate(steps):
            block = SAMPLE_IDS[padded[j * 2 * BATCH:(j + 1) * 2 * BATCH]]
            assert sorted(ids0 + ids1) == sorted(block.tolist())
            expected = dict(zip(block.tolist(), sow(torch.as_tensor(block), torch.as_tensor(loss_of(block, epoch)))
                                .tolist()))
            assert np.allclose(w0 + w1, [expected[i] for i in ids0 + ids1], rtol=1e-6)
        latest(torch.as_tensor(SAMPLE_IDS[order]), torch.as_tensor(loss_of(SAMPLE_IDS[order], epoch)))
        for r in ranks:  # both ranks learnt every rank's losses: the next plan agrees
            np.testing.assert_array_equal(r["epochs"][epoch]["latest"], latest.loss)
    assert pruned_epochs >= 2  # InfoBatch did prune, so the plans were tested
