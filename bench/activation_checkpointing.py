"""Activation checkpointing (``activation_checkpointing=true`` in any training config): peak
memory of one training step against its time, with and without, for a tokenizer and an LM, in one
run.

    python bench/activation_checkpointing.py [--size 64] [--frames 9] [--batch 2] [--lm-grid 1,16,16] [--json out.json]

Peak memory is the most bytes held at once by the tensors the step creates (forward, loss,
backward, including the gradients it creates), counted exactly by
:class:`vistok.pipelines.budget.LiveTensorBytes`; the weights, the same either way, are reported apart. Times are the median of ``--repeats``
steps after one warm-up step; they depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vistok.generate.base import build_lm
from vistok.generate.config import lm_config
from vistok.pipelines.budget import LiveTensorBytes, format_bytes
from vistok.tokenizers.registry import load_tokenizer
from vistok.train.distributed import checkpoint_activations


def tokenizer_case(size: int, frames: int, batch: int):
    tok = load_tokenizer("default")
    model = type(tok)(tok.config).train()
    video = torch.rand(batch, 3, frames, size, size) * 2 - 1

    def step(m):
        out = m(video)
        return (out.x_hat - video).abs().mean() + out.loss

    return f"tokenizer default ({batch}x{frames}x{size}x{size})", model, step


def lm_case(grid: tuple[int, int, int], batch: int):
    cfg = lm_config("lm-small", vocab_size=1024, max_grid=grid, num_classes=10)
    model = build_lm(cfg).train()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 1024, (batch, *grid), generator=g)
    labels = torch.randint(0, 10, (batch,), generator=g)

    def step(m):
        prepared = m.training_batch(idx, labels, torch.Generator().manual_seed(1))
        logits = m(**prepared.inputs)  # one tensor per sub-token
        return sum(t.float().logsumexp(-1).mean() for t in (logits if isinstance(logits, list) else [logits]))

    return f"LM lm-small ({batch}x{'x'.join(map(str, grid))} tokens)", model, step


def measure(model, step, repeats: int) -> dict:
    def once():
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with LiveTensorBytes() as live:
            step(model).backward()
        return time.perf_counter() - t0, live.peak

    once()
    runs = [once() for _ in range(repeats)]
    return {"seconds": statistics.median(t for t, _ in runs), "peak_bytes": max(p for _, p in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lm-grid", default="1,16,16")
    ap.add_argument("--lm-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    grid = tuple(int(v) for v in args.lm_grid.split(","))
    rows = []
    for name, model, step in (tokenizer_case(args.size, args.frames, args.batch), lm_case(grid, args.lm_batch)):
        torch.manual_seed(0)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        plain = measure(model, step, args.repeats)
        blocks = checkpoint_activations(model)
        recomputed = measure(model, step, args.repeats)
        row = {"case": name, "blocks": blocks, "weight_bytes": weights, "plain": plain, "checkpointed": recomputed,
               "memory_ratio": recomputed["peak_bytes"] / plain["peak_bytes"],
               "time_ratio": recomputed["seconds"] / plain["seconds"]}
        rows.append(row)
        print(f"{name}: {blocks} blocks, weights {format_bytes(weights)}; step peak "
              f"{format_bytes(plain['peak_bytes'])} -> {format_bytes(recomputed['peak_bytes'])} "
              f"(x{row['memory_ratio']:.2f}), time {plain['seconds']:.2f} s -> {recomputed['seconds']:.2f} s "
              f"(x{row['time_ratio']:.2f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
