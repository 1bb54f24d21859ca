"""Sampling speed: MaskGIT parallel decoding vs autoregressive (KV-cached) decoding, one run.

Both models have the same size (dim, depth, heads, MLP ratio), the same factorized embeddings and
heads (vocabulary 2^18 as two 9-bit sub-tokens), the same class token, and generate the same
5 x 8 x 8 video token grid (320 tokens, MAGVIT-v2's 17-frame 64 x 64 clip at 8x space / 4x time):

* MLM: ``MaskedTokenModel.generate`` with ``--steps`` (12) parallel steps over all 320 positions;
* AR:  ``AutoregressiveTokenModel.generate``: one prefill of the class token, then 319 one-token
  steps against a KV cache preallocated for the whole sequence (written in place; no
  re-concatenation), sampling both sub-tokens of a token per step.

Counted: the whole ``generate`` call -- forward passes, sampling (temperature 1, Gumbel-max per
sub-token), MaskGIT's confidence ranking and re-masking, token joining, cache allocation; with
``--cfg`` (w != 0) both models run conditional and unconditional in one doubled batch. Not
counted: model construction, the warm-up calls, decoding tokens to pixels (the tokenizer costs the
same after either model). Weights are random (speed does not depend on them). Times are medians
of ``--repeats`` calls after ``--warmup`` calls, in one process, alternating the two models per
repeat so that machine load affects both alike. Run it alone: ``flock /tmp/vistok-cpu.lock python
bench/sampling.py``.

What to expect: MLM runs 12 networks on 321 positions, AR runs 320 networks on one position (plus
attention over its cache). MLM therefore does ~12x *more* arithmetic and ~27x *fewer*
sequential network evaluations; it is faster wherever a single-position step is bound by latency
(kernel launches, weight reads from memory) rather than by arithmetic -- GPUs/TPUs and large
models -- which is the paper's regime. On a small CPU at small batch the printout shows which of
the two effects wins on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch

from vistok.generate import AutoregressiveTokenModel, MaskedTokenModel, lm_config
from vistok.generate.config import LM_PRESETS


def build(kind: str, args) -> torch.nn.Module:
    cfg = lm_config(args.preset, kind=kind, vocab_size=2**18, num_subtokens=2, num_classes=10,
                    max_grid=tuple(args.grid), dropout=0.0)
    torch.manual_seed(0)
    model = (MaskedTokenModel if kind == "mlm" else AutoregressiveTokenModel)(cfg).eval()
    return model


def time_call(fn, repeats: int, device: torch.device) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="lm-small", choices=sorted(LM_PRESETS), help="model size for both (default lm-small)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--steps", type=int, default=12, help="MaskGIT steps (default 12)")
    p.add_argument("--grid", type=int, nargs=3, default=[5, 8, 8], metavar=("T", "H", "W"), help="token grid (default 5 8 8)")
    p.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance w for both (default 0)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per model and batch (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--bf16", action="store_true", help="both models under bfloat16 autocast")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    mlm, ar = build("mlm", args).to(device), build("ar", args).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    n = args.grid[0] * args.grid[1] * args.grid[2]
    params = sum(q.numel() for q in mlm.parameters())
    c = mlm.config
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {where}{', bf16 autocast' if args.bf16 else ''}")
    print(f"model {args.preset}: dim {c.dim}, depth {c.depth}, heads {c.heads}, {params / 1e6:.1f} M parameters (each model)")
    print(f"grid {tuple(args.grid)} = {n} tokens, vocabulary 2^18 as 2 x 9-bit sub-tokens, cfg w = {args.cfg}")
    print(f"MLM: {args.steps} parallel steps; AR: {n} KV-cached steps; median of {args.repeats} after {args.warmup} warm-up")
    print()
    print(f"{'batch':>5}  {'MLM s':>8}  {'AR s':>8}  {'AR/MLM':>7}  {'MLM tok/s':>10}  {'AR tok/s':>9}")
    for b in args.batch:
        labels = torch.arange(b, device=device) % 10

        def mlm_fn():
            with autocast:  # generate runs without gradients itself
                mlm.generate(labels, steps=args.steps, cfg_scale=args.cfg, generator=torch.Generator(device).manual_seed(0))

        def ar_fn():
            with autocast:
                ar.generate(labels, cfg_scale=args.cfg, generator=torch.Generator(device).manual_seed(0))

        for _ in range(args.warmup):
            mlm_fn()
            ar_fn()
        t_mlm, t_ar = [], []
        for _ in range(args.repeats):  # alternate, so load changes hit both
            t_mlm += time_call(mlm_fn, 1, device)
            t_ar += time_call(ar_fn, 1, device)
        m, a = statistics.median(t_mlm), statistics.median(t_ar)
        print(f"{b:>5}  {m:>8.3f}  {a:>8.3f}  {a / m:>6.2f}x  {b * n / m:>10.0f}  {b * n / a:>9.0f}")


if __name__ == "__main__":
    main()
