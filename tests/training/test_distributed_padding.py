"""A distributed curriculum's padding draws are left out of the recorded rows
(``training.recording_padding``), and nothing else: the ranks' recorded rows together are
exactly the single-process epoch, a sample the curriculum repeats included, on every split
of the epoch into chunks, after a mid-epoch resume too."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from training.curriculum_run import CurriculumSampler
from training.distributed_curriculum import DistributedCurriculumSampler
from training.recording_padding import PaddingFilter


def curriculum(num_samples: int) -> CurriculumSampler:
    """23 samples kept of 40 (weights 0 elsewhere) drawn ``num_samples`` times an epoch:
    more draws than the pool, so the epoch repeats samples (``--keep-steps``)."""
    weights = np.zeros(40)
    weights[np.arange(0, 40, 40 / 23).astype(int)[:23]] = 1.0
    return CurriculumSampler(weights, num_samples=num_samples, seed=3)


def recorded(sampler: DistributedCurriculumSampler, chunk: int) -> list[int]:
    """The rows a recorder writes for one pass of ``sampler``, handed over ``chunk`` rows at a time."""
    marks = []
    padding = PaddingFilter()
    padding.watch(sampler, lambda: marks.append(True))
    padding.begin_epoch()
    drawn = list(sampler)
    rows = []
    for start in range(0, len(drawn), chunk):
        rows += padding.trim({"sample_id": np.asarray(drawn[start:start + chunk])})["sample_id"].tolist()
    assert marks == [True]  # the run is marked once, before its first rows
    return rows


@pytest.mark.parametrize("num_samples, num_replicas", [(61, 2), (61, 4), (64, 4), (23, 3), (5, 4)])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_the_ranks_record_the_single_process_epoch_exactly(num_samples, num_replicas, chunk):
    for epoch in (0, 1):
        single = curriculum(num_samples)
        single.set_epoch(epoch)
        expected = Counter(int(i) for i in single)
        together: Counter = Counter()
        trained = 0
        for rank in range(num_replicas):
            sampler = DistributedCurriculumSampler(curriculum(num_samples), num_replicas=num_replicas, rank=rank)
            sampler.set_epoch(epoch)
            rows = recorded(sampler, chunk)
            trained += sampler.num_samples
            together.update(rows)
        assert together == expected  # repeats kept, padding gone
        assert trained - sum(together.values()) == (-num_samples) % num_replicas  # the padding, trained on
        if num_samples > 23:
            assert max(expected.values()) > 1  # the curriculum itself repeats samples


def test_a_resumed_pass_records_the_rest_of_the_unpadded_draws():
    sampler = DistributedCurriculumSampler(curriculum(61), num_replicas=2, rank=1)
    sampler.set_epoch(0)
    passing = iter(sampler)
    first = [next(passing) for _ in range(12)]
    state = sampler.state_dict()  # taken mid-epoch, after 12 draws
    whole = first + list(passing)  # rank 1 of 61 draws: 31 positions, the last one padding
    assert (sampler.real_draws, sampler.padded_draws) == (30, 1)
    resumed = DistributedCurriculumSampler(curriculum(61), num_replicas=2, rank=1)
    resumed.load_state_dict(state)
    assert recorded(resumed, 5) == whole[12:30]


def test_without_a_sampler_every_row_is_kept_and_drop_last_has_no_padding():
    padding = PaddingFilter()
    columns = {"sample_id": np.arange(9), "loss": np.ones(9)}
    assert padding.trim(columns) is columns
    sampler = DistributedCurriculumSampler(curriculum(61), num_replicas=4, rank=3, drop_last=True)
    assert sampler.unpadded_draws() is None  # before a pass
    sampler.set_epoch(0)
    assert recorded(sampler, 4) == list(DistributedCurriculumSampler(
        curriculum(61), num_replicas=4, rank=3, drop_last=True))


def test_the_run_is_marked_once_however_many_epochs_watch_the_sampler():
    marks = []
    padding = PaddingFilter()
    sampler = DistributedCurriculumSampler(curriculum(61), num_replicas=2, rank=0)
    for epoch in range(3):  # the recorder watches the sampler again at every epoch start
        padding.watch(sampler, lambda: marks.append(True))
        padding.begin_epoch()
        sampler.set_epoch(epoch)
        padding.trim({"sample_id": np.asarray(list(sampler))})
    assert marks == [True]
