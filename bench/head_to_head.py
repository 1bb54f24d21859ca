"""MAGVIT-v2 ``tiny`` against OmniTokenizer ``omni-tiny`` on equal terms, in one run.

    python bench/head_to_head.py --steps 650 --time-budget 720 --out runs/head_to_head  # ~15 min, 2 idle cores
    python bench/head_to_head.py --steps 5 --out /tmp/h2h                # smoke test
    python bench/head_to_head.py --models omni-tiny --steps 5600 --time-budget 747 --out runs/h2h-time
                                  # omni-tiny for MAGVIT-v2's wall clock: the equal-time comparison

Both models have the same token budget (17 x 64 x 64 -> 5 x 8 x 8 tokens) and the same parameter
count (3.68 M and 3.71 M), and are trained by the same trainer (``vistok.train``) on the same data
-- the shipped sample clips and photographs, batches of 2 clips or 8 images, a quarter of the steps
images -- for the same number of steps, each under the same wall-clock cap (``--time-budget``).
Each model keeps its own recipe's optimizer settings (MAGVIT-v2 tiny: lr 1e-3; omni-tiny: 5e-4 as
transformers want less) and bottleneck (LFQ 2^18 against l2-normalized VQ 8192); OmniTokenizer's
image-only first stage is left out so that both see exactly the same batches (``--progressive``
puts it back).

Evaluation, on data neither saw: the held-out clip (carphone, all 117 usable frames at 176 x 144)
and four held-out scikit-image pictures (shorter side 128): PSNR, SSIM, MS-SSIM; codebook usage on
the held-out tokens of the clip and of the pictures (distinct codes, perplexity); throughput on the
held-out clip streamed in chunks of 16 frames (frames/s): encode alone, decode alone (both on frames
already in memory) and the whole file round trip; training step time (median over the run). Writes
``results.json``, ``results.md`` and ``side_by_side.png`` (original | MAGVIT-v2 | OmniTokenizer).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vistok.data.samples import heldout_clip, heldout_images
from vistok.pipelines.reconstruct import iter_input_chunks, plan_media, reconstruct_file
from vistok.tokenizers.registry import load_tokenizer
from vistok.train.config import load_train_config
from vistok.train.logging import read_metrics
from vistok.pictures import comparison_grid
from vistok.train.trainer import train

MODELS = {"magvit2-tiny": ("tiny", []), "omni-tiny": ("omni-tiny", ["stages=[]"])}


def usage(tokens: np.ndarray, vocab: int) -> dict:
    counts = np.bincount(tokens.ravel(), minlength=vocab).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return {"distinct_codes": int((counts > 0).sum()), "tokens": int(counts.sum()),
            "perplexity": float(np.exp(-(p * np.log(p)).sum())), "vocab": vocab}


@torch.no_grad()
def throughput(tok, path: Path, chunk_frames: int = 16) -> dict:
    """Frames/s of ``encode_stream`` and of ``decode_stream`` alone, on the clip's frames decoded
    into memory first (the file round trip's video decoding is not the tokenizer's cost)."""
    plan = plan_media(tok, path)
    chunks = list(iter_input_chunks(plan, chunk_frames, tok.temporal_compression))
    frames = sum(c.shape[2] for c in chunks)
    t = time.perf_counter()
    indices = list(tok.encode_stream(chunks))
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in tok.decode_stream(indices):
        pass
    decode_s = time.perf_counter() - t
    return {"encode_fps": frames / encode_s, "decode_fps": frames / decode_s}


def run_one(name: str, args) -> dict:
    preset, extra = MODELS[name]
    if args.progressive and name == "omni-tiny":
        extra = []
    overrides = extra + [f"steps={args.steps}", f"seed={args.seed}", f"image_every={max(args.steps // 4, 1)}",
                         f"checkpoint_every={args.steps}"]
    if args.progressive and name == "omni-tiny":
        half = args.steps // 2
        overrides.append(f"stages=[{{name: image, steps: {half}, data: {{image_fraction: 1.0}}}}, "
                         f"{{name: joint, steps: {args.steps - half}}}]")
    cfg = load_train_config(preset, overrides)
    run = args.out / name
    t0 = time.time()
    res = train(cfg, run, resume=(run / "checkpoint.pt").is_file(), time_budget=args.time_budget)
    wall = time.time() - t0
    rows = read_metrics(run / "metrics.jsonl")
    times = [rows[i]["time"] - rows[i - 1]["time"] for i in range(1, len(rows))]
    steps_between = [rows[i]["step"] - rows[i - 1]["step"] for i in range(1, len(rows))]
    per_step = statistics.median(t / s for t, s in zip(times, steps_between)) if times else wall / max(res.step, 1)
    tok = load_tokenizer(res.model_dir)
    out = {"params": sum(p.numel() for p in tok.parameters()), "steps": res.step, "train_wall_s": wall,
           "step_s": per_step, "final_train_psnr": rows[-1].get("psnr") if rows else None}
    t = time.time()
    clip = reconstruct_file(tok, heldout_clip(), chunk_frames=16)
    secs = time.time() - t
    out["clip"] = {k: clip.metrics[k] for k in ("psnr", "ssim", "ms_ssim")}
    out["clip"]["frames"] = int(clip.original.shape[0])
    out["clip"]["encode_decode_fps"] = clip.original.shape[0] / secs
    out["clip"].update(throughput(tok, heldout_clip()))
    out["clip_usage"] = usage(clip.tokens, tok.vocab_size)
    imgs = [reconstruct_file(tok, p, size=128) for p in heldout_images()]
    out["images_usage"] = usage(np.concatenate([r.tokens.ravel() for r in imgs]), tok.vocab_size)
    out["images"] = {k: float(np.mean([r.metrics[k] for r in imgs if r.metrics.get(k) is not None] or [math.nan]))
                     for k in ("psnr", "ssim", "ms_ssim")}
    out["images"]["count"] = len(imgs)
    out["_recon"] = clip.reconstructed
    out["_original"] = clip.original
    return out


def table(results: dict) -> str:
    names = list(results)
    rows = [
        ("parameters (M)", lambda r: f"{r['params'] / 1e6:.2f}"),
        ("steps trained", lambda r: str(r["steps"])),
        ("training step (s, median)", lambda r: f"{r['step_s']:.2f}"),
        ("held-out clip PSNR (dB)", lambda r: f"{r['clip']['psnr']:.2f}"),
        ("held-out clip SSIM", lambda r: f"{r['clip']['ssim']:.4f}"),
        ("held-out clip MS-SSIM", lambda r: f"{r['clip']['ms_ssim']:.4f}"),
        ("held-out images PSNR (dB)", lambda r: f"{r['images']['psnr']:.2f}"),
        ("held-out images SSIM", lambda r: f"{r['images']['ssim']:.4f}"),
        ("held-out images MS-SSIM", lambda r: f"{r['images']['ms_ssim']:.4f}"),
        ("vocabulary", lambda r: str(r["clip_usage"]["vocab"])),
        ("distinct codes on the clip", lambda r: f"{r['clip_usage']['distinct_codes']} / {r['clip_usage']['tokens']} tokens"),
        ("code perplexity on the clip", lambda r: f"{r['clip_usage']['perplexity']:.0f}"),
        ("distinct codes on the pictures", lambda r: f"{r['images_usage']['distinct_codes']} / {r['images_usage']['tokens']} tokens"),
        ("code perplexity on the pictures", lambda r: f"{r['images_usage']['perplexity']:.0f}"),
        ("encode (frames/s, 176x144)", lambda r: f"{r['clip']['encode_fps']:.1f}"),
        ("decode (frames/s, 176x144)", lambda r: f"{r['clip']['decode_fps']:.1f}"),
        ("file round trip incl. video I/O (frames/s)", lambda r: f"{r['clip']['encode_decode_fps']:.1f}"),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(f(results[n]) for n in names) + " |" for label, f in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--time-budget", type=float, default=None, help="seconds of training per model (same cap for both)")
    p.add_argument("--out", type=Path, default=Path("runs/head_to_head"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--progressive", action="store_true", help="train omni-tiny image-only for the first half")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                   help="which to train (e.g. only omni-tiny with --steps and --time-budget set to another run's "
                   "wall clock, for an equal-time comparison)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.models:
        print(f"== {name}", flush=True)
        results[name] = run_one(name, args)
    first = next(iter(results.values()))
    rows = [("original", first["_original"])] + [(n, r["_recon"]) for n, r in results.items()]
    comparison_grid(rows, frames=6, scale=2).save(args.out / "side_by_side.png")
    clean = {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in results.items()}
    clean["_settings"] = {"steps": args.steps, "time_budget": args.time_budget, "seed": args.seed,
                          "threads": torch.get_num_threads(), "progressive": args.progressive, "models": args.models}
    (args.out / "results.json").write_text(json.dumps(clean, indent=2) + "\n")
    md = table({n: r for n, r in clean.items() if not n.startswith("_")})
    (args.out / "results.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
