"""``GrandRecording``: exact GraNd fused with the training step, driven by ``DynamicsRecorder``.

On the steps its ``GrandSchedule`` picks it arms the capture hooks, the training step's
own backward provides the output gradients, and ``.grad`` / the optimizer step stay
bit-identical to a plain step (hooks only read). Unscheduled steps have no hooks and cost
nothing (except the one forward hook on the final ``Linear`` that gives the last-layer
approximation's ||h||²). Each scored step's layer norms are computed right after its
backward; the per-sample loss-scale check (``loss_scale``) and the final sqrt/divide are
batched over the epoch. Cost: see benchmarks/results/grand.md.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from training.batch import TrainingBatch, parse_batch
from training.grand.capture import Capture
from training.grand.fallback import model_for_inputs
from training.grand.logs import warn_once
from training.grand.loss_scale import LOSS_REDUCTIONS, loss_form_message, loss_scale
from training.grand.norms import per_sample_grad_norms
from training.grand.plan import Plan, apply_rules, make_plan
from training.grand.rules import NeedFallback
from training.grand.schedule import GrandSchedule
from training.grand.uses import ParameterUses

logger = logging.getLogger(__name__)

_NO_PARTS = TrainingBatch(inputs=None, targets=None, sample_ids=None, weights=None)


def _batch_parts(batch: Any) -> TrainingBatch:
    """The parts of a training batch; all None where the batch has no target."""
    try:
        return parse_batch(batch, require_ids=False)
    except ValueError:
        return _NO_PARTS


class GrandRecording:
    """Exact GraNd fused with the training step, driven by ``DynamicsRecorder``.

    Args:
        schedule: a ``GrandSchedule`` (or its text).
        loss_reduction: how the training loss combines the per-sample cross-entropies
            CE_i of the model's logits (the output of its final ``nn.Linear``):
            ``"weighted_mean"`` (default; ``mean_i(w_i·CE_i)`` with any per-sample weights,
            including weights computed inside ``training_step``), ``"mean"`` or ``"sum"``.
            The output gradient of the final layer is c_i·(p_i − onehot(y_i)); c_i is read
            off it (weighted_mean) or known (1/N, 1), checked, and every ghost norm is
            divided by |c_i|, so the recorded value is the norm of the gradient of CE_i
            itself. If the check fails (another loss, label smoothing, logits transformed
            after the final Linear) the step is scored with the exact fallback, logged once.
            Samples with weight 0 (c_i = 0) contributed no gradient; they are scored by
            one extra exact pass over just those samples (same weights, RNG state
            restored), never reported as 0.

    ``numpy_on_cpu``: do the small [N, classes] arithmetic of that check in NumPy on the
    CPU (same result as the torch path, cheaper for such tiny arrays; see ``loss_scale``).

    Language models: logits [N, T, V] from the final ``nn.Linear`` with targets [N, T]
    (``-100`` not counted); each sequence's loss scale is read off the gradient whatever
    ``loss_reduction`` says (``loss_scale``), and GraNd is the norm of the gradient of its
    mean token cross-entropy.

    The fallback passes call ``pl_module(x)`` on the batch inputs (batch[0] or a dict
    key ``x``/``input``/``inputs``/``image``/``images``/``features``); a ``pl_module``
    without ``forward`` is read through its one child holding all trainable parameters
    (``fallback.model_for_inputs``), and ``setup`` raises ``ValueError`` saying what to add
    when there is none. The first scored step of a fit also checks that no ruled
    parameter is used outside its layer (``uses``); if one is, every step is scored by the
    fallback.
    """

    numpy_on_cpu = True

    def __init__(self, schedule: GrandSchedule | str, loss_reduction: str = "weighted_mean") -> None:
        if isinstance(schedule, str):
            schedule = GrandSchedule.parse(schedule)
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"loss_reduction must be weighted_mean, mean or sum, got {loss_reduction!r}")
        self.schedule = schedule
        self.loss_reduction = loss_reduction
        self._module: nn.Module | None = None
        self._scorer: nn.Module | None = None
        self._uses: ParameterUses | None = None
        self._uses_checked = False
        self._plan: Plan | None = None
        self._capture: Capture | None = None
        self._head_handle: Any = None
        self._head_input: Tensor | None = None
        self._rows: list[tuple[int, int, Tensor, Tensor]] = []
        self._pending: dict[str, Any] | None = None
        self._rank = 0
        self._permanent_fallback: str | None = None
        self._own_pass = False  # our extra forwards must not touch the head's ||h||²
        self._deferred: list[dict[str, Any]] = []
        self._deferred_bytes = 0
        self._defer_ok = True
        self._verified = 0
        self._batch_size: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_module=None, _scorer=None, _uses=None, _plan=None, _capture=None, _head_handle=None,
                     _head_input=None, _pending=None, _deferred=[], _deferred_bytes=0)
        return state

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if stage != "fit":
            return
        self._module = pl_module
        self._scorer = model_for_inputs(pl_module)  # raises, saying what to add, when there is none
        self._rank = int(getattr(trainer, "global_rank", 0))
        self._plan = None
        self._uses_checked = False
        head = None
        for module in pl_module.modules():
            if isinstance(module, nn.Linear):
                head = module
        if self._head_handle is not None:
            self._head_handle.remove()
        self._head_handle = None if head is None else head.register_forward_hook(self._head_hook)

    def _head_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._own_pass or not (torch.is_grad_enabled() and module.training):
            return
        if args and isinstance(args[0], Tensor):
            self._head_input = args[0]

    def last_layer_sqnorm(self) -> Tensor | None:
        """||h||² per sample of the final Linear's input for the current batch, or None
        (then the recorder leaves ``grand_last`` NaN): EL2N·sqrt(||h||²+1) is the exact
        gradient norm of that layer when its output is the logits."""
        h, self._head_input = self._head_input, None
        if h is None or h.dim() != 2 or (self._batch_size is not None and h.shape[0] != self._batch_size):
            return None
        with torch.no_grad():
            h = h.detach().float()
            return torch.linalg.vecdot(h, h)

    def _get_plan(self) -> Plan:
        if self._plan is None:
            assert self._module is not None
            self._plan = make_plan(self._module)
            self._capture = Capture(self._plan)
        return self._plan

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if not self.schedule.init:
            return
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            warn_once(logger, "init-no-dataset", "GraNd init+: the training dataloader has no dataset; skipped")
            return
        world, rank = int(getattr(trainer, "world_size", 1)), self._rank
        indices = list(range(rank, len(dataset), world))
        subset = torch.utils.data.Subset(dataset, indices)
        batch_size = getattr(loader, "batch_size", None) or 64
        plain = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=loader.collate_fn)
        device = next(pl_module.parameters()).device
        self._own_pass = True
        try:
            self._score_dataset(plain, pl_module, device)
        finally:
            self._own_pass = False
            self._head_input = None

    def _score_dataset(self, plain: Any, pl_module: nn.Module, device: torch.device) -> None:
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            for batch in plain:
                parts = _batch_parts(batch)
                x, y, ids = parts.inputs, parts.targets, parts.sample_ids
                if x is None or y is None or ids is None:
                    warn_once(logger, "init-batch", "GraNd init+: batches need inputs, targets and sample ids; skipped")
                    return
                x, y = _to(x, device), y.to(device)
                norms = per_sample_grad_norms(self._scorer, x, y)
                self._rows.append((-1, -1, ids.detach().cpu(), norms.detach().float().cpu()))

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        self._pending = None
        self._head_input = None
        parts = _batch_parts(batch)
        x, y, ids = parts.inputs, parts.targets, parts.sample_ids
        self._batch_size = None if y is None else int(y.shape[0])
        if not self.schedule.scores_epoch(int(trainer.current_epoch)):
            return
        if y is None or ids is None:
            warn_once(logger, "batch", "GraNd: training batches need targets and sample ids; not recorded")
            return
        plan = self._get_plan()
        self._pending = {
            "epoch": int(trainer.current_epoch), "step": int(trainer.global_step),
            "x": x, "y": y, "ids": ids, "w": parts.weights,
        }
        if plan.fallback_reason is None and self._permanent_fallback is None:
            self._capture.arm()
            if not self._uses_checked:
                self._uses = ParameterUses(plan).start()

    def on_after_backward(self, trainer: Any, pl_module: nn.Module) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        capture = self._capture
        armed = capture is not None and capture.armed
        if capture is not None:
            capture.disarm()
        self._stop_uses()
        try:
            if armed and self._can_defer() and self._defer(pending):
                return
            norms = self._score(pending, armed)
        finally:
            if capture is not None:
                capture.release()
        if norms is not None:
            self._rows.append((pending["epoch"], pending["step"], pending["ids"].detach().cpu(), norms))

    # -- deferred arithmetic -----------------------------------------------------------------
    #
    # Each step's ghost norms are computed right after its backward (holding the layers'
    # inputs and output gradients longer makes the allocator hand out fresh memory every
    # step, which costs more than it saves), but the per-sample loss-scale check and the
    # final sqrt/divide, dozens of tiny ops, run once for many steps in ``_flush`` (at
    # ``take_rows``, i.e. once per epoch, or when ``max_deferred_bytes`` is reached). What
    # needs this step's weights stays immediate: the first ``verify_steps`` scored steps
    # (the loss-form check with the exact fallback behind it) and steps whose batch carries
    # a weight of 0 (the extra exact pass). If a deferred step later fails the loss-form
    # check or shows a weight of 0 computed inside ``training_step``, its rows are dropped
    # (logged, never written wrong) and recording goes back to checking every step.

    deferred = True
    verify_steps = 2
    max_deferred_bytes = 16 * 2**20

    def _can_defer(self) -> bool:
        return (
            self.deferred and self._defer_ok and self._verified >= self.verify_steps
            and self._plan is not None and self._plan.fallback_reason is None and self._permanent_fallback is None
        )

    def _defer(self, pending: dict[str, Any]) -> bool:
        y: Tensor = pending["y"]
        n = y.shape[0]
        w = pending.get("w")
        if isinstance(w, Tensor) and not bool(w.all()):
            return False
        try:
            items = self._capture.take(n)
        except NeedFallback:
            return False  # the immediate path detects it again and falls back
        z, g = self._capture.head()
        if z is None or g is None or z.dim() != 2 or z.shape[0] != n:
            return False
        total = None  # inputs and grads are detached: no autograd bookkeeping here
        for value in apply_rules(self._plan, items).values():  # fresh tensors
            total = value if total is None else total.add_(value)
        # A zero total means a zero head gradient: a weight of 0 set inside training_step
        # (or p_y == 1 exactly). The immediate path scores it (extra exact pass if needed).
        if total is None or not bool(total.all()):
            return False
        self._deferred.append(
            {"epoch": pending["epoch"], "step": pending["step"], "ids": pending["ids"].detach(), "y": y.detach(),
             "total": total, "z": z, "g": g}
        )
        self._deferred_bytes += 3 * z.numel() * z.element_size()
        if self._deferred_bytes > self.max_deferred_bytes:
            self._flush()
        return True

    def _flush(self) -> None:
        entries, self._deferred, self._deferred_bytes = self._deferred, [], 0
        if not entries:
            return
        sizes = [int(e["y"].shape[0]) for e in entries]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        with torch.no_grad():
            z = torch.cat([e["z"] for e in entries])
            g = torch.cat([e["g"] for e in entries])
            y = torch.cat([e["y"] for e in entries])
            n_per_step = torch.repeat_interleave(torch.tensor(sizes), torch.tensor(sizes))
            try:
                c, ok = loss_scale(z, g, y, self.loss_reduction, n_per_step, self.numpy_on_cpu)
            except NeedFallback as reason:
                self._defer_ok = False
                warn_once(logger, "deferred-head", "GraNd: %s; %d deferred steps not recorded", reason, len(entries))
                return
            total = torch.cat([e["total"] for e in entries]).to(c.dtype)
            norms = (total.clamp_min_(0).sqrt_() / c.abs()).float().cpu()
            ok = ok.cpu()
            zero = (c == 0).cpu()
        if bool(ok.all()) and not bool(zero.any()):  # the usual case: one split, no per-step checks
            for entry, part in zip(entries, torch.split(norms, sizes)):
                self._rows.append((entry["epoch"], entry["step"], entry["ids"].cpu(), part))
            return
        for k, entry in enumerate(entries):
            sl = slice(offsets[k], offsets[k + 1])
            if not bool(ok[sl].all()):
                self._defer_ok = False
                warn_once(logger, "deferred-loss", "GraNd: %s; a deferred step was not recorded, back to checking every step", loss_form_message(self.loss_reduction))
                continue
            keep = ~zero[sl]
            if not bool(keep.all()):
                self._defer_ok = False
                warn_once(logger, 
                    "deferred-zero",
                    "GraNd: samples with weight 0 set inside training_step were not recorded on a deferred step; "
                    "back to immediate scoring (with an exact pass for such samples)",
                )
            ids = entry["ids"].cpu()
            self._rows.append((entry["epoch"], entry["step"], ids[keep], norms[sl][keep]))

    def _stop_uses(self) -> None:
        """End the one-step check of parameter uses; any use outside a layer makes every
        later step fall back."""
        uses, self._uses = self._uses, None
        if uses is None:
            return
        uses.stop()
        self._uses_checked = True
        if uses.outside is not None:
            self._permanent_fallback = uses.outside

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._uses is not None:  # no on_after_backward: check again on the next scored step
            self._uses.stop()
            self._uses = None
        if self._pending is not None:  # no on_after_backward (e.g. a skipped step)
            warn_once(logger, "no-backward", "GraNd: a scheduled step ended without on_after_backward; not recorded")
            self._pending = None
        if self._capture is not None:
            self._capture.disarm()
            self._capture.release()

    def take_rows(self) -> dict[str, np.ndarray] | None:
        """Rows recorded since the last call (table ``grand``), or None."""
        self._flush()
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        counts = [len(ids) for _, _, ids, _ in rows]
        return {
            "epoch": np.repeat(np.asarray([r[0] for r in rows], dtype=np.int32), counts),
            "step": np.repeat(np.asarray([r[1] for r in rows], dtype=np.int64), counts),
            "sample_id": torch.cat([r[2] for r in rows]).long().numpy(),
            "grand": torch.cat([r[3] for r in rows]).float().numpy(),
            "rank": np.full(sum(counts), self._rank, dtype=np.int16),
        }

    # -- scoring ---------------------------------------------------------------------------

    def _score(self, pending: dict[str, Any], armed: bool) -> Tensor | None:
        y: Tensor = pending["y"]
        n = y.shape[0]
        plan = self._plan
        why = self._permanent_fallback or plan.fallback_reason
        if why is None and armed:
            try:
                with torch.no_grad():
                    layers = self._capture.layer_sqnorms(n)
                    scale = self._loss_scale(y)
                    if scale.device.type == "cpu" and all(v.device.type == "cpu" for v in layers.values()):
                        # tiny [N] arithmetic: NumPy has less overhead per op than torch
                        c = scale.numpy()
                        total = np.add.reduce([v.numpy() for v in layers.values()]) if layers else np.zeros(n)
                        with np.errstate(divide="ignore", invalid="ignore"):
                            norms = torch.from_numpy(np.sqrt(total) / np.abs(c))
                    else:
                        total = None
                        for value in layers.values():  # fresh tensors: accumulate in place
                            total = value if total is None else total.add_(value)
                        if total is None:
                            total = torch.zeros(n, dtype=scale.dtype, device=scale.device)
                        norms = total.sqrt_().div_(scale.abs())
                    if not bool(scale.all()):  # weight-0 samples: no gradient to read
                        index = (scale == 0).nonzero().flatten()
                        extra = self._exact(pending, index)
                        if extra is None:
                            return None
                        norms[index] = extra.to(norms.dtype)
                self._verified += 1
                return norms.float().cpu()
            except NeedFallback as reason:
                why = str(reason)
                if "ran more than once" in why or "functionally" in why:
                    self._permanent_fallback = why
        warn_once(logger, 
            f"recording:{why}",
            "GraNd: ghost norms would not be exact (%s); scoring with the exact torch.func fallback (slower)",
            why,
        )
        norms = self._exact(pending, None)
        return None if norms is None else norms.float().cpu()

    def _exact(self, pending: dict[str, Any], index: Tensor | None) -> Tensor | None:
        """Exact norms via pl_module(x) on (a subset of) the batch; RNG state restored."""
        x, y = pending["x"], pending["y"]
        if x is None:
            warn_once(logger, "no-inputs", "GraNd: cannot find the inputs in the batch for the exact pass; step not recorded")
            return None
        if index is not None:
            x = _index(x, index)
            y = y[index]
        module = self._scorer
        device = y.device
        self._own_pass = True
        try:
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
                return per_sample_grad_norms(module, x, y).detach()
        finally:
            self._own_pass = False

    def _loss_scale(self, y: Tensor) -> Tensor:
        """c_i of this step (see ``loss_scale``); raises NeedFallback if unchecked."""
        z, g = self._capture.head()
        c, ok = loss_scale(z, g, y, self.loss_reduction, numpy_on_cpu=self.numpy_on_cpu)
        if not bool(ok.all()):
            raise NeedFallback(loss_form_message(self.loss_reduction))
        return c


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


def _index(x: Any, index: Tensor) -> Any:
    if isinstance(x, Tensor):
        return x[index.to(x.device)]
    if isinstance(x, (tuple, list)):
        return type(x)(_index(v, index) for v in x)
    raise NeedFallback("unsupported input type")
