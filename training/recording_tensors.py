"""Small tensor helpers of ``DynamicsRecorder``: the layer that owns each parameter, the
parameters' gradient norms, and the one copy of a chunk of statistics to the host.

Small functions of tensors, free of Lightning; the callback calls them from its hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


def detached(tensor: Tensor) -> Tensor:
    """``tensor`` without its graph; the tensor itself when it has none (no new object)."""
    return tensor.detach() if tensor.requires_grad else tensor


def owning_layers(module: torch.nn.Module) -> tuple[list[str], list[int]]:
    """The layers (module paths) with trainable parameters, and for each trainable
    parameter the index of the layer that owns it."""
    layers: list[str] = []
    owner: list[int] = []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = name.rsplit(".", 1)[0] if "." in name else name
        if layer not in layers:
            layers.append(layer)
        owner.append(layers.index(layer))
    return layers, owner


def parameter_grad_norms(parameters: Sequence[torch.nn.Parameter]) -> list[Tensor]:
    """The L2 norm of each parameter's gradient (0 where it has none), as 0-d tensors on
    its device: one fused call and no host sync.

    The norms read every gradient value, which is why the recorder computes them every
    ``grad_norm_every_n_steps`` only; faster-looking alternatives (a dot per parameter,
    ``torch.cat`` first, ``inference_mode``) measured slower (benchmarks/results/recorder.md).
    """
    grads = [p.grad for p in parameters]
    try:
        return torch._foreach_norm(grads)
    except (TypeError, RuntimeError):  # a parameter without a gradient this step
        grads = [torch.zeros((), device=p.device) if g is None else g for p, g in zip(parameters, grads)]
        return torch._foreach_norm(grads)


_NUMPY_DTYPES = {
    torch.bool: np.bool_, torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
    torch.int64: np.int64, torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
}


def to_host(columns: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """The ``[N]`` tensors of ``columns`` as NumPy arrays of the same dtypes, in one
    device-to-host copy per device: their bytes are concatenated on the device (widest
    dtype first, so every array stays aligned), copied once, and viewed back."""
    out: dict[str, np.ndarray] = {}
    by_device: dict[torch.device, list[str]] = {}
    for name, tensor in columns.items():
        by_device.setdefault(tensor.device, []).append(name)
    for names in by_device.values():
        names = sorted(names, key=lambda name: -columns[name].element_size())
        flat = [columns[name].detach().contiguous().reshape(-1) for name in names]
        raw = torch.cat([tensor.view(torch.uint8) for tensor in flat]).cpu().numpy()
        offset = 0
        for name, tensor in zip(names, flat):
            size = tensor.numel() * tensor.element_size()
            out[name] = raw[offset:offset + size].view(_NUMPY_DTYPES[tensor.dtype])
            offset += size
    return out
