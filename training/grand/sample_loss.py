"""Each sample's own loss, the one GraNd differentiates (DESIGN.md "Definitions", "Sequences").

A classifier's logits [N, C] with targets [N]: the cross-entropy CE(z_i, y_i). A language
model's logits [N, T, V] with targets [N, T]: the sequence's mean next-token cross-entropy
over its counted tokens (targets ``IGNORE_INDEX``, -100, are not counted; 0 for a sequence
with none), the recorder's per-sequence loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from training.recording_outputs import IGNORE_INDEX


def sample_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample loss [N] of ``logits`` against ``targets`` (see the module docstring)."""
    if logits.dim() == 2 and targets.dim() == 1 and logits.shape[0] == targets.shape[0]:
        return F.cross_entropy(logits, targets, reduction="none")
    if logits.dim() == 3 and targets.dim() == 2 and logits.shape[:2] == targets.shape:
        tokens = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        counted = (targets != IGNORE_INDEX).sum(1)
        return tokens.sum(1) / counted.clamp(min=1)
    raise ValueError(
        f"GraNd: the model gave outputs {list(logits.shape)} for targets {list(targets.shape)}; expected "
        "logits [N, classes] with targets [N], or logits [N, T, vocabulary] with targets [N, T]"
    )
