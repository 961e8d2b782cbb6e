"""A curriculum under data-parallel training: ``DistributedCurriculumSampler`` shares one
``training.curriculum_run.CurriculumSampler`` epoch among ranks, and the ``gathered_*`` hooks
let an online rule decide on the losses of every rank.

Every rank computes the same global epoch order (the wrapped sampler's: weights, start
epochs, an online rule's plan, seeded by ``(seed, epoch)``), makes its length a multiple of
the number of ranks the way ``torch.utils.data.DistributedSampler`` does, and takes its
strided share ``order[rank::num_replicas]``:

* ``drop_last=False`` (default): the order is padded by repeating its first draws (at most
  ``num_replicas - 1`` of them); these are the only draws repeated across ranks that the
  curriculum itself did not ask for (it asks when an epoch cycles a pool smaller than
  its length: ``keep_steps``, pacing);
* ``drop_last=True``: the order's tail is trimmed (at most ``num_replicas - 1`` draws).

Summed over ranks, an epoch's draws are the single-process sampler's (same seed) plus the
padding, or minus the trimmed tail. Step ``j`` of every rank (batch size ``b``) together
covers the global order's block ``[j * b * num_replicas, (j + 1) * b * num_replicas)``: the
step of one process with batch ``b * num_replicas``.

A plain PyTorch DDP loop (``torch.distributed`` initialised)::

    sampler = DistributedCurriculumSampler(CurriculumSampler.from_file(path, dataset_size=n))
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader: ...

Lightning keeps the sampler as it is: it is a ``DistributedSampler`` by type, and the
Trainer's ``use_distributed_sampler`` replaces only samplers that are not. Its ranks are
read from ``torch.distributed`` when the epoch is drawn (the process group does not exist
yet when the DataLoader is built); without one it is a single process.

Online rules: ``gathered_batch_losses`` wraps an ``on_batch_losses`` hook (InfoBatch and
self-paced keep the latest loss of each sample) so that every rank records the losses of
all ranks' batches, and the plan, computed on each rank, is the same everywhere.
``gathered_online_weights`` wraps a loss-reweighting hook so the rule weighs the step's
global batch and each rank trains with its slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DistributedSampler

from store.curriculum.errors import CurriculumError
from training.curriculum_run import CurriculumSampler

__all__ = [
    "DistributedCurriculumSampler",
    "gather_losses",
    "gathered_batch_losses",
    "gathered_online_weights",
    "world",
]


def world() -> tuple[int, int]:
    """``(num_replicas, rank)`` of the default ``torch.distributed`` group; ``(1, 0)`` when
    it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def padded_length(length: int, num_replicas: int, drop_last: bool) -> int:
    """The epoch's global length once made a multiple of ``num_replicas``, as
    ``torch.utils.data.DistributedSampler`` computes it (``total_size``)."""
    if drop_last and length % num_replicas:
        return math.ceil((length - num_replicas) / num_replicas) * num_replicas
    return math.ceil(length / num_replicas) * num_replicas


def pad_or_trim(order: np.ndarray, total: int) -> np.ndarray:
    """``order`` trimmed to ``total`` draws, or padded by repeating its start (the whole
    order as often as needed, like ``DistributedSampler``)."""
    if total <= len(order):
        return order[:total]
    repeats = math.ceil(total / len(order))
    return np.tile(order, repeats)[:total]


class DistributedCurriculumSampler(DistributedSampler):
    """This rank's share of ``sampler``'s epochs.

    Args:
        sampler: the single-process curriculum sampler; its weights, start epochs, plan and
            seed define the global order (it is driven through ``set_epoch`` and iteration).
        num_replicas, rank: explicit, or (``None``) read from ``torch.distributed`` at each
            epoch's draw; a single process when it is not initialised.
        drop_last: trim the epoch to a multiple of ``num_replicas`` instead of padding it.

    Each pass is the next epoch unless ``set_epoch`` says otherwise, as for
    ``CurriculumSampler``. ``state_dict`` holds the epoch, how many positions this rank has
    yielded in it, and the epoch's pool, so ``load_state_dict`` resumes mid-epoch with the
    very draws an uninterrupted run would make (the plan is not asked again; a plan's side
    effects, such as InfoBatch's per-epoch loss weights, are its owner's to restore).
    """

    # DistributedSampler.__init__ is not called: it needs the dataset's length and the
    # process group at construction; here both are read per epoch.
    def __init__(
        self,
        sampler: CurriculumSampler,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(sampler, CurriculumSampler):
            raise CurriculumError(
                f"DistributedCurriculumSampler wraps a CurriculumSampler, got {type(sampler).__name__}")
        if (num_replicas is None) != (rank is None):
            raise CurriculumError("give both num_replicas and rank, or neither (read from torch.distributed)")
        if num_replicas is not None and not 0 <= rank < num_replicas:
            raise CurriculumError(f"rank {rank} is outside [0, {num_replicas}); expected 0 <= rank < num_replicas")
        self.sampler = sampler
        self.fixed_world = None if num_replicas is None else (int(num_replicas), int(rank))
        self.drop_last = bool(drop_last)
        self.shuffle = True  # the order is the curriculum's, seeded by (seed, epoch)
        self.epoch = sampler.epoch
        self.completed: int | None = None  # the last epoch whose pass ran to its end
        self.position = 0  # positions yielded in the epoch in progress
        self.in_progress: int | None = None
        self.pool: np.ndarray | None = None  # the epoch in progress's pool (sorted positions)
        self.global_length = 0
        #: how many of this rank's draws in the epoch in progress are padding (its last ones)
        self.padded_draws = 0
        self.real_draws = 0  # ... and how many are not (its first ones)
        self.pass_start = 0  # the position this rank's pass over the epoch in progress began at
        self.resume: dict[str, Any] | None = None

    # -- ranks and sizes (DistributedSampler's attribute names) -------------------------

    @property
    def num_replicas(self) -> int:
        return self.fixed_world[0] if self.fixed_world else world()[0]

    @property
    def rank(self) -> int:
        return self.fixed_world[1] if self.fixed_world else world()[1]

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def total_size(self) -> int:
        """The current epoch's global length after padding or trimming."""
        return padded_length(self.epoch_length(self.current_epoch()), self.num_replicas, self.drop_last)

    @property
    def num_samples(self) -> int:
        """This rank's draws in the current epoch (all of it, resumed or not)."""
        return self.total_size // self.num_replicas

    # -- epochs --------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.completed = None
        if self.resume is not None and self.resume["epoch"] != self.epoch:
            self.resume = None

    def current_epoch(self) -> int:
        """The epoch the next pass draws: after a whole pass over epoch e with no
        ``set_epoch`` since, e + 1."""
        return self.epoch + 1 if self.completed == self.epoch else self.epoch

    def epoch_length(self, epoch: int) -> int:
        """The single-process sampler's number of draws in ``epoch``."""
        if self.resume is not None and self.resume["epoch"] == epoch:
            return int(self.resume["length"])
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def global_order(self, epoch: int) -> np.ndarray:
        """The single-process sampler's draws of ``epoch`` (before padding or trimming)."""
        if self.resume is not None and self.resume["epoch"] == epoch:
            # the saved pool, drawn by a sampler with no plan: the same seeded permutations
            pool = self.resume["pool"]
            weights = np.zeros(len(self.sampler.weights))
            weights[pool] = 1.0
            drawer = CurriculumSampler(weights, num_samples=int(self.resume["length"]), seed=self.seed)
        else:
            drawer = self.sampler
            pool = None
        drawer.set_epoch(epoch)
        length = len(drawer)
        order = np.fromiter(iter(drawer), dtype=np.int64, count=length)
        self.pool = pool if pool is not None else np.asarray(drawer.eligible(epoch), dtype=np.int64)
        return order

    def share(self, epoch: int) -> np.ndarray:
        """This rank's positions in ``epoch``, from the epoch's start."""
        num_replicas, rank = self.num_replicas, self.rank
        order = self.global_order(epoch)
        total = padded_length(len(order), num_replicas, self.drop_last)
        if total == 0:
            raise CurriculumError(
                f"epoch {epoch} draws {len(order)} samples, fewer than the {num_replicas} ranks: with "
                "drop_last=True no rank gets any; expected drop_last=False"
            )
        self.global_length = len(order)
        # padded draws sit at global indices len(order)..total-1: this rank's are its last
        real = range(rank, min(total, len(order)), num_replicas)
        self.padded_draws = len(range(rank, total, num_replicas)) - len(real)
        self.real_draws = len(real)
        return pad_or_trim(order, total)[rank::num_replicas]

    def unpadded_draws(self) -> int | None:
        """This rank's draws of the epoch in progress that are not padding, counted from where
        its pass began (a resumed pass starts mid-epoch); None before the first pass. The
        recorder writes no row past them (``training.recording_padding``)."""
        if self.in_progress is None:
            return None
        return max(0, self.real_draws - self.pass_start)

    def __len__(self) -> int:
        epoch = self.current_epoch()
        skipped = int(self.resume["position"]) if self.resume is not None and self.resume["epoch"] == epoch else 0
        return self.num_samples - skipped

    def __iter__(self) -> Iterator[int]:
        epoch = self.current_epoch()
        self.epoch = epoch
        positions = self.share(epoch)
        start = 0
        if self.resume is not None and self.resume["epoch"] == epoch:
            start = int(self.resume["position"])
        self.resume = None
        self.in_progress, self.position, self.pass_start = epoch, start, start
        self.completed = None
        last = len(positions) - 1
        for index in range(start, len(positions)):
            self.position += 1
            if index == last:  # handed out the pass's last draw (see CurriculumSampler.__iter__)
                self.completed = epoch
            yield int(positions[index])
        self.completed = epoch  # also a pass resumed at its end, which draws nothing

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where this rank is: ``epoch`` and ``position`` (positions yielded in it; with
        DataLoader workers prefetching, set ``position`` to the number trained on), and for
        an epoch in progress its ``pool`` (packed bits) and global ``length``."""
        if self.resume is not None:
            return dict(self.resume, pool=pack_pool(self.resume["pool"], len(self.sampler.weights)))
        epoch = self.current_epoch()
        mid_epoch = self.in_progress == epoch and self.completed != epoch and self.position > 0
        if not mid_epoch:
            return {"epoch": epoch, "position": 0, "num_replicas": self.num_replicas}
        return {
            "epoch": epoch,
            "position": self.position,
            "num_replicas": self.num_replicas,
            "length": self.global_length,
            "pool": pack_pool(self.pool, len(self.sampler.weights)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken (the next pass is the rest of its epoch)."""
        epoch, position = int(state["epoch"]), int(state["position"])
        self.set_epoch(epoch)
        self.resume = None
        if position == 0:
            return
        if int(state["num_replicas"]) != self.num_replicas:
            raise CurriculumError(
                f"the checkpoint was taken mid-epoch with {state['num_replicas']} ranks, this run has "
                f"{self.num_replicas}; expected the same number of ranks, or a checkpoint at an epoch's end"
            )
        pool = unpack_pool(state["pool"], len(self.sampler.weights))
        self.resume = {"epoch": epoch, "position": position, "num_replicas": int(state["num_replicas"]),
                       "length": int(state["length"]), "pool": pool}


def pack_pool(pool: np.ndarray, size: int) -> Tensor:
    """Sorted positions as a bit mask over ``size`` positions (a uint8 tensor: a checkpoint
    loads it with ``weights_only=True``)."""
    mask = np.zeros(size, dtype=bool)
    mask[pool] = True
    return torch.from_numpy(np.packbits(mask))


def unpack_pool(packed: Tensor, size: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8))
    if len(bits) < size or bits[size:].any():
        raise CurriculumError(f"the saved pool does not fit a dataset of {size} positions; expected the same dataset")
    return np.flatnonzero(bits[:size]).astype(np.int64)


# -- losses from all ranks ---------------------------------------------------------------


def gather_by_rank(sample_ids: Tensor, losses: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every rank's ``(sample_ids, losses)`` (int64, float64 NumPy), in rank order; this
    rank's alone when ``torch.distributed`` is not initialised. Ranks may hold different
    counts. Collective: every rank calls it with its own batch."""
    ids = sample_ids.detach().reshape(-1).to(torch.int64)
    values = losses.detach().reshape(-1).to(torch.float64)
    if len(ids) != len(values):
        raise ValueError(f"{len(ids)} sample ids but {len(values)} losses; expected one loss per sample")
    num_replicas, _ = world()
    if num_replicas == 1:
        return [(ids.cpu().numpy(), values.cpu().numpy())]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    count = torch.tensor([len(ids)], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(num_replicas)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    # ids and the losses' bits travel in one int64 tensor, padded to the largest batch
    packed = torch.zeros((2, max(sizes)), dtype=torch.int64, device=device)
    packed[0, : len(ids)] = ids.to(device)
    packed[1, : len(ids)] = values.to(device).view(torch.int64)
    parts = [torch.empty_like(packed) for _ in range(num_replicas)]
    dist.all_gather(parts, packed)
    result = []
    for part, size in zip(parts, sizes):
        part = part[:, :size].cpu()
        result.append((part[0].numpy(), part[1].contiguous().view(torch.float64).numpy()))
    return result


def gather_losses(sample_ids: Tensor, losses: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' ``(sample_ids, losses)`` of this step, concatenated in rank order (this
    rank's when not distributed)."""
    parts = gather_by_rank(sample_ids, losses)
    return np.concatenate([ids for ids, _ in parts]), np.concatenate([values for _, values in parts])


def gathered_batch_losses(hook: Callable[[Tensor, Tensor], None]) -> Callable[[Tensor, Tensor], None]:
    """An ``on_batch_losses`` hook that sees every rank's batch (the same on every rank, so
    a plan computed from what it records agrees across ranks)."""

    def on_batch_losses(sample_ids: Tensor, losses: Tensor) -> None:
        if world()[0] == 1:
            hook(sample_ids, losses)
            return
        ids, values = gather_losses(sample_ids, losses)
        hook(torch.from_numpy(ids), torch.from_numpy(values))

    return on_batch_losses


def gathered_online_weights(hook: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """An ``online_weights`` hook whose rule weighs the step's batch over all ranks; this
    rank gets its slice. ``training.curriculum_run.sow_hook`` scales by the batch it is
    given (here the global one), so each rank's mean loss, averaged over ranks by DDP, is
    the one-process loss of the global batch."""

    def online_weights(sample_ids: Tensor, losses: Tensor) -> Tensor:
        if world()[0] == 1:
            return hook(sample_ids, losses)
        parts = gather_by_rank(sample_ids, losses)
        ids = torch.from_numpy(np.concatenate([part[0] for part in parts]))
        values = torch.from_numpy(np.concatenate([part[1] for part in parts])).to(losses.dtype)
        weights = hook(ids, values)
        start = sum(len(part[0]) for part in parts[: world()[1]])
        return weights[start : start + len(losses)].to(device=losses.device, dtype=losses.dtype)

    return online_weights
