"""Turn a finished training run into a tokenizer shipped in the package, with its model card.

    python scripts/ship_model.py runs/main default --eval eval-heldout --data "the vistok corpus" \\
        --command "vistok train configs/corpus-default.yaml --data ... --out runs/main" \\
        --history "warm-started from the previous default (1500 steps on the sample media)"

Copies the run's EMA model as float16 safetensors into the folder of the shipped name
(``vistok.tokenizers.shipped.SHIPPED_MODELS``) and writes MODEL_CARD.md from what the run recorded
(``train_config.json``, ``metrics.jsonl``) and from a ``vistok eval`` report of the shipped model on
held-out data (``--eval``: its ``eval.json``; the shipped model must be its first model, so the
figures are of the float16 weights that ship). Anything below a ``<!-- measured elsewhere -->``
line of an existing card (e.g. rate-distortion results) is kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import vistok
from vistok.atomic import atomic_write_text
from vistok.tokenizers.shipped import SHIPPED_MODELS
from vistok.train.logging import read_metrics

KEEP_MARK = "<!-- measured elsewhere -->"


def describe(tok) -> str:
    cfg = tok.config
    q = tok.quantizer
    if tok.model_type == "omni":
        arch = (f"OmniTokenizer spatial-temporal transformer (width {cfg.dim}, {cfg.heads} heads, "
                f"{cfg.encoder_depth} + {cfg.decoder_depth} blocks, {cfg.patch_size} x {cfg.patch_size} patches)")
    else:
        arch = (f"MAGVIT-v2 causal 3D CNN (widths {', '.join(str(cfg.base_channels * m) for m in cfg.channel_multipliers)}, "
                f"{cfg.num_res_blocks} residual block(s) per stage)")
    if hasattr(q, "bits"):
        bottleneck = f"LFQ with {q.bits} bits (vocabulary {2 ** q.bits:,})"
    elif hasattr(q, "codebook_size"):
        bottleneck = f"VQ with a {q.codebook_size:,}-entry codebook of dimension {q.codebook_dim}"
    else:
        bottleneck = f"{type(q).__name__} bottleneck"
    t, s = tok.temporal_compression, tok.spatial_compression
    return f"{arch}, {bottleneck}; time {t}x, space {s}x (17 x 64 x 64 -> {' x '.join(map(str, tok.latent_shape(17, 64, 64)))} tokens)"


def objective(cfg: dict, quantizer=None) -> str:
    loss = cfg["loss"]
    terms = [f"{loss['reconstruction'].upper()} reconstruction"]
    if loss.get("perceptual_weight"):
        frames = loss.get("perceptual_frames")
        terms.append(f"{loss['perceptual_weight']} x LPIPS-VGG" + (f" ({frames} random frames per clip)" if frames else ""))
    if loss.get("ms_ssim_weight"):
        terms.append(f"{loss['ms_ssim_weight']} x (1 - MS-SSIM)")
    if loss.get("adversarial_weight"):
        terms.append(f"{loss['adversarial_weight']} x adversarial from step {loss['gan_start_step']} (LeCAM {loss['lecam_weight']})")
    if quantizer is not None and not hasattr(quantizer, "bits") and hasattr(quantizer, "codebook_size"):
        kind = "EMA-updated" if getattr(quantizer, "ema", False) else "learned"
        return " + ".join(terms + [f"VQ commitment loss ({kind} codebook)"])
    q = (cfg.get("model") or {}).get("quantizer") or {}
    entropy = "LFQ commitment and entropy losses"
    details = []
    if "entropy_weight" in q:
        details.append(f"entropy weight {q['entropy_weight']}")
    if q.get("entropy_anneal_factor") == 1:
        details.append("not re-annealed")
    terms.append(entropy + (f" ({', '.join(details)})" if details else ""))
    text = " + ".join(terms)
    if q.get("bit_dropout"):
        text += (f"; LFQ bit dropout {q['bit_dropout']} (in that fraction of the samples a random number n of "
                 "low-order bits is zeroed, as `vistok compress --drop-bits n` decodes them)")
    return text


def data_text(cfg: dict, described: str | None = None) -> str:
    d = cfg["data"]
    where = described or (f"`{d['path']}`" if d.get("path") else "the sample media that installs from PyPI")
    scale = f", from frames whose shorter side is {d['scale']} px" if d.get("scale") else ""
    grey = f"; {d['grayscale']:.0%} of clips made grey" if d.get("grayscale") else ""
    return (f"{where} -- {d['frames']}-frame {d['size']} x {d['size']} random crops{scale} (clips) and 1-frame "
            f"crops (images, {d['image_fraction']:.0%} of steps){grey}")


def eval_table(report: dict) -> str:
    cols = [("psnr", "PSNR", ".2f"), ("psnr_first", "PSNR 1st frame", ".2f"), ("psnr_later", "PSNR later", ".2f"),
            ("ms_ssim", "MS-SSIM", ".3f"), ("lpips_vgg", "LPIPS-VGG", ".3f"), ("rfid", "rFID", ".1f"),
            ("rfvd", "rFVD", ".0f"), ("chroma_error_grey", "chroma err. grey", ".2f"), ("bpp", "bpp", ".4f")]
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    lines = ["| method | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, m in report["models"].items():
        a = m["aggregate"]
        lines.append(f"| {label} | " + " | ".join(fmt(a.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines)


def main(run: Path, name: str, command: str, eval_dir: Path, *, history: str | None = None, data: str | None = None,
         eval_set: str | None = None, eval_note: str = "", results: Path = Path("docs/results")) -> None:
    out = SHIPPED_MODELS[name]
    tok = vistok.load_tokenizer(run / "model")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out, weight_dtype=torch.float16)
    shipped = vistok.load_tokenizer(name)
    report = json.loads((eval_dir / "eval.json").read_text())
    results.mkdir(parents=True, exist_ok=True)
    per_clip = results / f"{name}-heldout-eval.md"
    for suffix in (".md", ".json"):  # the report the card quotes, kept beside the docs
        atomic_write_text(per_clip.with_suffix(suffix), (eval_dir / f"eval{suffix}").read_text())
    first = next(iter(report["models"]))
    rows = read_metrics(run / "metrics.jsonl")
    cfg = json.loads((run / "train_config.json").read_text())
    minutes = (rows[-1]["time"] - rows[0]["time"]) / 60 * len(rows) / max(len(rows) - 1, 1)
    params = sum(p.numel() for p in shipped.parameters())
    size_mib = (out / "model.safetensors").stat().st_size / 2**20
    stages = cfg.get("stages") or []
    schedule = (" then ".join(f"{s['steps']} steps {s.get('name') or ''}" for s in stages) if stages
                else f"{rows[-1]['step']} steps")
    start = history or (f"starting from `{Path(cfg['init_from']).name}`" if cfg.get("init_from") else "from scratch")
    p = report["protocol"]
    n_clips = sum(c["frames"] > 1 for c in report["clips"])
    card = f"""# vistok shipped tokenizer `{name}`

- Architecture: {describe(shipped)}; {params / 1e6:.2f} M parameters.
- Weights: EMA (decay {cfg['ema_decay']}), stored as float16 safetensors ({size_mib:.1f} MiB).
- Data: {data_text(cfg, data)}. The corpus, its licences and its held-out split: docs/corpus.md.
- Training: {schedule}, {start}; batch {cfg['data']['batch_size']} clips / {cfg['data']['image_batch_size']} images,
  AdamW lr {cfg['optim']['lr']} (warm-up {cfg['optim']['warmup_steps']}, cosine); {objective(cfg, shipped.quantizer)}; {cfg['precision']}.
  Hardware: CPU only, 2 cores shared with other jobs, about {minutes:.0f} minutes for this run.
  Command: `{command}`.
- Final training batch PSNR {rows[-1].get('psnr', float('nan')):.2f} dB.

## Held-out evaluation (never trained on)

`vistok eval` on {n_clips} held-out clip(s) and {len(report['clips']) - n_clips} still(s)
({eval_set or ', '.join(sorted({Path(c['source']).parent.name for c in report['clips']}))}), {p['frames']} frames, shorter side {p['size']},
centre crop {p['crop']}. `{first}` is this model as shipped (float16); the other rows are the trivial baseline
and the codecs at the same bits per pixel where listed. rFID/rFVD over this few samples are
indicative only (see the eval report's notes).{(" " + eval_note) if eval_note else ""}

{eval_table(report)}

Per clip: {per_clip.as_posix()}.
"""
    card_path = out / "MODEL_CARD.md"
    if card_path.is_file() and KEEP_MARK in card_path.read_text():
        card += "\n" + KEEP_MARK + card_path.read_text().split(KEEP_MARK, 1)[1]
    atomic_write_text(card_path, card)
    print(card)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="training run folder (train_config.json, metrics.jsonl, model/)")
    ap.add_argument("name", choices=sorted(SHIPPED_MODELS))
    ap.add_argument("--command", required=True, help="the training command, quoted in the card")
    ap.add_argument("--eval", dest="eval_dir", type=Path, required=True, help="a `vistok eval` folder of the shipped model")
    ap.add_argument("--history", help="what the run started from, when it was warm-started")
    ap.add_argument("--data", help="how the card names the training data (default: the run's data.path)")
    ap.add_argument("--eval-set", help="how the card names the held-out items (default: their folders)")
    ap.add_argument("--eval-note", default="", help="a sentence added after the evaluation's description")
    ap.add_argument("--results", type=Path, default=Path("docs/results"), help="where the eval report is copied")
    a = ap.parse_args()
    main(a.run, a.name, a.command, a.eval_dir, history=a.history, data=a.data, eval_set=a.eval_set,
         eval_note=a.eval_note, results=a.results)
