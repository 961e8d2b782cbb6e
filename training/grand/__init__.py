"""Exact per-sample gradient norms (GraNd) at close to the cost of one training step.

GraNd (Paul et al. 2021, DESIGN.md "Definitions") = ||∇_θ loss_i||₂ over all trainable
parameters, where loss_i is the cross-entropy of sample i itself (not the batch mean); for a
language model, the mean token cross-entropy of sequence i.

How it is computed ("ghost norms", no per-sample gradient is materialised when a cheaper
form exists): for every layer with trainable parameters a forward hook keeps the layer's
input ``a`` and a tensor hook on its output receives the output gradient ``g`` during the
ordinary ``loss.backward()``; the per-sample squared norm of the layer's parameter
gradient follows from ``a`` and ``g`` alone, by a rule per layer type.

A weight shared by several ``Linear`` / ``Embedding`` layers (tied embeddings) gets the norm
of the sum of its uses, cross terms included. Ghost norms are wrong when another parameter
is shared, a module runs more than once in one forward (reuse, activation checkpointing), a
module with trainable parameters has no rule, a ruled parameter is also used outside its
layer (a functional call), or samples are coupled (``BatchNorm`` with batch statistics).
These cases are detected automatically and an exact (slower) fallback is used instead,
logged once per reason.

Where each part lives:

* ``rules``: the rule per layer type and ``REGISTRY`` (layer type -> rule), the one file
  to touch to add a layer rule;
* ``attention``: ``nn.MultiheadAttention``'s projections recorded while torch's own forward
  runs (a ``TorchFunctionMode``);
* ``ties``: the exact norm of a weight shared by several layers;
* ``plan``: which modules of a model get ghost norms, and why a model needs the fallback;
* ``capture``: the hooks that keep inputs and output gradients during the backward;
* ``uses``: the check that no ruled parameter is used outside its layer;
* ``sample_loss``: each sample's own loss (classification or sequence);
* ``fallback``: the exact ``torch.func`` path, and which module it calls;
* ``norms``: ``per_sample_grad_norms`` / ``per_sample_grad_norms_by_layer`` for any
  classifier outside training;
* ``schedule``: ``GrandSchedule``, on which epochs GraNd is recorded;
* ``loss_scale``: each sample's loss weight read off the logits' gradient, and the check
  that the loss is cross-entropy;
* ``recording``: ``GrandRecording``, what ``DynamicsRecorder`` drives during training;
* ``logs``: warnings logged once per process.

Cost relative to a plain training step, and the methods compared: see
benchmarks/results/grand.md.
"""

from training.grand.norms import per_sample_grad_norms, per_sample_grad_norms_by_layer
from training.grand.recording import GrandRecording
from training.grand.schedule import DEFAULT_SCHEDULE, GrandSchedule

__all__ = [
    "DEFAULT_SCHEDULE",
    "GrandRecording",
    "GrandSchedule",
    "per_sample_grad_norms",
    "per_sample_grad_norms_by_layer",
]
