"""The few collectives a ``training.recording_session.Recorder`` needs across ranks: the run
id's broadcast, the sum of an epoch's totals and validation sums, and barriers at the end.

The Lightning adapter passes the Trainer's strategy, which has the same methods
(``broadcast(obj, src)``, ``reduce(tensor, reduce_op="sum")``, ``barrier(name)``,
``global_rank``, ``world_size``). A plain loop gets ``torch.distributed`` when it is
initialised (``torchrun``, Lightning Fabric's DDP) and a single process otherwise.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import Tensor

__all__ = ["SingleProcess", "TorchDistributed", "default_collectives"]


class SingleProcess:
    """One process: every collective is the identity."""

    global_rank = 0
    world_size = 1

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def reduce(self, tensor: Tensor, reduce_op: str = "sum") -> Tensor:
        return tensor

    def barrier(self, name: str | None = None) -> None:
        return None


class TorchDistributed:
    """The default process group of ``torch.distributed`` (initialised by the caller)."""

    @property
    def global_rank(self) -> int:
        return dist.get_rank()

    @property
    def world_size(self) -> int:
        return dist.get_world_size()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def reduce(self, tensor: Tensor, reduce_op: str = "sum") -> Tensor:
        if reduce_op != "sum":
            raise ValueError(f"TorchDistributed.reduce: only reduce_op='sum' is used, got {reduce_op!r}")
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def barrier(self, name: str | None = None) -> None:
        dist.barrier()


def default_collectives() -> SingleProcess | TorchDistributed:
    """``torch.distributed`` when it is initialised with more than one process, else one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributed()
    return SingleProcess()

