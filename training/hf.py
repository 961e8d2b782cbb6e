"""``TrainmapCallback``: record a Hugging Face ``transformers.Trainer`` run with
``training.recording_session.Recorder`` (``pip install trainmap[hf]``).

A ``TrainerCallback`` sees no batch and no output, so the callback hooks the model itself
when training begins:

* a forward pre-hook takes ``sample_id`` (and ``group``) out of the batch's keyword
  arguments, so the model never sees them, and keeps them for the forward hook;
* a forward hook reads the output's ``logits`` and the batch's ``labels`` and hands them to
  the recorder: a training forward as a training batch (``Recorder.log_batch``), an
  evaluation forward as a validation batch. A causal language model (one of the classes
  ``AutoModelForCausalLM`` maps to, a class name ending in ``ForCausalLM``, or
  ``causal_lm=True``) predicts ``labels[:, t + 1]`` from position t,
  as its own loss does: the recorder gets ``logits[:, :-1]`` and ``labels[:, 1:]``.

The Trainer's own hooks give the step (``state.global_step``), the learning rate and the
gradient norms (before each optimizer step), and the epochs. HF evaluates after an epoch
ends (``eval_strategy="epoch"``): that epoch is handed to the writer once its evaluation is
in, so its validation metrics land on it.

The dataset must yield a ``sample_id`` per example, and the Trainer must keep it:
``TrainingArguments(remove_unused_columns=False)`` (otherwise the Trainer drops every
column that is not an argument of the model's ``forward``). A training batch without
``sample_id`` is refused with one line saying so.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from training.recording_session import Recorder

__all__ = ["TrainmapCallback", "is_causal_lm"]

_MISSING_IDS = (
    "TrainmapCallback: a training batch has no 'sample_id'; have the dataset yield one per example and keep it "
    "with TrainingArguments(remove_unused_columns=False)"
)


def is_causal_lm(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a causal language model: a class ``AutoModelForCausalLM`` maps to
    (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...) or whose name ends in ``ForCausalLM``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(model).__name__
    return name.endswith("ForCausalLM") or name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


class TrainmapCallback(TrainerCallback):
    """Record per-sample training dynamics of a ``transformers.Trainer`` into a trainmap store.

    Args:
        store, run_name and the other keyword arguments: ``Recorder``'s (``task``,
            ``seed``, ``config``, ``grad_norm_every_n_steps``, ``chunk_rows``, ...).
        causal_lm: whether the model predicts the next token (labels shifted by one);
            default: ``is_causal_lm(model)``.
    """

    def __init__(self, store: Any = "trainmap_runs", run_name: str | None = None, *,
                 causal_lm: bool | None = None, **recorder_kwargs: Any) -> None:
        self.recorder_args = (store, run_name, recorder_kwargs)
        self.causal_lm = causal_lm
        self.recorder: Recorder | None = None
        self._handles: list[Any] = []
        self._pending: dict[str, Any] = {}
        self._step = 0
        self._epoch_waits_for_eval = False

    # -- the model's hooks -------------------------------------------------------------

    def _take_extras(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs = dict(kwargs)
        self._pending = {"sample_id": kwargs.pop("sample_id", None), "group": kwargs.pop("group", None),
                         "labels": kwargs.get("labels")}
        return args, kwargs

    def _read_outputs(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        try:
            self._record(module, output)
        except BaseException as error:  # the Trainer has no exception hook: the run must not stay "running"
            self._remove_hooks()
            self.recorder.fail(error)
            raise

    def _record(self, module: torch.nn.Module, output: Any) -> None:
        pending, self._pending = self._pending, {}
        logits = output.get("logits") if hasattr(output, "get") else getattr(output, "logits", None)
        labels = pending.get("labels")
        if logits is None or labels is None:
            return
        if self.causal_lm and logits.ndim == 3:
            logits, labels = logits[:, :-1], labels[:, 1:]
        if not module.training:
            self.recorder.log_validation(logits, labels)
            return
        if pending.get("sample_id") is None:
            raise ValueError(_MISSING_IDS)
        self.recorder.log_batch(pending["sample_id"], logits, labels, step=self._step, groups=pending.get("group"))
        loss = output.get("loss") if hasattr(output, "get") else None
        if loss is not None:
            self.recorder.record_loss(self._step, loss)

    # -- the Trainer's hooks -------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("TrainmapCallback: the Trainer passed no model to on_train_begin")
        store, run_name, recorder_kwargs = self.recorder_args
        if self.causal_lm is None:
            self.causal_lm = is_causal_lm(model)
        recorder_kwargs = {"model_name": type(model).__name__, "max_epochs": int(args.num_train_epochs),
                           "seed": args.seed, **recorder_kwargs}
        self.recorder = Recorder(store, run_name, model=model, **recorder_kwargs)
        self._handles = [
            model.register_forward_pre_hook(self._take_extras, with_kwargs=True),
            model.register_forward_hook(self._read_outputs, with_kwargs=True),
        ]
        self._step = state.global_step
        self.recorder.start()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step = state.global_step

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        if optimizer is not None:
            self.recorder.record_lr(self._step, optimizer.param_groups[0]["lr"])
        self.recorder.measure_grad_norms(self._step)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        strategy = getattr(args, "eval_strategy", "no")
        if getattr(strategy, "value", strategy) == "epoch":
            self._epoch_waits_for_eval = True  # ended in on_evaluate, with its validation rows
        else:
            self.recorder.end_epoch()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.recorder is None or self.recorder.run_id is None:
            return
        if self._epoch_waits_for_eval:
            self._epoch_waits_for_eval = False
            self.recorder.end_epoch()
        else:
            self.recorder.end_validation()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        try:
            if self._epoch_waits_for_eval:
                self._epoch_waits_for_eval = False
                self.recorder.end_epoch()
            self.recorder.finish()
        except BaseException as error:
            self.recorder.fail(error)
            raise
        finally:
            self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
