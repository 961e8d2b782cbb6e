"""Architectures for the built-in tasks.

The classifiers map a batch of inputs to logits ``[N, num_classes]``; ``gpt``
(``training.gpt``) maps tokens ``[N, T]`` to next-token logits ``[N, T, vocab]``. None of
them uses BatchNorm: ghost-norm GraNd (``training.grand``) is exact for the layers used
here, and BatchNorm in training mode couples the samples of a batch.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from training.config import MODEL_NAMES
from training.gpt import GPT, GPTConfig


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 256) -> nn.Module:
    """Two hidden ReLU layers over the flattened input."""
    in_features = 1
    for size in input_shape:
        in_features *= size
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def cnn1d(input_shape: tuple[int, ...], num_classes: int, channels: int = 64) -> nn.Module:
    """1-D CNN for sequences shaped ``[length]`` (MNIST-1D: length 40).

    Three strided convolutions in the spirit of the MNIST-1D reference CNN
    (Greydanus 2020, ~94 % test accuracy), followed by a linear head.
    """
    (length,) = input_shape
    out_length = length
    for _ in range(3):
        out_length = (out_length + 2 * 2 - 5) // 2 + 1
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(channels, channels, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(channels, channels, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * out_length, num_classes),
    )


def cnn2d(input_shape: tuple[int, ...], num_classes: int, channels: int = 32) -> nn.Module:
    """Small 2-D CNN for images shaped ``[height, width]``."""
    height, width = input_shape
    out_h, out_w = height, width
    for _ in range(2):
        out_h = (out_h + 2 - 3) // 2 + 1
        out_w = (out_w + 2 - 3) // 2 + 1
    return nn.Sequential(
        nn.Unflatten(1, (1, height)),
        nn.Conv2d(1, channels, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * channels * out_h * out_w, num_classes),
    )


def build_model(model_name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the named architecture for inputs of ``input_shape`` (without the batch dim).

    ``cnn`` picks the 1-D or 2-D CNN from the number of input dimensions; for ``gpt``
    ``input_shape`` is ``(sequence_length,)`` and ``num_classes`` the vocabulary size.
    """
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if model_name == "gpt":
        (sequence_length,) = input_shape
        return GPT(GPTConfig(vocab_size=num_classes, sequence_length=sequence_length))
    if model_name == "mlp":
        return mlp(input_shape, num_classes)
    builders: dict[int, Callable[..., nn.Module]] = {1: cnn1d, 2: cnn2d}
    return builders[len(input_shape)](input_shape, num_classes)
