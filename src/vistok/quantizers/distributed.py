"""Codebook statistics across ranks.

Whether to synchronize is decided at every call (``torch.distributed`` may be initialized after a
module is built), never cached.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def should_sync(setting: bool | str, training: bool) -> bool:
    """``"auto"``: in training with more than one rank. ``True``/``False``: as told (if possible)."""
    if setting == "auto":
        return training and world_size() > 1
    return bool(setting) and world_size() > 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """Differentiable sum over ranks.

    The backward pass all-reduces the incoming gradients too, so each rank receives the gradient
    of the *global* quantity with respect to its own contribution, summed over the ranks that
    computed the same loss; after DDP's gradient averaging that is exactly the gradient of the
    global-batch statistic.
    """
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t, op=dist.ReduceOp.SUM)
