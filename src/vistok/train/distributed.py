"""One training entry point for one process or many (``torchrun``): process group set-up and
model wrapping (DDP, or FSDP2's ``fully_shard`` for models too large to replicate).

Whether we are distributed is read from the environment (``RANK``/``WORLD_SIZE`` set by torchrun)
and from ``torch.distributed`` at call time, never cached in a module-level flag.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None) -> DistInfo:
    """Initialize the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def model_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: the elements of its ``nn.ModuleList``\\ s (looking inside a list
    of lists, never inside a block). These are the units FSDP2 shards one at a time and activation
    checkpointing recomputes; every model here keeps its blocks in such lists."""
    blocks: list[nn.Module] = []

    def collect(items) -> None:
        for m in items:
            if isinstance(m, nn.ModuleList):
                collect(m)
            else:
                blocks.append(m)

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                collect(child)
            else:
                visit(child)

    visit(model)
    return blocks


def checkpoint_activations(model: nn.Module) -> int:
    """Activation checkpointing: each block's activations are dropped after its forward and
    recomputed in the backward pass (memory for compute; the gradients are the same). Only when
    gradients are being recorded; inference runs the blocks as they are. Returns the block count."""
    blocks = model_blocks(model)
    for block in blocks:
        forward = block.forward

        def recomputed(*args, _forward=forward, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        block.forward = recomputed
    return len(blocks)


def wrap_model(model: nn.Module, info: DistInfo, strategy: str = "ddp", *,
               activation_checkpointing: bool = False, compile: bool = False) -> nn.Module:
    """The model as the training step calls it: its blocks checkpointed (``activation_checkpointing``),
    replicated (DDP: every rank holds all weights) or sharded (FSDP2: ``fully_shard`` on every block,
    then on the whole, so a rank holds 1/world of the weights, gradients and optimizer state), then
    ``torch.compile``\\ d (``compile``). ``model`` itself stays the module whose parameters train
    (under FSDP2 they become DTensor shards)."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"unknown distributed strategy {strategy!r}; use 'ddp' or 'fsdp'")
    if activation_checkpointing:
        checkpoint_activations(model)
    wrapped = model
    if info.enabled and strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        # A model whose forward may leave parameters unused on some batches (OmniTokenizer: an
        # image batch never reaches the temporal-patch embedding and head) says so; DDP then marks
        # them ready instead of waiting for their gradients forever.
        unused = bool(getattr(model, "ddp_find_unused_parameters", False))
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
    elif info.enabled:
        from torch.distributed.fsdp import fully_shard  # torch.distributed may be absent on some builds

        for block in model_blocks(model):
            if any(p.requires_grad for p in block.parameters()):
                fully_shard(block)
        fully_shard(model)
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def unwrap(model: nn.Module) -> nn.Module:
    """The trained module behind ``wrap_model``'s result (compiled and/or DDP-wrapped)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def is_sharded(model: nn.Module) -> bool:
    """True when ``model``'s parameters are FSDP2 shards (DTensors)."""
    return any(is_dtensor(p) for p in model.parameters())


def is_dtensor(t) -> bool:
    if not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every DTensor shard gathered into the whole tensor, on the CPU. Every rank
    must call this (the gathers are collective), with the same keys in the same order."""
    return {k: (v.full_tensor() if is_dtensor(v) else v).detach().cpu() for k, v in state.items()}


def set_gradient_sync(model: nn.Module, sync: bool):
    """A context in which ``model`` (DDP or FSDP2) does (``sync``) or does not all-reduce /
    reduce-scatter the gradients of a backward pass: gradient accumulation syncs on the last
    micro-batch only."""
    inner = getattr(model, "_orig_mod", model)
    if sync:
        return nullcontext()
    if hasattr(inner, "no_sync"):
        return inner.no_sync()
    if hasattr(inner, "set_requires_gradient_sync"):
        return _fsdp_no_sync(inner)
    return nullcontext()


@contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (every rank must call this)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag
