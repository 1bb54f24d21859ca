"""Turn a finished training run into a checkpoint shipped in the package.

    python scripts/ship_model.py runs/default default "vistok train tiny --steps 1500 --out runs/default"
    python scripts/ship_model.py runs/tiny-codec2 tiny-codec "vistok train configs/tiny-codec.yaml ..."

Copies the run's EMA model as float16 safetensors into the folder of the shipped name
(``vistok.tokenizers.registry.SHIPPED_MODELS``), evaluates it on the held-out clip (all frames,
native size) and writes MODEL_CARD.md with the data, the steps, the training time, the command and
the measured metrics. Anything below a ``<!-- measured elsewhere -->`` line of an existing card
(e.g. rate-distortion results) is kept.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import vistok
from vistok.data.samples import heldout_clip, training_files
from vistok.pipelines.reconstruct import reconstruct_file
from vistok.tokenizers.registry import SHIPPED_MODELS
from vistok.train.logging import read_metrics

KEEP_MARK = "<!-- measured elsewhere -->"


def describe(tok) -> str:
    cfg = tok.config
    q = tok.quantizer
    if tok.model_type == "omni":
        arch = (f"OmniTokenizer spatial-temporal transformer (width {cfg.dim}, {cfg.heads} heads, "
                f"{cfg.encoder_depth} + {cfg.decoder_depth} blocks, {cfg.patch_size} x {cfg.patch_size} patches)")
    else:
        arch = "MAGVIT-v2 causal 3D CNN"
    bottleneck = (f"LFQ with {q.bits} bits (vocabulary {2 ** q.bits:,})" if hasattr(q, "bits")
                  else f"{type(q).__name__} bottleneck")
    t, s = tok.temporal_compression, tok.spatial_compression
    return f"{arch}, {bottleneck}; time {t}x, space {s}x (17 x 64 x 64 -> {' x '.join(map(str, tok.latent_shape(17, 64, 64)))} tokens)"


def main(run: Path, name: str, command: str) -> None:
    out = SHIPPED_MODELS[name]
    tok = vistok.load_tokenizer(run / "model")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out, weight_dtype=torch.float16)
    shipped = vistok.load_tokenizer(name)
    t = time.time()
    rec = reconstruct_file(shipped, heldout_clip())
    seconds = time.time() - t
    rows = read_metrics(run / "metrics.jsonl")
    cfg = json.loads((run / "train_config.json").read_text())
    first, last = rows[0], rows[-1]
    train_minutes = (last["time"] - first["time"]) / 60 * len(rows) / max(len(rows) - 1, 1)
    m = rec.metrics
    params = sum(p.numel() for p in shipped.parameters())
    size_mib = (out / "model.safetensors").stat().st_size / 2**20
    stages = cfg.get("stages") or []
    ms = f" + {cfg['loss']['ms_ssim_weight']} x (1 - MS-SSIM)" if cfg["loss"].get("ms_ssim_weight") else ""
    p_drop = cfg.get("model", {}).get("bit_dropout")
    dropout = f", LFQ bit dropout {p_drop} (low bits zeroed as the codec's --drop-bits)" if p_drop else ""
    schedule = (" then ".join(f"{s['steps']} steps {s.get('name') or ''} (image share "
                              f"{s.get('data', {}).get('image_fraction', cfg['data']['image_fraction']):.0%})" for s in stages)
                if stages else f"{last['step']} steps (images {cfg['data']['image_fraction']:.0%} of steps)")
    card = f"""# vistok shipped tokenizer `{name}`

- Architecture: {describe(shipped)}; {params / 1e6:.2f} M parameters.
- Weights: EMA (decay {cfg['ema_decay']}), stored as float16 safetensors ({size_mib:.1f} MiB).
- Data: the sample media that installs from PyPI -- {', '.join(p.name for p in training_files())}
  -- as 17-frame 64 x 64 random crops (clips) and 1-frame crops (images). Held out: {heldout_clip().name}.
- Training: {schedule}, {f"starting from `{Path(cfg['init_from']).name}`" if cfg.get('init_from') else 'from scratch'}; batch {cfg['data']['batch_size']} clips / {cfg['data']['image_batch_size']} images,
  AdamW lr {cfg['optim']['lr']} (warm-up {cfg['optim']['warmup_steps']}, cosine), L2 reconstruction{ms} + quantizer
  losses{dropout} (no GAN, no LPIPS: no pretrained weights offline), {cfg['precision']}, on 2 CPU cores
  (about {train_minutes:.0f} minutes). Command: `{command}`.
- Final training batch PSNR {last.get('psnr', float('nan')):.2f} dB; codebook: {last.get('codes_used', 0):.0f} distinct codes
  in the last logging window.

## Held-out clip ({heldout_clip().name}, {m['frames']} frames at {m['height']} x {m['width']}, all frames)

| PSNR (dB) | SSIM | MS-SSIM | tokens | bpp before entropy coding | encode+decode frames/s |
|---|---|---|---|---|---|
| {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ms_ssim']:.4f} | {m['tokens']} | {m['bits_per_pixel_raw']:.4f} | {m['frames'] / seconds:.1f} |

Reproduce: `vistok reconstruct {name} <carphone_pristine.mp4> out.mp4`.
"""
    card_path = out / "MODEL_CARD.md"
    if card_path.is_file() and KEEP_MARK in card_path.read_text():
        card += "\n" + KEEP_MARK + card_path.read_text().split(KEEP_MARK, 1)[1]
    card_path.write_text(card)
    print(card)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[2] not in SHIPPED_MODELS:
        sys.exit(f"usage: python scripts/ship_model.py RUN_DIR {{{','.join(SHIPPED_MODELS)}}} 'TRAINING COMMAND'")
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
