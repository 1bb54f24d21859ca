"""One training step of each preset on any device: time, peak memory, FLOPs and model FLOP utilisation.

    python bench/train_step.py                      # CPU: tiny and lm-tiny at batch 2 (a minute)
    python bench/train_step.py --device cuda --precision bf16 \\
        --tokenizers tiny,ucf-128,imagenet-256,omni-paper --lms lm-small,lm-base,lm-large \\
        --batch 1,4,8 --lm-batch 32,128 --json step.json

The step is the trainers' own ``train_step`` (``vistok.train.trainer.Trainer``,
``vistok.generate.train.LMTrainer``): for a tokenizer the forward pass, reconstruction, LFQ/VQ,
LPIPS (when the preset has it and ``vistok weights install lpips-vgg`` was run; otherwise it is
left out and the row says so) and GAN losses, backward, clipping and AdamW, then the
discriminator's step -- the GAN is switched on from step 0 (``loss.gan_start_step=0``) so the row
is the steady-state step after the warm-up, for every preset that has a GAN. For a token LM: the
masking, forward, factorized cross-entropy, backward and AdamW. Not counted: the EMA update,
logging and data loading (``bench/data_throughput.py`` measures that). Inputs are random tensors of
the preset's clip shape (``data.frames x data.size x data.size``) or token grid.

Reported per preset and batch: median step time over ``--repeats`` after ``--warmup`` steps; peak
memory (CUDA: ``max_memory_allocated`` over a step; CPU: the most bytes held at once by the
tensors the step creates, counted exactly by ``LiveTensorBytes``, weights and optimizer state not
included); FLOPs of one step (``FlopCounterMode``: matrix products and convolutions, forward and
backward); model FLOP utilisation = FLOPs / step time / ``--peak-tflops`` (default: 989 dense bf16
TFLOP/s for an H100 or H200, none on a CPU). A batch that does not fit is reported as out of
memory and the larger batches of that preset are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _flops import count_flops  # noqa: E402

from vistok.errors import VistokError  # noqa: E402
from vistok.generate.config import lm_config  # noqa: E402
from vistok.generate.data import save_token_set  # noqa: E402
from vistok.generate.train import LMTrainer, load_lm_train_config  # noqa: E402
from vistok.pipelines.budget import LiveTensorBytes, format_bytes  # noqa: E402
from vistok.train.config import load_train_config  # noqa: E402
from vistok.train.trainer import Trainer  # noqa: E402

# bench name -> (training preset, overrides); omni-paper is trained from the omni-tiny recipe
TOKENIZER_CASES = {
    "tiny": ("tiny", []),
    "omni-tiny": ("omni-tiny", []),
    "ucf-128": ("ucf-128", []),
    "imagenet-256": ("imagenet-256", []),
    "omni-paper": ("omni-tiny", ["preset=omni-paper", "data.size=256"]),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core peak (NVIDIA datasheets, SXM)


class _StepOnly:
    """Mix-in: the trainer without its data pipeline -- the bench feeds the batches itself."""

    def after_start(self) -> None:
        pass


class TokenizerStep(_StepOnly, Trainer):
    pass


class LMStep(_StepOnly, LMTrainer):
    pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(trainer, batch, device: torch.device, warmup: int, repeats: int) -> dict:
    def step():
        trainer.train_step(batch)
        trainer.step += 1

    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with LiveTensorBytes() as live:
            step()
        peak = live.peak
    flops = count_flops(step)
    return {"step_s": statistics.median(times), "peak_bytes": peak, "flops": flops}


def tokenizer_case(name: str, batch: int, args, out: Path) -> tuple[object, torch.Tensor, str]:
    preset, extra = TOKENIZER_CASES[name]
    overrides = [*extra, f"device={args.device}", f"precision={args.precision}", f"data.batch_size={batch}",
                 f"data.image_batch_size={batch}", "loss.gan_start_step=0", "loss.perceptual_start_step=0",
                 "optim.accumulate=1", f"activation_checkpointing={str(args.checkpointing).lower()}"]
    note = ""
    cfg = load_train_config(preset, overrides)
    try:
        trainer = TokenizerStep(cfg, out)
    except VistokError as e:
        if "weights install" not in str(e):
            raise
        cfg = load_train_config(preset, overrides + ["loss.perceptual_weight=0"])
        trainer = TokenizerStep(cfg, out)
        note = "without LPIPS (weights not installed)"
    d = cfg.data
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(batch, 3, d.frames, d.size, d.size, generator=g) * 2 - 1).to(trainer.info.device)
    params = sum(p.numel() for p in trainer.tokenizer.parameters())
    desc = f"{params / 1e6:.1f} M, {batch} x {d.frames} x {d.size} x {d.size}"
    if trainer.discriminator is not None:
        desc += f", + discriminator {sum(p.numel() for p in trainer.discriminator.parameters()) / 1e6:.1f} M"
    return trainer, video, desc + (f"; {note}" if note else "")


def lm_case(name: str, batch: int, args, out: Path) -> tuple[object, tuple, str]:
    grid = tuple(args.lm_grid)
    tokens = out.parent / f"tokens-{'x'.join(map(str, grid))}-{batch}.npz"
    if not tokens.exists():
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, 2**18, (batch, *grid), generator=g)
        labels = torch.arange(batch) % 10
        save_token_set(tokens, idx, labels, {"model_id": "bench", "vocab_size": 2**18,
                                             "class_names": [str(i) for i in range(10)]})
    cfg = load_lm_train_config(name, [f"data={tokens}", f"batch_size={batch}", f"device={args.device}",
                                      f"precision={args.precision}",
                                      f"activation_checkpointing={str(args.checkpointing).lower()}"])
    trainer = LMStep(cfg, out)
    batch_tensors = trainer.batch(0)
    params = sum(p.numel() for p in trainer.lm.parameters())
    c = lm_config(name)
    return trainer, batch_tensors, f"{params / 1e6:.1f} M (dim {c.dim}, depth {c.depth}), {batch} x {'x'.join(map(str, grid))} tokens"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--tokenizers", default="tiny", help=f"comma list of {', '.join(TOKENIZER_CASES)} ('' for none)")
    p.add_argument("--lms", default="lm-tiny", help="comma list of LM presets ('' for none)")
    p.add_argument("--batch", default="2", help="tokenizer batch sizes")
    p.add_argument("--lm-batch", default="8", help="LM batch sizes")
    p.add_argument("--lm-grid", type=int, nargs=3, default=[5, 16, 16], metavar=("T", "H", "W"),
                   help="token grid (default 5 16 16: a 17 x 128 x 128 clip)")
    p.add_argument("--checkpointing", action="store_true", help="activation_checkpointing=true")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, help="the device's peak for the MFU column")
    p.add_argument("--json")
    args = p.parse_args()
    device = torch.device(args.device)
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        print(f"device {name}" + (f", peak {peak:g} TFLOP/s bf16 dense" if peak else ", peak unknown (--peak-tflops)"))
    print(f"torch {torch.__version__}, {args.device}, {args.precision}, {torch.get_num_threads()} CPU thread(s)")

    cases = [("tokenizer", n, int(b)) for n in filter(None, args.tokenizers.split(",")) for b in args.batch.split(",")]
    cases += [("lm", n, int(b)) for n in filter(None, args.lms.split(",")) for b in args.lm_batch.split(",")]
    rows, too_big = [], set()
    print(f"{'model':<14} {'step s':>8} {'items/s':>8} {'peak mem':>10} {'TFLOP/step':>10} {'MFU':>6}  shape")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, name, batch) in enumerate(cases):
            if name in too_big:
                continue
            out = Path(tmp) / f"run{i}"
            trainer, r = None, None
            try:
                build = tokenizer_case if kind == "tokenizer" else lm_case
                trainer, batch_data, desc = build(name, batch, args, out)
                r = measure(trainer, batch_data, device, args.warmup, args.repeats)
            except torch.cuda.OutOfMemoryError:
                too_big.add(name)
                rows.append({"kind": kind, "model": name, "batch": batch, "oom": True})
                print(f"{name:<14} batch {batch}: out of memory; larger batches skipped")
            finally:  # free this case's model and optimizer state before the next one, also after an OOM
                if trainer is not None:
                    trainer.close()
                trainer = batch_data = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if r is None:
                continue
            mfu = r["flops"] / r["step_s"] / (peak * 1e12) if peak else None
            row = {"kind": kind, "model": name, "batch": batch, "shape": desc, **r, "mfu": mfu,
                   "items_per_s": batch / r["step_s"]}
            rows.append(row)
            print(f"{name:<14} {r['step_s']:>8.3f} {batch / r['step_s']:>8.2f} {format_bytes(r['peak_bytes']):>10} "
                  f"{r['flops'] / 1e12:>10.3f} {'' if mfu is None else f'{100 * mfu:5.1f}%':>6}  {desc}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "peak_tflops": peak, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
