"""Training with a curriculum file: a ``Sampler``, per-sample loss weights, online rules.

``attach_curriculum`` is what ``training.run.train`` calls for ``--curriculum FILE``.
``CurriculumSampler`` works without Lightning::

    sampler = CurriculumSampler.from_file("cur.parquet", dataset_size=len(dataset))
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)          # optional: each pass is the next epoch anyway
        for x, y, *_ in loader: ...

What a file does in training (store.curriculum has the definitions; an online rule's
parameters not in the file take the defaults of ``store.curriculum.registry``):

* ``weight`` > 0: the sample is drawn and its loss is multiplied by its weight (the
  dataset's ``weights``, recorded per presentation); weight 0: never drawn;
* ``start_epoch`` (pacing): the sample is drawn from that epoch on; batches are drawn
  from the available pool and an epoch keeps the full data's number of steps
  (Hacohen & Weinshall 2019 define pacing per step);
* online rules (metadata ``online``): InfoBatch re-plans each epoch from the latest
  losses (shorter epochs, so the dataloader is rebuilt each epoch), self-paced keeps the
  lowest-loss fraction given by the pacing function, loss-reweight multiplies each
  batch's loss weights by ``batch_size * softmax(g(l~)/tau)`` (each presentation
  records the weight actually trained with, that factor included);
* ``keep_steps``: an epoch has as many samples as the full dataset (the parent's step
  count), cycling through the kept ones, so pruned runs compare fairly;
* group weights (strategy ``group-weights``): nothing more than their per-sample weights
  (each sample's group's weight, built from the source run's groups); the rerun's batches
  come from the same task, so its groups are recorded again, and the table is kept on the
  attachment (``group_weights``) and in the curriculum label recorded with the run;
* ``label`` (strategy ``relabel``): the sample trains on that class instead of the
  dataset's (the dataset's ``y`` is replaced before the first batch), so the rerun's
  presentations record the label it trained on; the run's sample table keeps the
  dataset's label and its ``label_noisy`` flag (``relabelled`` on the attachment lists
  the changed samples). A label column is refused for a task without classes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from store.curriculum.errors import CurriculumError
from store.curriculum.format import Curriculum, check_labels, load_curriculum
from store.curriculum.online import infobatch_plan, sow_weights
from store.curriculum.pace import available_count
from store.curriculum.registry import rule_params


class CurriculumSampler(Sampler[int]):
    """Yields dataset positions for one epoch at a time.

    Args:
        weights: per position; positions with weight 0 are never drawn.
        start_epoch: optional per position: drawn only from that epoch on.
        num_samples: samples per epoch; ``None`` = the number eligible that epoch. With a
            number larger than the eligible pool the pool is cycled in fresh permutations.
        seed: the order of epoch ``e`` is a permutation seeded by ``(seed, e)``.
        plan: optional ``epoch -> mask`` of positions an online rule allows that epoch
            (called once per epoch, before the epoch's first batch).

    Each pass over the sampler is the next epoch unless ``set_epoch`` says otherwise
    (Lightning calls ``set_epoch``; a plain loop need not).
    """

    def __init__(
        self,
        weights: np.ndarray,
        start_epoch: np.ndarray | None = None,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        plan: Callable[[int], np.ndarray] | None = None,
    ) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.ndim != 1 or len(self.weights) == 0:
            raise CurriculumError("CurriculumSampler needs a non-empty 1-d array of weights")
        if not (self.weights > 0).any():
            raise CurriculumError("all weights are zero; nothing would be trained on")
        self.start_epoch = None if start_epoch is None else np.asarray(start_epoch, dtype=np.int64)
        self.num_samples = num_samples
        self.seed = int(seed)
        self.plan = plan
        self.epoch = 0
        self._iterated: int | None = None
        self._cache: tuple[int, np.ndarray] | None = None
        #: ``max_epochs -> expected draws per epoch`` when an online rule shortens epochs
        #: (InfoBatch): what the one-cycle schedule is sized for (``expected_fit_steps``)
        self.expected_lengths: Callable[[int], list[int]] | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        dataset_size: int,
        epoch: int = 0,
        sample_ids: np.ndarray | None = None,
        seed: int = 0,
        keep_steps: bool = False,
        task: str | None = None,
    ) -> "CurriculumSampler":
        """A sampler over a dataset whose position i holds ``sample_ids[i]`` (default i)."""
        ids = np.arange(dataset_size) if sample_ids is None else np.asarray(sample_ids)
        curriculum = load_curriculum(path, task=task, sample_ids=ids)
        paced = curriculum.start_epochs_for(ids)
        sampler = cls(
            curriculum.weights_for(ids),
            paced,
            num_samples=dataset_size if (keep_steps or paced is not None) else None,
            seed=seed,
        )
        sampler.set_epoch(epoch)
        return sampler

    # -- epochs ----------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._iterated = None

    def _current_epoch(self) -> int:
        # After a pass over epoch e with no set_epoch since, the next use is epoch e + 1.
        return self.epoch + 1 if self._iterated == self.epoch else self.epoch

    def eligible(self, epoch: int | None = None) -> np.ndarray:
        """Positions drawn from in ``epoch`` (sorted)."""
        epoch = self._current_epoch() if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        mask = self.weights > 0
        if self.start_epoch is not None:
            mask &= self.start_epoch <= epoch
        if self.plan is not None:
            mask &= np.asarray(self.plan(epoch), dtype=bool)
        if not mask.any():  # never an empty epoch: fall back to the file's kept set
            mask = self.weights > 0
        positions = np.flatnonzero(mask)
        self._cache = (epoch, positions)
        return positions

    def __len__(self) -> int:
        if self.num_samples is not None:
            return int(self.num_samples)
        return int(len(self.eligible()))

    def __iter__(self) -> Iterator[int]:
        epoch = self._current_epoch()
        self.epoch = epoch
        pool = self.eligible(epoch)
        length = len(self)
        self._iterated = None  # while the pass runs, len() is this epoch's (Lightning asks mid-pass)
        rng = np.random.default_rng([self.seed, epoch])
        order = [rng.permutation(pool) for _ in range(max(1, math.ceil(length / len(pool))))]
        draws = np.concatenate(order)[:length]
        if not len(draws):
            self._iterated = epoch
            return
        for position in draws[:-1]:
            yield int(position)
        # The pass is whole once its last draw is handed out: a loader that stops after
        # len(self) draws (Lightning does, when the epoch fills its last batch exactly)
        # never resumes the generator past it, and the next len() must be the next epoch's.
        self._iterated = epoch
        yield int(draws[-1])


class LatestLoss:
    """The latest training loss of each position, updated per batch (``on_batch_losses``)."""

    def __init__(self, sample_ids: np.ndarray) -> None:
        ids = np.asarray(sample_ids, dtype=np.int64)
        self.position_of = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        self.position_of[ids] = np.arange(len(ids))
        self.loss = np.full(len(ids), np.nan)

    def __call__(self, sample_ids: Tensor, losses: Tensor) -> None:
        positions = self.position_of[sample_ids.cpu().numpy()]
        self.loss[positions] = losses.detach().float().cpu().numpy()

    # A checkpoint keeps the losses, so that a resumed run plans its next epoch from the
    # same losses as a run that was never stopped (training.run.OnlineRuleState).
    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        loss = np.asarray(state["loss"], dtype=np.float64)
        if loss.shape != self.loss.shape:
            raise CurriculumError(f"the checkpoint holds the latest losses of {len(loss)} samples, expected "
                                  f"{len(self.loss)}: it belongs to another dataset or curriculum")
        self.loss = loss.copy()


@dataclass
class CurriculumAttachment:
    """What ``training.run.train`` wires into the DataLoader, Classifier and Trainer."""

    curriculum: Curriculum
    sampler: CurriculumSampler | None
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    curriculum_label: str | None = None
    #: InfoBatch changes the epoch length: the Trainer must rebuild the loader per epoch
    reload_dataloaders_every_n_epochs: int = 0
    #: the group-weights table the file was built from (``{group name: weight}``), or None
    group_weights: dict[str, float] | None = None
    #: sample ids whose label the file replaced (relabel), empty when none
    relabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: the latest loss per sample that InfoBatch and self-paced plan from (checkpointed)
    latest_loss: LatestLoss | None = None


def task_classes(task_name: str) -> int | None:
    """The number of classes of a built-in task, None for a task without classes (sequences)."""
    from training.tasks import SEQUENCE_TASKS, load_task

    if task_name in SEQUENCE_TASKS:
        return None
    return int(load_task(task_name).num_classes)


def apply_labels(curriculum: Curriculum, dataset: Any, num_classes: int | None, path: Path) -> np.ndarray:
    """Replace ``dataset.y`` by the file's ``label`` column where it has one; the sample ids
    whose label changed. A file without labels changes nothing."""
    if "label" not in curriculum.table:
        return np.zeros(0, dtype=np.int64)
    check_labels(curriculum.table, num_classes, path)
    ids = dataset.sample_ids.cpu().numpy()
    current = dataset.y.cpu().numpy()
    labels = curriculum.labels_for(ids, current)
    changed = labels != current
    dataset.y = torch.as_tensor(labels, dtype=dataset.y.dtype)
    return ids[changed].astype(np.int64)


def sow_hook(g: str, delta: float, tau: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss-reweight rule as a ``Classifier(online_weights=...)`` hook: each batch's
    ``sow_weights`` times the batch size (so the weighted loss keeps the scale of a mean)."""

    def online_weights(sample_ids: Tensor, losses: Tensor) -> Tensor:
        weights = sow_weights(losses.detach().float().cpu().numpy(), g=g, delta=delta, tau=tau)
        return torch.as_tensor(weights * len(weights), dtype=losses.dtype, device=losses.device)

    return online_weights


def attach_curriculum(config: Any, dataset: Any, *, task_name: str, batch_size: int) -> CurriculumAttachment:
    """Load ``config.curriculum`` (validated against the task and the dataset's ids) and
    build the sampler, the loss weights and the online hooks for ``dataset``
    (a ``training.module.IndexedDataset``; its ``weights`` are replaced)."""
    path = Path(config.curriculum)
    ids = dataset.sample_ids.cpu().numpy()
    curriculum = load_curriculum(path, task=task_name, sample_ids=ids)
    relabelled = apply_labels(curriculum, dataset, task_classes(task_name) if "label" in curriculum.table else None,
                              path)
    base = curriculum.weights_for(ids)
    start = curriculum.start_epochs_for(ids)
    dataset.weights = torch.as_tensor(base, dtype=torch.float32)
    online = curriculum.online or {}
    rule = online.get("rule")
    params = rule_params(rule, online.get("params")) if rule else {}
    seed = int(getattr(config, "seed", 0))
    n = len(ids)
    module_kwargs: dict[str, Any] = {}
    plan = None
    latest = None
    reload_every = 0
    expected = None
    num_samples = n if (getattr(config, "keep_steps", False) or start is not None) else None

    if rule == "loss-reweight":
        module_kwargs["online_weights"] = sow_hook(params["g"], float(params["delta"]), float(params["tau"]))
    elif rule in ("infobatch", "self-paced"):
        latest = LatestLoss(ids)
        module_kwargs["on_batch_losses"] = latest
        if rule == "infobatch":
            prune_ratio = float(params["prune_ratio"])
            delta = float(params["delta"])

            def plan(epoch: int) -> np.ndarray:
                keep, factor, _ = infobatch_plan(
                    latest.loss, epoch, config.epochs, prune_ratio, delta,
                    rng=np.random.default_rng([seed, 7919, epoch]),
                )
                dataset.weights = torch.as_tensor(base * np.where(keep, factor, 1.0), dtype=torch.float32)
                return keep

            if num_samples is None:
                reload_every = 1
                expected = functools.partial(infobatch_epoch_lengths, n, prune_ratio=prune_ratio, delta=delta)
        else:
            pacing = params  # the keyword arguments of pacing_fraction
            start_rank = np.zeros(n) if start is None else start.astype(float)
            start = None  # the online rule replaces the static schedule
            num_samples = n
            kept = base > 0

            def plan(epoch: int) -> np.ndarray:
                count = available_count(epoch, int(kept.sum()), **pacing)
                loss = np.where(np.isnan(latest.loss), np.inf, latest.loss)
                order = np.lexsort((np.arange(n), start_rank, loss, ~kept))
                mask = np.zeros(n, dtype=bool)
                mask[order[:count]] = True
                return mask

    sampler = None
    needs_sampler = plan is not None or start is not None or num_samples is not None or (base == 0).any()
    if needs_sampler:
        sampler = CurriculumSampler(base, start, num_samples=num_samples, seed=seed, plan=plan)
        sampler.expected_lengths = expected
    parent = (curriculum.metadata.get("source_runs") or [None])[0]
    return CurriculumAttachment(
        curriculum=curriculum,
        sampler=sampler,
        module_kwargs=module_kwargs,
        parent_run_id=parent,
        curriculum_label=f"{path.name}: {curriculum.label}",
        reload_dataloaders_every_n_epochs=reload_every,
        group_weights=curriculum.group_weights,
        relabelled=relabelled,
        latest_loss=latest,
    )


# -- the learning-rate schedule of an online rule's shorter epochs ------------------------

#: InfoBatch's expected share of samples whose latest loss is below the mean, used to size the
#: schedule before any loss is known. Per-sample losses are right-skewed (a few hard samples,
#: many easy ones), so the mean lies above the median and the share is usually above one half:
#: 0.5 sizes the schedule for at least as many steps as most epochs take. An epoch that
#: takes more holds the final learning rate (``training.module.HeldOneCycleLR``).
BELOW_MEAN_SHARE = 0.5


def infobatch_epoch_lengths(n: int, max_epochs: int, *, prune_ratio: float, delta: float,
                            below_mean: float = BELOW_MEAN_SHARE) -> list[int]:
    """The expected draws of each of ``max_epochs`` InfoBatch epochs over ``n`` samples: the
    first epoch (no losses yet) and those from ``delta * max_epochs`` on (annealing) draw all
    ``n``; the others drop ``prune_ratio`` of the ``below_mean`` share (Qin et al. 2024 size the
    schedule for the pruned epochs, so that it ends when training does)."""
    pruned = round(n * (1.0 - prune_ratio * below_mean))
    return [pruned if 0 < epoch < delta * max_epochs else n for epoch in range(max_epochs)]


def expected_fit_steps(trainer: Any) -> int | None:
    """The optimisation steps of a fit whose training sampler is a ``CurriculumSampler`` with
    ``expected_lengths`` (directly or wrapped by ``DistributedCurriculumSampler``), per rank
    and after gradient accumulation; ``None`` for any other fit (the trainer's own estimate
    then holds). Call it after ``trainer.estimated_stepping_batches`` (which loads the
    training data)."""
    loader = getattr(trainer, "train_dataloader", None)
    outer = getattr(loader, "sampler", None)
    inner = getattr(outer, "sampler", outer)
    if not isinstance(inner, CurriculumSampler) or inner.expected_lengths is None:
        return None
    replicas = int(getattr(outer, "num_replicas", 1) or 1)
    batch = int(loader.batch_size or 1)
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    steps = 0
    for length in inner.expected_lengths(int(trainer.max_epochs)):
        per_rank = math.ceil(length / replicas)
        batches = per_rank // batch if loader.drop_last else math.ceil(per_rank / batch)
        steps += math.ceil(batches / accumulate)
    return max(steps, 1)
