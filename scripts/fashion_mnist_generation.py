"""Class-conditional generation on Fashion-MNIST, end to end on a CPU (docs/generation.md, Results).

    sudo apt install dataset-fashion-mnist        # 70 000 labelled 28 x 28 images
    python scripts/fashion_mnist_generation.py --out runs/fashion

Stages (each skipped when its output already exists, so the script resumes where it stopped):

1. ``tokenizer/``: a MAGVIT-v2 tokenizer trained on the 60 000 training images
   (``configs/fashion-mnist-tokenizer.yaml``: 32 x 32 -> 8 x 8 tokens of 10 bits);
2. ``tokens-train.npz`` / ``tokens-test.npz``: both splits tokenized (``vistok encode-set``);
3. ``lm/``: a class-conditional masked token model (``configs/fashion-mnist-lm.yaml``);
   ``ar/``: the autoregressive baseline of the same size (``--ar``);
4. ``classifier.safetensors``: a small CNN trained on the real 28 x 28 training images;
5. evaluation: the classifier's accuracy on real test images, on their tokenizer reconstructions
   and on generated images (labelled with the class asked for) at several guidance scales;
   ``samples_cfg*.png`` (one row per class), ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_tokenizer(out: Path, data: Path) -> Path:
    from vistok.train.config import load_train_config
    from vistok.train.trainer import train

    run = out / "tokenizer"
    if (run / "model" / "config.json").is_file():
        return run / "model"
    cfg = load_train_config(ROOT / "configs" / "fashion-mnist-tokenizer.yaml", [f"data.path={data}"])
    log(f"training the tokenizer ({cfg.steps} steps)")
    res = train(cfg, run, resume=(run / "checkpoint.pt").is_file())
    return res.model_dir


def stage_tokens(out: Path, data: Path, model_dir: Path) -> dict:
    from vistok.data.labelled import open_labelled
    from vistok.generate.data import save_token_set
    from vistok.pipelines.encode_set import tokenize_labelled
    from vistok.tokenizers.registry import load_tokenizer

    stats_path = out / "tokens.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text())
    tok = load_tokenizer(model_dir)
    stats = {}
    for split in ("train", "test"):
        t = time.time()
        src = open_labelled(data, size=32, split=split)
        res = tokenize_labelled(tok, src, batch_size=250)
        save_token_set(out / f"tokens-{split}.npz", res.indices, res.labels, res.meta)
        stats[split] = {"items": int(len(res.labels)), "grid": list(res.indices.shape[1:]), "psnr": res.psnr, "seconds": time.time() - t}
        log(f"tokenized {split}: {len(res.labels)} images, grid {res.indices.shape[1:]}, recon PSNR {res.psnr:.2f} dB")
    stats_path.write_text(json.dumps(stats, indent=2))
    return stats


def real_images(data: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n 1 28 28)`` in [-1, 1] and labels."""
    from vistok.data.idx import load_idx_split

    x, y = load_idx_split(data, split)
    return torch.from_numpy(x.copy()).float().div(127.5).sub(1)[:, None], torch.from_numpy(y)


def stage_classifier(out: Path, data: Path):
    from vistok.metrics.classifier import SmallConvClassifier, train_classifier

    path = out / "classifier.safetensors"
    if path.is_file():
        model = SmallConvClassifier(10)
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    x, y = real_images(data, "train")
    log("training the classifier on 60 000 real images (3 epochs)")
    t = time.time()
    model = train_classifier(x, y, epochs=3, batch_size=128, seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    log(f"classifier trained in {time.time() - t:.0f} s")
    return model


def stage_lm(out: Path, kind: str, steps: int | None) -> Path:
    from vistok.generate.train import load_lm_train_config, train_lm

    run = out / ("lm" if kind == "mlm" else "ar")
    if (run / "model" / "config.json").is_file():
        return run / "model"
    overrides = [f"data={out / 'tokens-train.npz'}", f"tokenizer={out / 'tokenizer' / 'model'}", f"model.kind={kind}"]
    if steps is not None:
        overrides.append(f"steps={steps}")
    cfg = load_lm_train_config(ROOT / "configs" / "fashion-mnist-lm.yaml", overrides)
    log(f"training the {kind} token model ({cfg.steps} steps)")
    return train_lm(cfg, run, resume=(run / "checkpoint.pt").is_file()).model_dir


def to_classifier_input(tokenizer, indices: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Decode ``(n 1 8 8)`` tokens and crop back to ``(n 1 28 28)`` grey in [-1, 1]."""
    from vistok.data.idx import unfit_images

    out = []
    with torch.no_grad():
        for chunk in indices.split(batch_size):
            out.append(unfit_images(tokenizer.decode_indices(chunk).float().clamp(-1, 1)))
    return torch.cat(out)[:, None]


def class_grid(path: Path, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], per_class: int, scale: int = 2) -> Path:
    """One row per class: its name, then ``per_class`` images ``(n 1 h w)`` in [-1, 1]."""
    from PIL import Image, ImageDraw

    h, w = images.shape[-2:]
    pad, label_w = 2, 96
    rows = len(class_names)
    canvas = Image.new("L", (label_w + per_class * (w * scale + pad), rows * (h * scale + pad)), 255)
    draw = ImageDraw.Draw(canvas)
    pixels = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    for c, name in enumerate(class_names):
        y = c * (h * scale + pad)
        draw.text((4, y + h * scale // 2 - 6), name, fill=0)
        idx = (labels == c).nonzero().flatten()[:per_class].tolist()
        for j, i in enumerate(idx):
            img = Image.fromarray(pixels[i]).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(img, (label_w + j * (w * scale + pad), y))
    canvas.save(path)
    return path


def evaluate(out: Path, data: Path, classifier, lm_dirs: dict[str, Path], *, per_class: int, cfg_scales: list[float], steps: int) -> dict:
    from vistok.generate.base import load_lm
    from vistok.generate.data import load_token_set
    from vistok.metrics.classifier import accuracy, per_class_accuracy
    from vistok.tokenizers.registry import load_tokenizer

    tok = load_tokenizer(out / "tokenizer" / "model")
    test = load_token_set(out / "tokens-test.npz")
    names = test.class_names
    x_real, y_real = real_images(data, "test")
    results: dict = {"classes": names, "per_class_samples": per_class, "sampling_steps": steps}
    results["real_test"] = {"accuracy": accuracy(classifier, x_real, y_real), "items": len(y_real)}
    x_rec = to_classifier_input(tok, torch.from_numpy(test.indices))
    results["reconstructed_test"] = {
        "accuracy": accuracy(classifier, x_rec, y_real),
        "psnr_28x28": float((10 * torch.log10(4 / ((x_rec - x_real) ** 2).mean(dim=(1, 2, 3)))).mean()),
    }
    log(f"classifier accuracy: real test {results['real_test']['accuracy']:.4f}, reconstructions {results['reconstructed_test']['accuracy']:.4f}")
    first = torch.arange(len(y_real))
    shown = torch.cat([first[y_real == c][:per_class] for c in range(len(names))])
    class_grid(out / "real_test.png", x_real[shown], y_real[shown], names, 10)
    class_grid(out / "reconstructed_test.png", x_rec[shown], y_real[shown], names, 10)
    labels = torch.arange(len(names)).repeat_interleave(per_class)
    for kind, lm_dir in lm_dirs.items():
        lm = load_lm(lm_dir).eval()
        for w in cfg_scales:
            gen = torch.Generator().manual_seed(0)
            t = time.time()
            tokens = []
            with torch.no_grad():
                for chunk in labels.split(250):
                    kw = {"steps": steps} if kind == "mlm" else {}
                    tokens.append(lm.generate(chunk, cfg_scale=w, generator=gen, **kw))
            seconds = time.time() - t
            tokens = torch.cat(tokens)
            x_gen = to_classifier_input(tok, tokens)
            acc = accuracy(classifier, x_gen, labels)
            per = per_class_accuracy(classifier, x_gen, labels, len(names))
            distinct = len({tuple(g.flatten().tolist()) for g in tokens})
            copies = _copies(tokens, torch.from_numpy(load_token_set(out / "tokens-train.npz").indices))
            key = f"{kind}_cfg{w:g}"
            results[key] = {"accuracy": acc, "per_class": per, "sampling_seconds": seconds, "samples": len(labels),
                            "distinct_grids": distinct, "copies_of_training_grids": copies}
            class_grid(out / f"samples_{key}.png", x_gen, labels, names, 10)
            log(f"{key}: accuracy {acc:.4f} on {len(labels)} samples, {seconds:.1f} s sampling, {copies} exact training copies")
    return results


def _copies(samples: torch.Tensor, train: torch.Tensor) -> int:
    """How many sampled grids equal a training grid exactly (memorization check)."""
    seen = {g.tobytes() for g in train.reshape(len(train), -1).numpy().astype(np.int64)}
    return sum(g.tobytes() in seen for g in samples.reshape(len(samples), -1).numpy().astype(np.int64))


def write_markdown(out: Path, results: dict, token_stats: dict) -> Path:
    lines = [
        "| images | classifier accuracy | notes |",
        "|---|---|---|",
        f"| real test images | {results['real_test']['accuracy']:.3f} | {results['real_test']['items']} images |",
        f"| tokenizer reconstructions of them | {results['reconstructed_test']['accuracy']:.3f} | "
        f"PSNR {results['reconstructed_test']['psnr_28x28']:.2f} dB at 28x28 |",
    ]
    for key, r in results.items():
        if isinstance(r, dict) and "per_class" in r:
            kind, w = key.split("_cfg")
            lines.append(
                f"| generated, {kind.upper()} guidance {w} | {r['accuracy']:.3f} | {r['samples']} samples, "
                f"{r['sampling_seconds']:.1f} s, {r['distinct_grids']} distinct, {r['copies_of_training_grids']} training copies |"
            )
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/fashion"))
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--ar", action="store_true", help="also train and evaluate the autoregressive baseline")
    p.add_argument("--lm-steps", type=int, default=None, help="override the LM training steps")
    p.add_argument("--per-class", type=int, default=100, help="generated samples per class")
    p.add_argument("--cfg", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="guidance scales to evaluate")
    p.add_argument("--steps", type=int, default=12, help="MaskGIT sampling steps")
    args = p.parse_args(argv)
    from vistok.data.idx import is_idx_folder

    if not is_idx_folder(args.data):
        print(f"error: {args.data} holds no Fashion-MNIST (sudo apt install dataset-fashion-mnist)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = stage_tokenizer(args.out, args.data)
    token_stats = stage_tokens(args.out, args.data, model_dir)
    lms = {"mlm": stage_lm(args.out, "mlm", args.lm_steps)}
    if args.ar:
        lms["ar"] = stage_lm(args.out, "ar", args.lm_steps)
    classifier = stage_classifier(args.out, args.data)
    results = evaluate(args.out, args.data, classifier, lms, per_class=args.per_class, cfg_scales=args.cfg, steps=args.steps)
    results["tokens"] = token_stats
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(write_markdown(args.out, results, token_stats).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
