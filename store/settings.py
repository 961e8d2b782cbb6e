"""Run settings that more than one layer checks, validated in one place.

A run's settings are written to its ``run.json`` by the trainer and read back by the
dashboard when it launches a rerun; both check them here, so the range and the message
are the same wherever a bad value is caught.
"""

from __future__ import annotations

import math

#: The built-in tasks and models of ``trainmap train``; the dashboard checks a parent's
#: settings against them before it launches a rerun (it may not import ``training``).
TASK_NAMES = ("mnist1d", "digits", "mnist5k", "pydoc-lm")
MODEL_NAMES = ("mlp", "cnn", "gpt")

#: What a run's training step returned (run.json ``output_kind``): logits ``[B, C]`` with
#: labels, logits ``[B, T, V]`` with token targets, or a per-sample loss ``[B]`` of any loss.
OUTPUT_KINDS = ("classification", "sequence", "loss")

#: The run.json key naming the validation dataloader whose accuracy is the run's (0 if unset).
MONITOR_DATALOADER_FIELD = "monitor_dataloader_idx"


def check_label_noise(value: float) -> float:
    """``value`` as a float if it is a valid label-noise fraction, in [0, 1); else ``ValueError``."""
    try:
        fraction = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"label noise must be a number in [0, 1), got {value!r}") from error
    if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise ValueError(f"label noise must be in [0, 1), got {value}")
    return fraction

#: Schema-metadata key of a dataset file (``<store>/datasets/<task>.parquet``) whose ``x`` holds
#: the byte values of a text; its value is the text's encoding (e.g. ``b"utf-8"``). Written by
#: ``training.pydoc_lm``, read by the dashboard to show such samples as text.
DATASET_ENCODING_KEY = b"trainmap.encoding"
