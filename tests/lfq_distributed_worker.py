"""Worker for ``tests/test_lfq_distributed.py``; run under ``torch.distributed.run`` (gloo, CPU).

Not a test module itself (pytest collects only ``test_*.py``). Usage::

    python -m torch.distributed.run --nproc_per_node 2 --standalone tests/lfq_distributed_worker.py OUT_DIR [SECONDS]

Every rank draws the same full batch from a fixed seed, keeps its own slice of it, and computes the
LFQ statistics with codebook statistics all-reduced across ranks. It then gathers the slices that
the ranks actually hold and recomputes everything with a non-distributed LFQ on the gathered batch
(the single-process reference). Each rank writes the raw values and the differences to
``OUT_DIR/rank{r}.json``; the test asserts on them. Nothing is asserted here, so one failing check
does not hide the others.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from vistok.quantizers import LFQ, EntropyWeightSchedule

BITS = 7  # odd, so the low / high bit groups of the factorization have different widths
TAU = 0.01
BATCH = 4  # full batch; the ranks hold halves
SHAPE = (BATCH, BITS, 2, 3, 3)  # b K t h w
# Latents of scale 0.01 at tau 0.01 give logits 4 z / tau of order 4: soft per-token distributions,
# so every term of the entropy and its gradient is far from zero and the comparisons are sensitive.
SCALE = 0.01


def make_lfq(sync) -> LFQ:
    return LFQ(
        bits=BITS,
        entropy_temperature=TAU,
        commitment_weight=0.25,
        entropy_schedule=EntropyWeightSchedule(weight=0.1, start_factor=1.0),
        sync_distributed=sync,
    )


def make_encoder() -> nn.Module:
    """A 1x1x1 convolution near the identity, the same on every rank (as DDP broadcasts it).

    Near the identity and without a large bias it keeps the latents at scale ``SCALE``, where the
    codebook entropy contributes a sizeable share of the parameter gradient.
    """
    generator = torch.Generator().manual_seed(99)
    conv = nn.Conv3d(BITS, BITS, 1, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(BITS, dtype=torch.float64)[:, :, None, None, None])
        conv.weight.add_(0.2 * torch.randn(conv.weight.shape, generator=generator, dtype=torch.float64))
        conv.bias.copy_(SCALE * torch.randn(BITS, generator=generator, dtype=torch.float64))
    return conv


def gather_cat(local: torch.Tensor) -> torch.Tensor:
    """Concatenate along the batch axis the tensors the ranks hold (sizes may differ per rank)."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([local.shape[0]]))
    # all_gather needs equal shapes: pad every rank's tensor to the largest and cut back.
    most = max(int(s) for s in sizes)
    padded = local.new_zeros((most, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s)] for g, s in zip(gathered, sizes)])


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def main(out_dir: str, deadline_s: int) -> None:
    # Last resort against a hang (e.g. a peer that died before a collective): SIGALRM's default
    # action ends the process even while it is blocked inside gloo.
    signal.alarm(deadline_s)
    dist.init_process_group("gloo", timeout=timedelta(seconds=deadline_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    half = BATCH // world

    generator = torch.Generator().manual_seed(1234)
    full = torch.randn(SHAPE, generator=generator, dtype=torch.float64) * SCALE
    local = full[rank * half : (rank + 1) * half].clone()
    gathered = gather_cat(local)  # what the ranks really hold, concatenated in rank order
    result: dict[str, object] = {"rank": rank, "world": world}

    # (a, b) codebook entropy: global on every rank, equal to the single-process value.
    q_sync = make_lfq("auto").train()
    q_ref = make_lfq(False).train()
    z_local = local.clone().requires_grad_()
    out = q_sync(z_local)
    z_full = gathered.clone().requires_grad_()
    ref = q_ref(z_full)
    result["codebook_entropy"] = out.codebook_entropy.item()
    result["codebook_entropy_full_reference"] = ref.codebook_entropy.item()

    # (c) gradient of the global codebook entropy w.r.t. this rank's own latents. The forward
    # all-reduce makes the entropy a function of every rank's latents; its backward sums the
    # identical incoming gradients of the W ranks, so each rank gets W times the true gradient.
    (grad_local,) = torch.autograd.grad(out.codebook_entropy, z_local)
    (grad_full,) = torch.autograd.grad(ref.codebook_entropy, z_full)
    grad_ref_slice = grad_full[rank * half : (rank + 1) * half]
    result["grad_abs_max"] = float(grad_ref_slice.abs().max())
    result["grad_err_vs_world_times_reference"] = max_abs(grad_local, world * grad_ref_slice)
    result["grad_err_vs_reference"] = max_abs(grad_local, grad_ref_slice)

    # DDP-style: a shared parameter (a 1x1x1 "encoder" identical on every rank) feeding the LFQ,
    # the whole LFQ loss, gradients all-reduced and divided by W. With equal shards this must give
    # the single-process gradient of the full-batch loss: the local means (commitment, per-sample
    # entropy) average to the global means, and the W-fold codebook gradient is divided back.
    encoder = make_encoder()
    loss = q_sync(encoder(local)).loss
    grads = torch.autograd.grad(loss, list(encoder.parameters()))
    for g in grads:
        dist.all_reduce(g)
        g /= world
    ref_loss = q_ref(encoder(gathered)).loss
    ref_grads = torch.autograd.grad(ref_loss, list(encoder.parameters()))
    result["ddp_param_grad_abs_max"] = max(float(g.abs().max()) for g in ref_grads)
    result["ddp_param_grad_err"] = max(max_abs(g, r) for g, r in zip(grads, ref_grads))
    # Control: the same averaging with per-rank (unsynchronized) codebook entropies must miss the
    # full-batch gradient, or the check above would prove nothing.
    loss_unsynced = make_lfq(False).train()(encoder(local)).loss
    grads_unsynced = torch.autograd.grad(loss_unsynced, list(encoder.parameters()))
    for g in grads_unsynced:
        dist.all_reduce(g)
        g /= world
    result["ddp_param_grad_err_unsynced"] = max(max_abs(g, r) for g, r in zip(grads_unsynced, ref_grads))

    # The same through torch's own DistributedDataParallel (its bucketed gradient all-reduce runs
    # in the same backward pass as the all-reduce inside the LFQ).
    ddp_encoder = nn.parallel.DistributedDataParallel(make_encoder())
    q_sync(ddp_encoder(local)).loss.backward()
    result["real_ddp_param_grad_err"] = max(
        max_abs(p.grad, r) for p, r in zip(ddp_encoder.module.parameters(), ref_grads)
    )

    # sync_distributed=False, and "auto" in evaluation mode: each rank's own local entropy (the
    # test recomputes the expected values in a plain single process).
    result["codebook_entropy_sync_false"] = make_lfq(False).train()(local).codebook_entropy.item()
    result["codebook_entropy_auto_eval"] = make_lfq("auto").eval()(local).codebook_entropy.item()

    # sync_distributed=True forces the all-reduce even in evaluation mode.
    result["codebook_entropy_sync_true_eval"] = make_lfq(True).eval()(local).codebook_entropy.item()

    # Unequal shards (3 + 1 samples): the token count is all-reduced along with the sums.
    sizes = [3, 1]
    start = sum(sizes[:rank])
    uneven = full[start : start + sizes[rank]]
    result["uneven_codebook_entropy"] = q_sync(uneven).codebook_entropy.item()
    result["uneven_codebook_entropy_reference"] = q_ref(gather_cat(uneven)).codebook_entropy.item()

    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 120)
