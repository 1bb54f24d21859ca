"""Exponential moving average of model weights (evaluated and exported instead of the raw weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from vistok.train.distributed import is_sharded


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` after every optimizer step.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so
    short runs are not dominated by the random initialization.

    For a replicated model the average is a module, :attr:`shadow`, to run and save as it is. An
    FSDP2-sharded model cannot be copied as a module: each rank then averages its own shards, kept
    as the tensors of :meth:`state` (``shadow`` is None), and the training loop gathers them into a
    whole model when it draws pictures or exports.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow: nn.Module | None = None
        self._tensors: dict[str, torch.Tensor] = {}
        if is_sharded(model):
            self._tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def _pairs(self, model: nn.Module, kind: str):
        """(average, live) tensor pairs of ``kind`` ("parameters" or "buffers")."""
        if self.shadow is not None:
            return zip(getattr(self.shadow, kind)(), getattr(model, kind)())
        named = model.named_parameters() if kind == "parameters" else model.named_buffers()
        return ((self._tensors[k], v) for k, v in named if k in self._tensors)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in self._pairs(model, "parameters"):
            s.lerp_(p.detach().to(s.dtype), 1 - d)
        for s, b in self._pairs(model, "buffers"):
            s.copy_(b)

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged weights as a state dict (this rank's shards for a sharded model)."""
        return self.shadow.state_dict() if self.shadow is not None else self._tensors

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.state()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        if self.shadow is not None:
            self.shadow.load_state_dict(state["shadow"])
        else:
            for k, v in state["shadow"].items():
                self._tensors[k].copy_(v)
