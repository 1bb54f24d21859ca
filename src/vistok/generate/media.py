"""The work behind ``vistok generate`` and ``vistok predict-frames``: sample tokens with a language
model, decode them with the tokenizer, write pictures and videos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vistok.errors import VistokError
from vistok.data.images import read_image
from vistok.data.transforms import center_crop, resize_to_cover
from vistok.data.video import probe_video, read_video
from vistok.files import media_kind, write_media
from vistok.generate.base import TokenLM
from vistok.generate.data import save_token_set
from vistok.generate.render import check_tokenizer, decode_to_uint8
from vistok.pictures import save_picture, tile
from vistok.tokenizers.base import Tokenizer


def resolve_class(lm: TokenLM, value: str | int | None) -> int | None:
    """``--class``: an index or a class name -> index; ``None`` stays None (unconditional)."""
    if value is None:
        return None
    names = lm.config.class_names
    if lm.num_classes == 0:
        raise VistokError("this language model is unconditional; drop --class")
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names)) if names else f"0..{lm.num_classes - 1}"
    text = str(value)
    if text.lstrip("-").isdigit():
        k = int(text)
        if not 0 <= k < lm.num_classes:
            raise VistokError(f"--class {k} is out of range: this model has {lm.num_classes} classes ({listing})")
        return k
    if text in names:
        return names.index(text)
    raise VistokError(f"unknown class {text!r}; this model has {lm.num_classes} classes ({listing})")


def sampling_kwargs(lm: TokenLM, *, steps: int, guidance: float, temperature: float, choice_temperature: float) -> dict:
    """Options of ``lm.generate``: the step count and choice temperature only for the masked model."""
    kw = {"cfg_scale": guidance, "temperature": temperature}
    if lm.config.kind == "mlm":
        kw.update(steps=steps, choice_temperature=choice_temperature)
    return kw


@dataclass
class GenerateResult:
    files: list[Path]
    grid: Path
    tokens: Path
    notes: list[str] = field(default_factory=list)


def generate_files(
    lm: TokenLM,
    tokenizer: Tokenizer,
    out_dir: str | Path,
    *,
    label: int | None,
    num: int = 8,
    steps: int = 12,
    guidance: float = 0.0,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    seed: int = 0,
    video_format: str = "gif",
    fps: float = 8.0,
    force: bool = False,
    batch_size: int = 32,
) -> GenerateResult:
    """Sample ``num`` token grids of class ``label`` (``None``: unconditional), decode and write
    them: one PNG per image (or GIF/MP4 per clip), ``grid.png``, and ``tokens.npz`` (a token set
    of the samples, labelled with the class)."""

    check_tokenizer(lm.config, tokenizer, force=force)
    if num < 1:
        raise VistokError(f"--num must be >= 1, got {num}")
    if video_format not in ("gif", "mp4"):
        raise VistokError(f"video format must be gif or mp4, got {video_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device=lm.class_embed.weight.device).manual_seed(seed)
    kw = sampling_kwargs(lm, steps=steps, guidance=guidance, temperature=temperature, choice_temperature=choice_temperature)
    tokens = []
    for start in range(0, num, batch_size):
        b = min(batch_size, num - start)
        labels = None if label is None else torch.full((b,), label, dtype=torch.long)
        tokens.append(lm.generate(labels, num_samples=b, generator=gen, **kw).cpu())
    indices = torch.cat(tokens)
    videos = decode_to_uint8(tokenizer, indices)
    name = "sample" if label is None else (lm.config.class_names[label] if lm.config.class_names else f"class{label}")
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    files = []
    for i, frames in enumerate(videos):
        suffix = ".png" if frames.shape[0] == 1 else f".{video_format}"
        files.append(write_media(out / f"{name}_{i:03d}{suffix}", frames, fps=fps))
    grid = save_picture(out / "grid.png", tile(videos, columns=min(num, 8)), scale=2)
    meta = {"model_id": lm.config.tokenizer_id or tokenizer.model_id(), "vocab_size": lm.vocab_size, "generated_by": "vistok generate",
            "kind": lm.config.kind, "cfg": guidance, "steps": steps, "temperature": temperature, "seed": seed}
    labels_arr = None
    if label is not None:
        meta["class_names"] = lm.config.class_names or [str(i) for i in range(lm.num_classes)]
        labels_arr = np.full(num, label, dtype=np.int64)
    tok_file = save_token_set(out / "tokens.npz", indices.numpy(), labels_arr, meta)
    notes = []
    if lm.config.kind == "ar" and steps != 12:
        notes.append("--steps is ignored by an autoregressive model (one step per token)")
    return GenerateResult(files, grid, tok_file, notes)


def _read_clip(path: Path, frames: int, height: int, width: int) -> tuple[np.ndarray, float]:
    """Up to ``frames`` frames of ``path`` resized to cover and centre-cropped to ``height x
    width``: ``(t h w 3)`` uint8 and the frame rate."""

    if not path.is_file():
        raise VistokError(f"input {path} does not exist")
    if media_kind(path) == "image":
        raw, fps = read_image(path)[None], 0.0
    else:
        info = probe_video(path)
        raw, fps = read_video(path, num_frames=min(frames, info.frames)), info.fps or 25.0
    x = rearrange(torch.from_numpy(np.ascontiguousarray(raw)), "t h w c -> c t h w")
    x = center_crop(resize_to_cover(x, height, width), height, width)
    return rearrange(x, "c t h w -> t h w c").numpy(), float(fps)


@dataclass
class PredictionResult:
    output: Path
    given_frames: int
    total_frames: int
    notes: list[str] = field(default_factory=list)


def predict_frames(
    lm: TokenLM,
    tokenizer: Tokenizer,
    input_path: str | Path,
    output: str | Path,
    *,
    frames: int,
    label: int | None = None,
    steps: int = 12,
    guidance: float = 0.0,
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    seed: int = 0,
    force: bool = False,
) -> PredictionResult:
    """Encode the first ``frames`` frames of ``input_path``, generate the rest of the LM's token
    grid conditioned on their tokens, and write ``original | prediction`` side by side."""

    check_tokenizer(lm.config, tokenizer, force=force)
    tc, sc = tokenizer.temporal_compression, tokenizer.spatial_compression
    t_lat, h_lat, w_lat = lm.max_grid
    if t_lat < 2:
        raise VistokError(f"this language model generates {t_lat}-frame token grids (images): no frames to predict")
    total = 1 + tc * (t_lat - 1)
    if frames < 1 or (frames - 1) % tc or frames >= total:
        raise VistokError(
            f"--frames must be 1 + {tc}k and fewer than the {total} frames this model generates "
            f"(e.g. {', '.join(str(1 + tc * k) for k in range(t_lat - 1))})"
        )
    height, width = h_lat * sc, w_lat * sc
    clip, fps = _read_clip(Path(input_path), total, height, width)
    if clip.shape[0] < frames:
        raise VistokError(f"{input_path} has {clip.shape[0]} frame(s); --frames {frames} needs at least that many")
    dev = next(tokenizer.parameters()).device
    given_px = torch.from_numpy(clip[:frames]).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0).to(dev)
    if tokenizer.in_channels == 1:  # a grey tokenizer (e.g. trained on Fashion-MNIST) reads luminance
        given_px = given_px.mean(dim=1, keepdim=True)
    given = tokenizer.encode(given_px.to(next(tokenizer.parameters()).dtype))  # (1, c, h', w')
    labels = None if label is None else torch.tensor([label])
    kw = sampling_kwargs(lm, steps=steps, guidance=guidance, temperature=temperature, choice_temperature=choice_temperature)
    gen = torch.Generator(device=lm.class_embed.weight.device).manual_seed(seed)
    tokens = lm.generate(labels, num_samples=1, given=given.to(lm.class_embed.weight.device), generator=gen, **kw)
    predicted = decode_to_uint8(tokenizer, tokens.cpu())[0]  # (total h w 3)
    notes = []
    if lm.config.kind == "mlm" and lm.config.frame_condition_prob == 0:
        notes.append("this masked model was not trained for frame prediction (frame_condition_prob = 0)")
    original = clip
    if original.shape[0] < total:
        notes.append(f"the input has {original.shape[0]} of {total} frames; the original side is padded grey")
        pad = np.full((total - original.shape[0], height, width, 3), 128, np.uint8)
        original = np.concatenate([original, pad])
    gap = np.full((total, height, 2, 3), 255, np.uint8)
    side = np.concatenate([original[:total], gap, predicted[:total]], axis=2)
    out = write_media(output, side, fps=fps or 8.0)
    return PredictionResult(out, frames, total, notes)
