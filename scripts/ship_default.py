"""Turn a finished training run into the checkpoint shipped in the package.

    python scripts/ship_default.py runs/default

Copies the run's EMA model as float16 safetensors into src/vistok/assets/default-tokenizer/,
evaluates it on the held-out clip (all frames, native size) and writes MODEL_CARD.md with the
data, the steps, the training time and the measured metrics.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import vistok
from vistok.data.samples import heldout_clip, training_files
from vistok.reconstruct import reconstruct_file
from vistok.tokenizers.registry import DEFAULT_MODEL_DIR
from vistok.train.logging import read_metrics


def main(run: Path) -> None:
    tok = vistok.load_tokenizer(run / "model")
    DEFAULT_MODEL_DIR.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(DEFAULT_MODEL_DIR, weight_dtype=torch.float16)
    shipped = vistok.load_tokenizer("default")
    t = time.time()
    rec = reconstruct_file(shipped, heldout_clip())
    seconds = time.time() - t
    rows = read_metrics(run / "metrics.jsonl")
    cfg = json.loads((run / "train_config.json").read_text())
    first, last = rows[0], rows[-1]
    train_minutes = (last["time"] - first["time"]) / 60 * len(rows) / max(len(rows) - 1, 1)
    m = rec.metrics
    params = sum(p.numel() for p in shipped.parameters())
    size_mib = (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size / 2**20
    card = f"""# vistok default tokenizer (MAGVIT-v2 `tiny`)

- Architecture: MAGVIT-v2 causal 3D CNN, preset `tiny` ({params / 1e6:.2f} M parameters), LFQ with
  18 bits (vocabulary 262,144); 17 x 64 x 64 -> 5 x 8 x 8 tokens; time 4x, space 8x.
- Weights: EMA (decay {cfg['ema_decay']}), stored as float16 safetensors ({size_mib:.1f} MiB).
- Data: the sample media that installs from PyPI -- {', '.join(p.name for p in training_files())}
  -- as 17-frame 64 x 64 random crops (clips) and 1-frame crops (images, {cfg['data']['image_fraction']:.0%} of steps).
  Held out: {heldout_clip().name}.
- Training: {last['step']} steps from scratch, batch {cfg['data']['batch_size']} clips / {cfg['data']['image_batch_size']} images,
  AdamW lr {cfg['optim']['lr']} (warm-up {cfg['optim']['warmup_steps']}, cosine), L2 reconstruction + LFQ
  commitment and entropy losses (no GAN, no LPIPS: no pretrained weights offline), fp32, on 2 CPU
  cores (about {train_minutes:.0f} minutes). Command: `vistok train tiny --steps {last['step']} --out runs/default`.
- Final training batch PSNR {last.get('psnr', float('nan')):.2f} dB; codebook: {last.get('codes_used', 0):.0f} distinct codes
  in the last logging window.

## Held-out clip ({heldout_clip().name}, {m['frames']} frames at {m['height']} x {m['width']}, all frames)

| PSNR (dB) | SSIM | MS-SSIM | tokens | bpp before entropy coding | encode+decode frames/s |
|---|---|---|---|---|---|
| {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ms_ssim']:.4f} | {m['tokens']} | {m['bits_per_pixel_raw']:.4f} | {m['frames'] / seconds:.1f} |

Reproduce: `vistok reconstruct default <carphone_pristine.mp4> out.mp4`.
"""
    (DEFAULT_MODEL_DIR / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/default"))
