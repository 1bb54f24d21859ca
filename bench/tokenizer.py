"""MAGVIT-v2 tokenizer speed: vistok against magvit2-pytorch, same input, same vocabulary, in one run.

    python bench/tokenizer.py                  # float32, ~2-3 minutes on 2 idle cores
    python bench/tokenizer.py --bf16           # every tokenizer under CPU bfloat16 autocast
    python bench/tokenizer.py --ours matched --repeats 3
    python bench/tokenizer.py --set num_res_blocks=2 --set base_channels=56   # try a config

The peer is optional: without it (``pip install -e '.[bench]'`` or ``make bench``) only vistok
is timed. What is measured, for each tokenizer, at input ``1 x 3 x 17 x 64 x 64`` (-> 5 x 8 x 8
tokens) and a 2^18 vocabulary:

* encode + decode (inference, no grad, eval mode): pixels -> token ids -> pixels, as frames/s;
* one training step: forward, reconstruction MSE + the quantizer's auxiliary loss (no GAN, no
  perceptual loss), backward, Adam step.

magvit2-pytorch's ``VideoTokenizer`` is built all-convolutional (residual / compress_space /
compress_time layers, no attention) at ~27.3M parameters; every vistok config timed has the same
compression (time 4x, space 8x) and a parameter count within 10% of it. Forward FLOPs are printed
beside the times, so a ratio can be read as "less work" or "the same work done faster".

Each tokenizer lives in its own worker process (so one model's allocations -- the peer frees and
re-faults gigabytes per training step -- do not slow another's), and the parent times them in
turn within every repeat, so background load hits all alike. The median of ``--repeats`` is
reported after ``--warmup`` untimed runs, and every run is listed. Ratios are peer time / our
time (> 1: vistok is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _flops import count_flops  # noqa: E402
from _peers import import_peer  # noqa: E402

from vistok.tokenizers import MAGVIT2_PRESETS, Magvit2Config, Magvit2Tokenizer  # noqa: E402

SHAPE = (1, 3, 17, 64, 64)
BITS = 18
TARGET = 2.0  # the target speed-up, on both measures
MEASURES = ("encode_decode", "train_step")
PEER_NAME = "magvit2-pytorch"

# Ours at the peer's size (parameters within 10%, same compression), two ways:
# * "matched": channels 48-96-96-192, three residual blocks per stage -- within 10% of the peer's
#   parameters *and* of its forward FLOPs, so its ratio measures the implementation;
# * "lean": channels 32-64-128-256, two blocks per stage -- the peer's parameter count with the
#   width moved to low resolution (~2.6x fewer FLOPs), so its ratio also measures that design choice.
# Both keep the paper's causal layout from "tiny" (time down-sampled in the last two transitions).
OURS_CONFIGS = {
    "matched": dict(base_channels=48, channel_multipliers=(1, 2, 2, 4), num_res_blocks=3, norm_groups=16),
    "lean": dict(base_channels=32, channel_multipliers=(1, 2, 4, 8), num_res_blocks=2, norm_groups=16),
}

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


def describe(cfg: Magvit2Config) -> str:
    return (
        f"Magvit2Config.preset('tiny', base_channels={cfg.base_channels}, "
        f"channel_multipliers={cfg.channel_multipliers}, num_res_blocks={cfg.num_res_blocks}, "
        f"norm_groups={cfg.norm_groups}, bits={cfg.bits})"
    )


def make_video() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(SHAPE, generator=g) * 2 - 1


# -- worker side: one tokenizer per process -------------------------------------------------------


class Runner:
    """One tokenizer: ``encode_decode(video)`` and ``train_step(video)``, optionally under bf16."""

    def __init__(self, model: torch.nn.Module, encode_decode, loss_fn, *, bf16: bool):
        self.model = model
        self._encode_decode = encode_decode
        self._loss = loss_fn
        self._bf16 = bf16
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self._bf16 else contextlib.nullcontext()

    def encode_decode(self, video: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            return self._encode_decode(video)

    def train_step(self, video: torch.Tensor) -> float:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self._loss(video)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def make_ours(cfg: Magvit2Config, *, bf16: bool) -> Runner:
    tok = Magvit2Tokenizer(cfg)

    def encode_decode(video):
        return tok.decode_indices(tok.encode(video))

    def loss(video):
        out = tok(video)
        return F.mse_loss(out.x_hat.float(), video) + out.loss

    return Runner(tok, encode_decode, loss, bf16=bf16)


def make_peer(module, *, bf16: bool) -> Runner:
    peer = module.VideoTokenizer(**PEER_KWARGS)

    def encode_decode(video):
        indices = peer(video, return_codes=True)  # (b t' h' w')
        return peer.decode_from_code_indices(indices)

    def loss(video):
        # recon MSE + LFQ aux loss (quantizer_aux_loss_weight = 1); GAN and perceptual are off
        total, _ = peer(video, return_loss=True)
        return total

    return Runner(peer, encode_decode, loss, bf16=bf16)


def worker(conn, cfg: Magvit2Config | None, threads: int, bf16: bool) -> None:
    """Build one tokenizer (``cfg is None``: the peer), report its size, then time on request."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    try:
        if cfg is None:
            module, reason = import_peer("magvit2_pytorch", needs_torchvision=True)
            if module is None:
                conn.send(("missing", reason))
                return
            runner = make_peer(module, bf16=bf16)
        else:
            runner = make_ours(cfg, bf16=bf16)
        video = make_video()
        shape = tuple(runner.encode_decode(video).shape)  # also the first warm-up
        if shape != SHAPE:
            conn.send(("error", f"reconstructs {shape}, expected {SHAPE}"))
            return
        flops = count_flops(lambda: runner.encode_decode(video))
        conn.send(("ready", {"params": count_params(runner.model), "flops": flops}))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while (what := conn.recv()) is not None:
        fn = runner.encode_decode if what == "encode_decode" else runner.train_step
        try:
            t0 = time.perf_counter()
            fn(video)
            conn.send(("time", time.perf_counter() - t0))
        except Exception as e:  # e.g. a peer that does not support bf16 autocast
            conn.send(("error", f"{what} failed: {type(e).__name__}: {e}"))
            return


# -- parent side ----------------------------------------------------------------------------------


class Worker:
    def __init__(self, ctx, name: str, cfg: Magvit2Config | None, args):
        self.name = name
        self.cfg = cfg
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, cfg, args.threads, args.bf16), daemon=True)
        self.proc.start()
        child.close()
        self.info: dict = {}
        self.error: str | None = None
        self.missing: str | None = None
        self.times: dict[str, list[float]] = {m: [] for m in MEASURES}

    def wait_ready(self) -> None:
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            kind, payload = "error", f"worker exited with code {self.proc.exitcode}"
        if kind == "ready":
            self.info = payload
        elif kind == "missing":
            self.missing = payload
        else:
            self.error = payload

    @property
    def alive(self) -> bool:
        return not (self.error or self.missing)

    def run(self, what: str, *, record: bool) -> None:
        if not self.alive:
            return
        self.conn.send(what)
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            kind, payload = "error", f"{what}: worker died (exit code {self.proc.exitcode})"
        if kind == "error":
            self.error = payload
        elif record:
            self.times[what].append(payload)

    def median(self, what: str) -> float | None:
        return statistics.median(self.times[what]) if self.times[what] else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.alive:
                self.conn.send(None)
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


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
    ap.add_argument("--bf16", action="store_true", help="run every tokenizer under CPU bfloat16 autocast")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads per tokenizer (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per measure (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measure, median shown (default 3)")
    ap.add_argument(
        "--ours", default=",".join(OURS_CONFIGS), help=f"comma-separated vistok configs to time, of {list(OURS_CONFIGS)}"
    )
    ap.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="also time a 'custom' vistok config: 'matched' with these Magvit2Config fields changed",
    )
    ap.add_argument("--no-peer", action="store_true", help="time vistok only")
    args = ap.parse_args(argv)

    configs: dict[str, Magvit2Config] = {}
    for name in filter(None, args.ours.split(",")):
        if name not in OURS_CONFIGS:
            raise SystemExit(f"--ours: unknown config {name!r}; choose from {list(OURS_CONFIGS)}")
        configs[name] = Magvit2Config.preset("tiny", **{**OURS_CONFIGS[name], "bits": BITS})
    if args.overrides:
        fields = {**OURS_CONFIGS["matched"], "bits": BITS, **parse_overrides(args.overrides)}
        configs["custom"] = Magvit2Config.preset("tiny", **fields)
    if not configs:
        raise SystemExit("nothing to time: give --ours and/or --set")

    dtype_note = "bfloat16 autocast" if args.bf16 else "float32"
    print(f"# MAGVIT-v2 tokenizer benchmark: input {'x'.join(map(str, SHAPE))}, vocabulary 2^{BITS}, {dtype_note}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"# torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()})" + (f", load average {load[0]:.2f} at start" if load else "")
    )

    print("\nvistok presets (parameters):")
    for name in MAGVIT2_PRESETS:
        print(f"  {name:<14} {preset_params(name) / 1e6:8.2f}M")

    ctx = mp.get_context("spawn")  # fresh interpreters: no state shared with this process
    workers = [Worker(ctx, f"vistok {name}", cfg, args) for name, cfg in configs.items()]
    if not args.no_peer:
        workers.append(Worker(ctx, PEER_NAME, None, args))
    try:
        for w in workers:
            w.wait_ready()
        print()
        for w in workers:
            if w.cfg is not None:
                print(f"{w.name}: {describe(w.cfg)}")
            elif w.missing:
                print(f"{w.name}: not installed, vistok only (see the note below)")
            else:
                init_dim, layers = PEER_KWARGS["init_dim"], PEER_KWARGS["layers"]
                print(f"{w.name}: VideoTokenizer(init_dim={init_dim}, codebook_size=2**{BITS}, layers={layers})")
        tok = Magvit2Tokenizer(next(iter(configs.values())))
        print(
            f"tokens per clip: {'x'.join(map(str, tok.latent_shape(*SHAPE[2:])))} "
            f"(time {tok.temporal_compression}x, space {tok.spatial_compression}x)"
        )

        for what in MEASURES:
            for _ in range(args.warmup):
                for w in workers:
                    w.run(what, record=False)
            for _ in range(args.repeats):
                for w in workers:  # in turn, so background load hits every tokenizer alike
                    w.run(what, record=True)
    finally:
        for w in workers:
            w.close()
    if load:
        end = os.getloadavg()[0]
        print(f"# load average {end:.2f} at end (on a shared 2-core machine numbers are noisy: re-run when idle)")

    # -- table: one row per tokenizer; ratios are peer time / our time (> 1: vistok is faster) -------
    peer = next((w for w in workers if w.cfg is None and w.info), None)

    def ratio(w: Worker, what: str) -> str:
        if peer is None or w is peer:
            return "-"
        mine, theirs = w.median(what), peer.median(what)
        return "-" if not mine or not theirs else f"{theirs / mine:.2f}x"

    frames = SHAPE[0] * SHAPE[2]
    head = ("tokenizer", "params", "GFLOPs", "enc+dec s", "frames/s", "peer/ours", "train s", "peer/ours")
    widths = (26, 9, 8, 10, 9, 10, 9, 10)

    def line(cells) -> str:
        return "".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(f"\nmedian of {args.repeats} runs; GFLOPs of one encode+decode; peer/ours = peer time / our time")
    print(line(head))
    for w in workers:
        if not w.info:
            continue
        ed, ts = w.median("encode_decode"), w.median("train_step")
        print(
            line((
                w.name,
                f"{w.info['params'] / 1e6:.2f}M",
                f"{w.info['flops'] / 1e9:.1f}",
                fmt(ed, ".3f"),
                fmt(frames / ed if ed else None, ".1f"),
                ratio(w, "encode_decode"),
                fmt(ts, ".3f"),
                ratio(w, "train_step"),
            ))
        )

    print("\nall runs (s):")
    for w in workers:
        for what in MEASURES:
            if w.times[what]:
                print(f"  {w.name:<24} {what:<14} " + " ".join(f"{t:.3f}" for t in w.times[what]))

    if peer is not None:
        for w in workers:
            if w is peer or not w.info:
                continue
            dp = w.info["params"] / peer.info["params"] - 1
            verdicts = []
            for what, label in (("encode_decode", "encode+decode"), ("train_step", "train step")):
                mine, theirs = w.median(what), peer.median(what)
                if mine and theirs:
                    verdicts.append(f"{label} {'met' if theirs / mine >= TARGET else 'missed'} ({theirs / mine:.2f}x)")
            print(
                f"{w.name}: parameters {dp:+.1%} vs the peer (within 10%: {'yes' if abs(dp) <= 0.10 else 'NO'}); "
                f"target {TARGET:g}x: " + ", ".join(verdicts)
            )
    for w in workers:
        if w.error:
            print(f"note: {w.name} failed: {w.error}")
        if w.missing:
            print(f"note: {PEER_NAME} not measured: {w.missing}")
    if args.no_peer:
        print(f"note: {PEER_NAME} skipped (--no-peer)")
    return 1 if any(w.error for w in workers if w.cfg is not None) else 0


if __name__ == "__main__":
    raise SystemExit(main())
