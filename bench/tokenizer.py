"""MAGVIT-v2 tokenizer speed: vistok against magvit2-pytorch, same input, same vocabulary, in one run.

    python bench/tokenizer.py            # float32
    python bench/tokenizer.py --bf16     # both under CPU bfloat16 autocast

What is measured, for each tokenizer, at input ``1 x 3 x 17 x 64 x 64`` (-> 5 x 8 x 8 tokens) and a
2^18 vocabulary:

* encode + decode (inference, no grad, eval mode): pixels -> token ids -> pixels, as frames/s;
* one training step: forward, reconstruction MSE + the quantizer's auxiliary loss (no GAN, no
  perceptual loss), backward, Adam step.

The two models are matched on parameter count (within 10%) and compression (time 4x, space 8x).
magvit2-pytorch's ``VideoTokenizer`` is built all-convolutional (residual / compress_space /
compress_time layers, no attention) at ~27.3M parameters. Forward FLOPs are printed too, so a
speed ratio can be read as "less work" or "same work done faster".

Timings alternate between the models in every repeat (so background load hits both alike); the
median of ``--repeats`` is reported after ``--warmup`` untimed runs. The ratio column is
peer time / our time (> 1: vistok is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers import import_peer  # noqa: E402

from vistok.tokenizers import MAGVIT2_PRESETS, Magvit2Config, Magvit2Tokenizer  # noqa: E402

SHAPE = (1, 3, 17, 64, 64)
BITS = 18
TARGET = 2.0  # the target speed-up, on both measures

# Ours at the peer's size: channels 48-96-96-192, three residual blocks per stage. This lands within
# 10% of the peer's parameters *and* its forward FLOPs (see the printed table); the paper's stage
# layout (1, 2, 2, 4) and temporal down-sampling in the last two transitions are kept from "tiny".
MATCHED_OVERRIDES = dict(base_channels=48, channel_multipliers=(1, 2, 2, 4), num_res_blocks=3, norm_groups=16)

# magvit2-pytorch's all-convolution video tokenizer: 3 space compressions (64 -> 8) and 2 time
# compressions (17 frames, padded to 20 by the peer, -> 5), widths 64-128-256-256, two residual units
# per spatial stage and one after each time compression -- about 27.3M parameters.
PEER_LAYERS = (
    ("consecutive_residual", 2),
    ("compress_space", 128),
    ("consecutive_residual", 2),
    ("compress_space", 256),
    ("consecutive_residual", 2),
    ("compress_space", 256),
    ("consecutive_residual", 2),
    ("compress_time", 256),
    "residual",
    ("compress_time", 256),
    "residual",
)
PEER_KWARGS = dict(
    image_size=SHAPE[-1],
    init_dim=64,
    codebook_size=2**BITS,
    layers=PEER_LAYERS,
    use_gan=False,  # no discriminator loss in the step we time
    perceptual_loss_weight=0.0,  # no VGG (its weights would be downloaded)
)


def count_params(model: torch.nn.Module) -> int:
    # magvit2-pytorch overrides .parameters() to leave out its (unused here) discriminator
    return sum(p.numel() for p in model.parameters())


def preset_params(name: str) -> int:
    with torch.device("meta"):  # counts without allocating (the paper presets are 200M+)
        return count_params(Magvit2Tokenizer(Magvit2Config.preset(name)))


class Bench:
    """One tokenizer behind two closures: ``encode_decode()`` and ``train_step()``."""

    def __init__(self, name: str, model: torch.nn.Module, encode_decode: Callable, loss_fn: Callable, autocast):
        self.name = name
        self.model = model
        self._encode_decode = encode_decode
        self._loss = loss_fn
        self._autocast = autocast
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.times: dict[str, list[float]] = {"encode_decode": [], "train_step": []}
        self.error: str | None = None

    def encode_decode(self, video: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad(), self._autocast():
            return self._encode_decode(video)

    def train_step(self, video: torch.Tensor) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self._loss(video)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def flops(self, video: torch.Tensor) -> float:
        with FlopCounterMode(display=False) as counter:
            self.encode_decode(video)
        return counter.get_total_flops()

    def run(self, what: str, video: torch.Tensor, *, record: bool) -> None:
        if self.error:
            return
        fn = self.encode_decode if what == "encode_decode" else self.train_step
        try:
            t0 = time.perf_counter()
            fn(video)
            dt = time.perf_counter() - t0
        except Exception as e:  # e.g. a peer that does not support bf16 autocast
            self.error = f"{what} failed: {type(e).__name__}: {e}"
            return
        if record:
            self.times[what].append(dt)

    def median(self, what: str) -> float | None:
        t = self.times[what]
        return statistics.median(t) if t else None


def make_ours(cfg: Magvit2Config, autocast) -> Bench:
    tok = Magvit2Tokenizer(cfg)

    def encode_decode(video):
        return tok.decode_indices(tok.encode(video))

    def loss(video):
        out = tok(video)
        return F.mse_loss(out.x_hat.float(), video) + out.loss

    return Bench("vistok", tok, encode_decode, loss, autocast)


def make_peer(module, autocast) -> Bench:
    peer = module.VideoTokenizer(**PEER_KWARGS)

    def encode_decode(video):
        indices = peer(video, return_codes=True)  # (b t' h' w')
        return peer.decode_from_code_indices(indices)

    def loss(video):
        # recon MSE + LFQ aux loss (quantizer_aux_loss_weight = 1); GAN and perceptual are off
        total, _ = peer(video, return_loss=True)
        return total

    return Bench("magvit2-pytorch", peer, encode_decode, loss, autocast)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bf16", action="store_true", help="run both tokenizers under CPU bfloat16 autocast")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per measure (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measure; the median is shown")
    ap.add_argument("--no-peer", action="store_true", help="time vistok only")
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a field of our matched Magvit2Config, e.g. --set num_res_blocks=2",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype_note = "bfloat16 autocast" if args.bf16 else "float32"

    def autocast():
        if args.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    print(f"# MAGVIT-v2 tokenizer benchmark: input {'x'.join(map(str, SHAPE))}, vocabulary 2^{BITS}, {dtype_note}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"# torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
        + (f", load average {load[0]:.2f} at start" if load else "")
    )

    print("\nvistok presets (parameters):")
    for name in MAGVIT2_PRESETS:
        print(f"  {name:<14} {preset_params(name) / 1e6:8.2f}M")

    cfg = Magvit2Config.preset("tiny", **{**MATCHED_OVERRIDES, "bits": BITS, **parse_overrides(args.overrides)})
    benches = [make_ours(cfg, autocast)]
    peer_note = ""
    if args.no_peer:
        peer_note = "peer skipped (--no-peer)"
    else:
        module, peer_note = import_peer("magvit2_pytorch", needs_torchvision=True)
        if module is not None:
            torch.manual_seed(0)
            benches.append(make_peer(module, autocast))
    ours = benches[0]
    peer = benches[1] if len(benches) > 1 else None

    print(
        f"\nours: Magvit2Config.preset('tiny', base_channels={cfg.base_channels}, channel_multipliers="
        f"{cfg.channel_multipliers}, num_res_blocks={cfg.num_res_blocks}, norm_groups={cfg.norm_groups}, "
        f"bits={cfg.bits})"
    )
    if peer is not None:
        print(f"peer: magvit2_pytorch.VideoTokenizer(init_dim={PEER_KWARGS['init_dim']}, codebook_size=2**{BITS}, layers={PEER_LAYERS})")
    else:
        print(f"peer: not measured -- {peer_note}")

    video = torch.rand(SHAPE) * 2 - 1
    frames = SHAPE[0] * SHAPE[2]
    # shapes and FLOPs from one untimed inference pass (also a first warm-up)
    shapes, flops = {}, {}
    for b in benches:
        try:
            x_hat = b.encode_decode(video)
            shapes[b.name] = tuple(x_hat.shape)
            flops[b.name] = b.flops(video)
        except Exception as e:
            b.error = f"inference failed: {type(e).__name__}: {e}"
    if ours.error:
        raise SystemExit(f"vistok {ours.error}")
    for b in benches:
        if b.name in shapes and shapes[b.name] != SHAPE:
            raise SystemExit(f"{b.name} reconstructs {shapes[b.name]}, expected {SHAPE}")
    tokens = ours.model.latent_shape(*SHAPE[2:])
    print(f"tokens per clip: {'x'.join(map(str, tokens))} (time {ours.model.temporal_compression}x, space {ours.model.spatial_compression}x)")

    for what in ("encode_decode", "train_step"):
        for _ in range(args.warmup):
            for b in benches:
                b.run(what, video, record=False)
        for _ in range(args.repeats):
            for b in benches:  # alternate, so background load hits both alike
                b.run(what, video, record=True)
    if load:
        print(f"# load average {os.getloadavg()[0]:.2f} at end (2-core machines shared with other work give noisy numbers)")

    # -- table ------------------------------------------------------------------------------------
    def row(label, ours_v, peer_v, spec, ratio=None):
        r = "-" if ratio is None else f"{ratio:.2f}x"
        print(f"{label:<30} {fmt(ours_v, spec):>14} {fmt(peer_v, spec):>16} {r:>12}")

    def ratio_of(a, b):
        return None if a is None or b is None or a == 0 else b / a

    p_ours = count_params(ours.model)
    p_peer = count_params(peer.model) if peer else None
    ed = {b.name: b.median("encode_decode") for b in benches}
    ts = {b.name: b.median("train_step") for b in benches}
    ed_ours, ed_peer = ed["vistok"], ed.get("magvit2-pytorch")
    ts_ours, ts_peer = ts["vistok"], ts.get("magvit2-pytorch")
    fps_ours = frames / ed_ours if ed_ours else None
    fps_peer = frames / ed_peer if ed_peer else None

    print(f"\n{'median of ' + str(args.repeats):<30} {'vistok':>14} {'magvit2-pytorch':>16} {'peer/ours':>12}")
    row("parameters (M)", p_ours / 1e6, p_peer / 1e6 if p_peer else None, ".2f")
    f_ours, f_peer = flops.get("vistok"), flops.get("magvit2-pytorch")
    row("GFLOPs, encode+decode", f_ours / 1e9 if f_ours else None, f_peer / 1e9 if f_peer else None, ".1f")
    row("encode+decode (s / clip)", ed_ours, ed_peer, ".3f", ratio_of(ed_ours, ed_peer))
    row("encode+decode (frames/s)", fps_ours, fps_peer, ".1f", ratio_of(ed_ours, ed_peer))
    row("train step (s)", ts_ours, ts_peer, ".3f", ratio_of(ts_ours, ts_peer))
    print("(peer/ours = peer time / our time; > 1 means vistok is faster)")

    if p_peer:
        print(f"parameter count: ours is {p_ours / p_peer - 1:+.1%} of the peer's (matched within 10%: {abs(p_ours / p_peer - 1) <= 0.10})")
        for label, r in (("encode+decode", ratio_of(ed_ours, ed_peer)), ("train step", ratio_of(ts_ours, ts_peer))):
            if r is not None:
                print(f"target {TARGET:.0f}x on {label}: {'met' if r >= TARGET else 'missed'} ({r:.2f}x)")
    for b in benches:
        if b.error:
            print(f"note: {b.name} {b.error}")
    if peer is None:
        print(f"note: {peer_note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
