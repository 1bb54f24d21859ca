"""``vistok eval``: tokenizers judged the way the field reports them.

For every selected clip (or image) of the data, each model tokenizes and decodes it (streamed,
exact), and the reconstruction is scored against the original on uint8 frames:

* PSNR / SSIM / MS-SSIM per frame (frame-averaged per clip), as the field's benchmarks do;
* LPIPS with the VGG16 and the AlexNet networks (``lpips_vgg``, ``lpips_alex``), per frame;
* rFID: Fréchet distance between the FID-Inception pool features of all original and all
  reconstructed frames (images count as one frame);
* rFVD: Fréchet distance between the I3D (Kinetics-400) logits of original and reconstructed clips
  of ``fvd_frames`` frames resized to ``fvd_resize`` (the StyleGAN-V protocol: 16 frames, 224 px);
* the tokens: codebook usage and perplexity over all clips, bits per token raw (log2 vocabulary)
  and after the codec's entropy coding (a real ``.vtok`` byte count), bits per pixel;
* encode and decode frames per second.

Optionally x264 / x265 join as methods "at matched bits per pixel": for each clip the CRF whose
rate is nearest (in log-rate) to the first model's coded rate, scored with the same metrics.

Clip selection is deterministic: sources in sorted order, ``clips_per_video`` start frames per video
drawn from ``seed`` (evenly spread when the video is long enough), images as one frame. Each clip
is resized (shorter side to ``size``) and centre-cropped to a square (``crop``) or to a multiple of
the models' spatial factor. Unreadable files are skipped by name. Distances over few samples are
reported beside a warning of how unreliable they are (:func:`vistok.metrics.frechet.reliability_note`).
"""

from __future__ import annotations

import json
import math
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vistok.atomic import atomic_output, atomic_write_text
from vistok.codec.baselines import block_means, run_baseline
from vistok.codec.codec import CompressStats, compress_indices
from vistok.configuration import Config
from vistok.data.images import IMAGE_EXTENSIONS, read_image
from vistok.data.transforms import center_crop, resize_shorter, to_tensor, to_uint8
from vistok.data.video import VIDEO_EXTENSIONS, probe_video, read_video
from vistok.errors import VistokError
from vistok.files import save_npz
from vistok.metrics.frechet import GaussianStats, frechet_distance, reliability_note
from vistok.metrics.i3d import I3D, fvd_preprocess, load_i3d
from vistok.metrics.inception import InceptionV3FID, load_inception
from vistok.metrics.perceptual import LPIPS
from vistok.metrics.quality import chroma_scores, frame_scores, uint8_frames
from vistok.metrics.store import installed_weights
from vistok.pipelines.budget import choose_chunk_frames
from vistok.pictures import comparison_grid
from vistok.tokenizers.base import Tokenizer, split_clip

# Tar members larger than this are not read into memory (a shard member is one clip or image).
MAX_MEMBER_BYTES = 1 << 30
BASELINE_CRFS = tuple(range(15, 52, 3)) + (51,)


@dataclass
class EvalProtocol(Config):
    """How clips are chosen and measured (recorded in ``eval.json``)."""

    frames: int = 17  # frames per clip (trimmed to 1 + 4k)
    size: int | None = 128  # shorter side resized to this first (None: native)
    crop: int | None = 128  # then a centre square of this side (None: largest multiple of the spatial factor)
    clips_per_video: int = 1
    max_clips: int | None = None
    seed: int = 0
    fvd_frames: int = 16  # StyleGAN-V: the first 16 frames of each clip
    fvd_resize: int = 224  # StyleGAN-V / the original FVD: frames resized to 224 x 224 (bilinear)
    chunk_frames: int = 16  # longest streamed chunk (shortened to fit the memory budget; results do not change)

    def __post_init__(self):
        if self.frames < 1 or self.clips_per_video < 1 or self.fvd_frames < 1 or self.chunk_frames < 4:
            raise VistokError("frames, clips_per_video, fvd_frames >= 1 and chunk_frames >= 4 required")
        for name in ("size", "crop", "max_clips"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise VistokError(f"{name} must be >= 1 (or unset), got {v}")
        if self.fvd_resize < 32:
            raise VistokError(f"fvd_resize must be >= 32, got {self.fvd_resize}")


@dataclass
class EvalNetworks:
    """The feature and distance networks; any may be missing (that metric is then skipped)."""

    inception: InceptionV3FID | None = None
    i3d: I3D | None = None
    lpips: dict[str, LPIPS] = field(default_factory=dict)  # "lpips_vgg", "lpips_alex"
    missing: list[str] = field(default_factory=list)

    @classmethod
    def installed(cls, home: str | Path | None = None, *, want: Sequence[str] = ("lpips", "fid", "fvd")) -> "EvalNetworks":
        """The networks installed under the vistok home (``vistok weights install``)."""
        nets = cls()
        for key, name in (("lpips_vgg", "lpips-vgg"), ("lpips_alex", "lpips-alex")):
            if "lpips" in want:
                p = installed_weights(name, home)
                if p.is_file():
                    nets.lpips[key] = LPIPS.from_pretrained(p)
                else:
                    nets.missing.append(name)
        if "fid" in want:
            p = installed_weights("inception-fid", home)
            nets.inception = load_inception(p) if p.is_file() else None
            if nets.inception is None:
                nets.missing.append("inception-fid")
        if "fvd" in want:
            p = installed_weights("i3d-k400", home)
            nets.i3d = load_i3d(p) if p.is_file() else None
            if nets.i3d is None:
                nets.missing.append("i3d-k400")
        return nets


@dataclass
class EvalClip:
    """One selected clip: ``(t h w 3)`` uint8 frames and where they came from."""

    name: str
    source: str
    start: int
    frames: np.ndarray
    fps: float

    @property
    def pixels(self) -> int:
        t, h, w, _ = self.frames.shape
        return t * h * w

    def record(self) -> "ClipRecord":
        t, h, w, _ = self.frames.shape
        return ClipRecord(self.name, self.source, self.start, t, h, w)


@dataclass(frozen=True)
class ClipRecord:
    """What a report keeps of an evaluated clip (not its frames)."""

    name: str
    source: str
    start: int
    frames: int
    height: int
    width: int


# -- sources and clip selection -------------------------------------------------------------------


@dataclass(frozen=True)
class ShardMember:
    """A media member of a ``.tar`` shard, read when it is needed (never kept): its bytes lie at
    ``offset`` (a regular member's data is contiguous), so a read seeks there instead of walking
    the shard's headers again."""

    shard: Path
    member: str
    offset: int
    size: int

    def read(self) -> bytes:
        try:
            with open(self.shard, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as e:
            raise VistokError(f"{self.shard.name}:{self.member}: {e}") from e
        if len(data) != self.size:
            raise VistokError(f"{self.shard.name}:{self.member}: the shard ended inside this member")
        return data


def iter_sources(inputs: Sequence[str | Path]) -> Iterator[tuple[str, Any, str]]:
    """``(name, source, kind)`` for every media file under ``inputs`` (folders recursively, sorted;
    hidden files skipped) and every media member of ``.tar`` shards; ``source`` is a path or a
    :class:`ShardMember`, ``kind`` "video", "image", or the reason a shard could not be read (then
    ``source`` is None)."""
    from vistok.data.datasets import media_files

    for f in media_files(list(inputs)):
        suffix = f.suffix.lower()
        if suffix == ".tar":
            try:
                with tarfile.open(f) as tar:
                    members = sorted(tar.getmembers(), key=lambda m: m.name)
            except (tarfile.TarError, OSError) as e:
                yield str(f), None, f"unreadable shard: {e}"
                continue
            for m in members:
                ext = Path(m.name).suffix.lower()
                if (not m.isreg() or m.issparse() or m.size > MAX_MEMBER_BYTES
                        or ext not in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS):
                    continue
                yield (f"{f.name}:{m.name}", ShardMember(f, m.name, m.offset_data, m.size),
                       "video" if ext in VIDEO_EXTENSIONS else "image")
        elif suffix in VIDEO_EXTENSIONS:
            yield str(f), f, "video"
        elif suffix in IMAGE_EXTENSIONS:
            yield str(f), f, "image"


def _load(source: Any) -> Any:
    return source.read() if isinstance(source, ShardMember) else source


def _prepare(frames: np.ndarray, protocol: EvalProtocol, spatial: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (c t h w) uint8
    if protocol.size is not None:
        x = resize_shorter(x, protocol.size)
    h, w = x.shape[-2:]
    if protocol.crop is not None:
        side = min(protocol.crop, h, w)
        ch = cw = side - side % spatial
    else:
        ch, cw = h - h % spatial, w - w % spatial
    if ch < spatial or cw < spatial:
        raise VistokError(f"{h}x{w} frames are smaller than the tokenizer's {spatial}-pixel patch")
    return center_crop(x, ch, cw).permute(1, 2, 3, 0).contiguous().numpy()


def _frames_missing(message: str, wanted: int) -> int | None:
    """From read_video's "... but the video ended after K" message: how many frames were missing."""
    m = re.search(r"ended after (\d+)", message)
    return None if m is None else wanted - int(m.group(1))


@dataclass(frozen=True)
class ClipWindow:
    """A clip the protocol selects, before any of its frames is decoded."""

    name: str  # the clip's name in reports
    source_name: str
    source: Any  # a path or a ShardMember
    kind: str  # "video" or "image"
    start: int
    frames: int
    siblings: tuple[int, ...]  # the starts chosen in the same video (a window never moves onto one)
    fps: float


def _clip_name(source_name: str, start: int, siblings: Sequence[int]) -> str:
    """A clip's name in reports: the file name, with ``@start`` when the video gives several
    clips or the clip does not start at its first frame."""
    base = Path(source_name).name
    return f"{base}@{start}" if len(siblings) > 1 or start else base


def plan_clips(
    inputs: Sequence[str | Path], protocol: EvalProtocol, *, temporal: int,
    skipped: list[tuple[str, str]] | None = None,
) -> list[ClipWindow]:
    """The windows ``protocol`` selects from ``inputs`` (see the module doc), found by probing
    (no frame is decoded, nothing is kept); unreadable sources are appended to ``skipped``."""
    skipped = [] if skipped is None else skipped
    rng = np.random.default_rng(protocol.seed)
    windows: list[ClipWindow] = []
    length = 1 + (protocol.frames - 1) // temporal * temporal
    for name, source, kind in iter_sources(inputs):
        if protocol.max_clips is not None and len(windows) >= protocol.max_clips:
            break
        if source is None:
            skipped.append((name, kind))
            continue
        if kind == "image":
            windows.append(ClipWindow(name, name, source, kind, 0, 1, (0,), 25.0))
            continue
        try:
            info = probe_video(_load(source))
        except VistokError as e:
            skipped.append((name, str(e)))
            continue
        n = min(length, info.frames)
        n = 1 + (n - 1) // temporal * temporal
        last = info.frames - n
        k = min(protocol.clips_per_video, last + 1)
        if k == 1:
            starts = [0]
        else:  # evenly spread windows, each shifted by a seeded jitter of up to a quarter of the gap
            gap = last / (k - 1)
            jitter = int(gap // 4)
            base = np.linspace(0, last, k).round().astype(int)
            starts = sorted({int(np.clip(b + rng.integers(-jitter, jitter + 1), 0, last)) for b in base})
        for s in starts:
            if protocol.max_clips is not None and len(windows) >= protocol.max_clips:
                break
            windows.append(ClipWindow(_clip_name(name, s, starts), name, source, kind, s, n, tuple(starts),
                                      info.fps or 25.0))
    return windows


def read_clip(window: ClipWindow, protocol: EvalProtocol, *, spatial: int) -> EvalClip:
    """Decode and prepare one window's frames. A video whose header counts more frames than it
    decodes has its window moved earlier by the shortfall (when that start is free)."""
    data = _load(window.source)
    if window.kind == "image":
        return EvalClip(window.name, window.source_name, 0, _prepare(read_image(data)[None], protocol, spatial), 25.0)
    s, name = window.start, window.name
    try:
        frames = read_video(data, start=s, num_frames=window.frames)
    except VistokError as e:
        shortfall = _frames_missing(str(e), window.frames)
        if shortfall is None or s - shortfall < 0 or (s - shortfall) in window.siblings:
            raise
        s -= shortfall
        frames = read_video(data, start=s, num_frames=window.frames)
        name = _clip_name(window.source_name, s, window.siblings)
    return EvalClip(name, window.source_name, s, _prepare(frames, protocol, spatial), window.fps)


def iter_clips(
    windows: Sequence[ClipWindow], protocol: EvalProtocol, *, spatial: int,
    skipped: list[tuple[str, str]] | None = None,
) -> Iterator[EvalClip]:
    """The windows' clips one at a time (only one is decoded at once); windows that cannot be read
    are appended to ``skipped``."""
    skipped = [] if skipped is None else skipped
    for w in windows:
        try:
            yield read_clip(w, protocol, spatial=spatial)
        except VistokError as e:
            skipped.append((w.source_name if w.kind == "image" else f"{w.source_name}@{w.start}", str(e)))


def _none_readable(inputs: Sequence[str | Path], skipped: list[tuple[str, str]]) -> VistokError:
    return VistokError("no readable clips or images in " + ", ".join(map(str, inputs))
                       + (f" ({len(skipped)} skipped: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))


def select_clips(
    inputs: Sequence[str | Path], protocol: EvalProtocol, *, temporal: int, spatial: int,
    skipped: list[tuple[str, str]] | None = None,
) -> list[EvalClip]:
    """Every clip ``protocol`` selects from ``inputs``, decoded (:func:`plan_clips` then
    :func:`iter_clips`; :func:`evaluate` streams them instead)."""
    skipped = [] if skipped is None else skipped
    clips = list(iter_clips(plan_clips(inputs, protocol, temporal=temporal, skipped=skipped), protocol,
                            spatial=spatial, skipped=skipped))
    if not clips:
        raise _none_readable(inputs, skipped)
    return clips


# -- one model on one clip ------------------------------------------------------------------------


@dataclass
class Reconstructed:
    frames: np.ndarray  # (t h w 3) uint8
    indices: np.ndarray | None
    encode_s: float
    decode_s: float
    coded_bytes: int | None  # the whole .vtok file (header and framing included)
    coded_bits_per_token: float | None  # entropy-coded payload and side information per token


@torch.no_grad()
def reconstruct_clip(tok: Tokenizer, clip: EvalClip, chunk_frames: int) -> Reconstructed:
    """Tokenize and decode in streamed chunks (exactly as whole); time each half; entropy-code the
    tokens with the codec (LFQ tokenizers) for a real byte count."""
    dtype = next(tok.parameters()).dtype
    video = to_tensor(clip.frames).unsqueeze(0).to(dtype)
    chunks = list(split_clip(video, chunk_frames, tok.temporal_compression))
    t0 = time.perf_counter()
    if tok.vocab_size is None:
        codes = list(tok.encode_codes_stream(chunks))
        t1 = time.perf_counter()
        out = list(tok.decode_codes_stream(codes))
        indices = None
    else:
        pieces = list(tok.encode_stream(chunks))
        t1 = time.perf_counter()
        out = list(tok.decode_stream(pieces))
        indices = torch.cat(pieces, dim=1)[0].cpu().numpy()
    t2 = time.perf_counter()
    frames = to_uint8(torch.cat(out, dim=2)[0].float())
    coded, per_token = None, None
    if indices is not None and hasattr(tok.quantizer, "bits"):
        stats = CompressStats("context")
        coded = len(compress_indices(tok, indices, fps=clip.fps, stats=stats))
        per_token = stats.bits_per_token
    return Reconstructed(frames, indices, t1 - t0, t2 - t1, coded, per_token)


def baseline_at_rate(clip: EvalClip, codec: str, target_bpp: float, crfs: Sequence[int] = BASELINE_CRFS):
    """The CRF whose rate is nearest ``target_bpp`` in log-rate (a bisection over ``crfs``, whose
    rates fall as CRF rises): ``(crf, decoded frames, bits per pixel)``."""
    crfs = sorted(set(crfs))
    cache: dict[int, tuple[np.ndarray, float]] = {}

    def at(crf: int):
        if crf not in cache:
            r = run_baseline(clip.frames, codec, crf, fps=clip.fps)
            cache[crf] = (r.decoded, len(r.bitstream) * 8 / clip.pixels)
        return cache[crf]

    lo, hi = 0, len(crfs) - 1
    while hi - lo > 1:  # rate(crfs[lo]) >= target >= rate(crfs[hi]) kept where possible
        mid = (lo + hi) // 2
        if at(crfs[mid])[1] >= target_bpp:
            lo = mid
        else:
            hi = mid
    best = min((crfs[lo], crfs[hi]), key=lambda c: abs(math.log(max(at(c)[1], 1e-12) / target_bpp)))
    decoded, bpp = at(best)
    return best, decoded, bpp


# -- features and scores ---------------------------------------------------------------------------


@torch.no_grad()
def inception_features(frames: np.ndarray, net: InceptionV3FID, batch: int = 8) -> np.ndarray:
    x = uint8_frames(frames)
    return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]).double().numpy()


@torch.no_grad()
def i3d_features(frames: np.ndarray, net: I3D, protocol: EvalProtocol) -> np.ndarray | None:
    """``(1, 400)`` I3D logits of the clip's first ``fvd_frames`` frames, or None if it is shorter."""
    if frames.shape[0] < protocol.fvd_frames:
        return None
    x = fvd_preprocess(frames[None, : protocol.fvd_frames], size=protocol.fvd_resize)
    return net.features(x).double().numpy()


def _frechet(real: list[np.ndarray], fake: list[np.ndarray], what: str, notes: list[str]) -> float | None:
    if len(real) == 0 or sum(len(r) for r in real) < 2:
        notes.append(f"{what}: fewer than 2 samples, not computed")
        return None
    x, y = np.concatenate(real), np.concatenate(fake)
    note = reliability_note(len(x), x.shape[1])
    if note and f"{what} over {len(x)} samples: {note}" not in notes:
        notes.append(f"{what} over {len(x)} samples: {note}")
    return frechet_distance(GaussianStats.from_features(x), GaussianStats.from_features(y))


class TokenUsage:
    """Codebook counts accumulated clip by clip (one ``vocab``-long count array, not the tokens)."""

    def __init__(self, vocab: int):
        self.counts = np.zeros(vocab, np.int64)

    def add(self, indices: np.ndarray) -> None:
        self.counts += np.bincount(indices.ravel().astype(np.int64), minlength=len(self.counts))

    def summary(self) -> dict[str, Any]:
        total = int(self.counts.sum())
        if total == 0:
            return {}
        used = self.counts[self.counts > 0]
        p = used / total
        vocab = len(self.counts)
        return {"codebook_usage": int(used.size), "codebook_fraction": float(used.size / vocab),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())), "vocab_size": int(vocab),
                "bits_per_token_raw": math.log2(vocab), "tokens_total": total}


class WorstClips:
    """The ``k`` clips of lowest PSNR seen so far, with their frames (ties: the earlier clip)."""

    def __init__(self, k: int):
        self.k, self._kept, self._seen = k, [], 0

    def offer(self, psnr_db: float, name: str, original: np.ndarray, reconstruction: np.ndarray) -> None:
        self._kept.append((psnr_db, self._seen, name, original, reconstruction))
        self._seen += 1
        self._kept.sort(key=lambda item: item[:2])
        del self._kept[self.k :]

    def items(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return [(name, orig, rec) for _, _, name, orig, rec in self._kept]


class ChunkPlanner:
    """Each model's chunk length for a clip shape: the protocol's ``chunk_frames``, shortened to
    the longest that fits the memory budget (:func:`vistok.pipelines.budget.choose_chunk_frames`,
    planned once per model and shape)."""

    def __init__(self, longest: int, budget: int | None):
        self.longest, self.budget = longest, budget
        self._cache: dict[tuple, int] = {}
        self.choices: list[str] = []

    def frames(self, label: str, tok: Tokenizer, clip: EvalClip) -> int:
        t, h, w, _ = clip.frames.shape
        key = (label, t, h, w)
        if key not in self._cache:
            tc = tok.temporal_compression
            choice = choose_chunk_frames(tok, h, w, self.budget, frames=t, metrics=False)
            chunk = max(tc, min(choice.chunk_frames, self.longest // tc * tc))
            if chunk < self.longest and t > 1 + chunk:
                self.choices.append(f"{label} on {w}x{h}: {choice.describe()}")
            self._cache[key] = chunk
        return self._cache[key]


# -- the whole evaluation -------------------------------------------------------------------------


@dataclass
class EvalResult:
    protocol: EvalProtocol
    clips: list[ClipRecord]
    models: dict[str, dict]  # label -> {"aggregate": {...}, "per_clip": [...]}
    notes: list[str]
    skipped: list[tuple[str, str]]
    features: dict[str, np.ndarray]
    worst: dict[str, list[tuple[str, np.ndarray, np.ndarray]]]  # label -> [(clip, original, recon)]

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol.to_dict(),
            "clips": [{"name": c.name, "source": c.source, "start": c.start, "frames": c.frames,
                       "height": c.height, "width": c.width} for c in self.clips],
            "models": self.models,
            "notes": self.notes,
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
        }

    def markdown(self) -> str:
        cols = [("psnr", "PSNR", ".2f"), ("psnr_first", "PSNR 1st", ".2f"), ("psnr_later", "PSNR later", ".2f"),
                ("chroma_error_grey", "chroma err (grey)", ".2f"), ("ssim", "SSIM", ".4f"), ("ms_ssim", "MS-SSIM", ".4f"),
                ("lpips_vgg", "LPIPS-VGG", ".4f"), ("lpips_alex", "LPIPS-Alex", ".4f"), ("rfid", "rFID", ".2f"),
                ("rfvd", "rFVD", ".1f"), ("bpp", "bpp", ".4f"), ("bits_per_token_coded", "bits/token", ".2f"),
                ("codebook_usage", "codes used", ".0f"), ("perplexity", "perplexity", ".0f"),
                ("encode_fps", "enc fps", ".1f"), ("decode_fps", "dec fps", ".1f")]
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        n_img = sum(c.frames == 1 for c in self.clips)
        lines = [f"{len(self.clips)} items ({len(self.clips) - n_img} clips, {n_img} images); protocol: "
                 + ", ".join(f"{k}={v}" for k, v in self.protocol.to_dict().items()), "",
                 "| model | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
        for label, m in self.models.items():
            a = m["aggregate"]
            lines.append(f"| {label} | " + " | ".join(fmt(a.get(k), f) for k, _, f in cols) + " |")
        lines.append("")
        lines += ["Per clip (PSNR dB / MS-SSIM / LPIPS-VGG):", "",
                  "| clip | " + " | ".join(self.models) + " |", "|---|" + "---:|" * len(self.models)]
        for i, c in enumerate(self.clips):
            cells = []
            for m in self.models.values():
                r = m["per_clip"][i]
                cells.append(f"{fmt(r.get('psnr'), '.2f')} / {fmt(r.get('ms_ssim'), '.3f')} / {fmt(r.get('lpips_vgg'), '.3f')}")
            lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- {n}" for n in self.notes]
        if self.skipped:
            lines += ["", f"Skipped {len(self.skipped)} unreadable file(s) or clip windows:"] + [f"- {s}: {r}" for s, r in self.skipped]
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path, *, save_features: bool = False) -> dict[str, Path]:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        files = {"json": atomic_write_text(d / "eval.json", json.dumps(self.to_json(), indent=2) + "\n"),
                 "md": atomic_write_text(d / "eval.md", self.markdown())}
        files["plot"] = self.plot(d / "eval.png")
        for label, items in self.worst.items():
            if items:  # one labelled pair of rows per clip (clips may differ in size), stacked
                grids = [comparison_grid([(f"{name}", orig), (label[:18], rec)], frames=5,
                                         scale=2 if orig.shape[1] <= 128 else 1) for name, orig, rec in items]
                strip = Image.new("RGB", (max(g.width for g in grids), sum(g.height + 8 for g in grids)), "white")
                y = 0
                for g in grids:
                    strip.paste(g, (0, y))
                    y += g.height + 8
                p = d / f"worst_{_safe(label)}.png"
                with atomic_output(p) as tmp:
                    strip.save(tmp, format="PNG")
                files[f"worst_{label}"] = p
        if save_features and self.features:
            files["features"] = save_npz(d / "features.npz", self.features)
        return files

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics = [k for k in ("psnr", "ms_ssim", "lpips_vgg") if any(
            r.get(k) is not None for m in self.models.values() for r in m["per_clip"])]
        n = len(self.clips)
        # Items along x for a few; beyond a dozen the bars turn sideways, one row of bars per item,
        # and the figure grows with the item count so every label stays readable.
        sideways = n > 12
        size = (5 * len(metrics), max(3.8, 0.045 * n * max(1, len(self.models)) + 1.2)) if sideways else (5 * len(metrics), 3.8)
        fig, axes = plt.subplots(1, len(metrics), figsize=size, squeeze=False)
        x = np.arange(n)
        width = 0.8 / max(1, len(self.models))
        names = [re.sub(r"\.\w+(@|$)", r"\1", c.name.rsplit("/", 1)[-1])[-(40 if sideways else 22):] for c in self.clips]
        for ax, metric in zip(axes[0], metrics):
            for j, (label, m) in enumerate(self.models.items()):
                vals = [r.get(metric) if r.get(metric) is not None else np.nan for r in m["per_clip"]]
                (ax.barh if sideways else ax.bar)(x + j * width, vals, width, label=label)
            ax.set_title({"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "lpips_vgg": "LPIPS-VGG (lower is better)"}[metric])
            ticks = x + width * (len(self.models) - 1) / 2
            if sideways:
                ax.set_yticks(ticks)
                ax.set_yticklabels(names if ax is axes[0][0] else [], fontsize=7)
                ax.set_ylim(-0.5, n)
                ax.invert_yaxis()  # the first item on top, as in eval.md
                ax.grid(True, axis="x", alpha=0.3)
            else:
                ax.set_xticks(ticks)
                ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
                ax.grid(True, axis="y", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        return path


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def evaluate(
    models: Sequence[tuple[str, Tokenizer]],
    inputs: Sequence[str | Path],
    *,
    protocol: EvalProtocol | None = None,
    networks: EvalNetworks | None = None,
    codecs: Sequence[str] = (),
    block_baseline: bool = True,
    worst: int = 4,
    max_memory: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvalResult:
    """Evaluate ``models`` (and ``codecs`` at the first model's rate) on the clips of ``inputs``;
    with ``block_baseline``, also the trivial baseline: each ``s x s`` block's mean colour, ``s``
    the models' spatial factor (no rate: it keeps 24 bits per block and frame).

    Clips are decoded and scored one at a time, so memory holds one clip's work (its chunks
    shortened to fit ``max_memory`` bytes; default: what the process holds plus half the available
    memory) plus what the report keeps of each clip."""
    protocol = protocol or EvalProtocol()
    nets = networks if networks is not None else EvalNetworks()
    if not models:
        raise VistokError("no model to evaluate")
    labels = [label for label, _ in models]
    if len(set(labels)) != len(labels):
        raise VistokError(f"model labels must differ, got {labels}")
    if codecs and models[0][1].vocab_size is None:
        raise VistokError("codec comparison needs a first model with tokens (its coded rate is the target)")
    temporal = max(t.temporal_compression for _, t in models)
    spatial = max(t.spatial_compression for _, t in models)
    skipped: list[tuple[str, str]] = []
    windows = plan_clips(inputs, protocol, temporal=temporal, skipped=skipped)
    notes: list[str] = []
    if nets.missing:
        notes.append("not measured (weights not installed): " + ", ".join(nets.missing)
                     + f"; install with `vistok weights install {' '.join(nets.missing)}`")
    block_label = f"{spatial}x{spatial} block means"
    methods = labels + [f"{c} (matched bpp)" for c in codecs] + ([block_label] if block_baseline else [])
    per_clip: dict[str, list[dict]] = {m: [] for m in methods}
    feats_real_inc, feats_real_i3d = [], []
    feats_inc: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    feats_i3d: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    usage = {m: TokenUsage(tok.vocab_size) for m, tok in models if tok.vocab_size}
    timing = {m: [0.0, 0.0, 0] for m in labels}
    worst_kept = {m: WorstClips(worst) for m in methods}
    chunks = ChunkPlanner(protocol.chunk_frames, max_memory)
    records: list[ClipRecord] = []
    raw_rate: dict[str, int] = {}
    total = len(windows) * len(methods)
    done = 0
    # One clip at a time: what stays behind is its scores, features, token counts and (for the
    # worst few) its frames, so memory does not grow with the data set beyond those.
    for clip in iter_clips(windows, protocol, spatial=spatial, skipped=skipped):
        records.append(clip.record())
        real_i3d = i3d_features(clip.frames, nets.i3d, protocol) if nets.i3d is not None else None
        if nets.inception is not None:
            feats_real_inc.append(inception_features(clip.frames, nets.inception))
        if real_i3d is not None:
            feats_real_i3d.append(real_i3d)
        target_bpp = None
        outputs: list[tuple[str, np.ndarray, dict]] = []
        for label, tok in models:
            rec = reconstruct_clip(tok, clip, chunks.frames(label, tok, clip))
            row: dict[str, Any] = {"clip": clip.name}
            row["tokens"] = None if rec.indices is None else rec.indices.size
            row["bpp"] = None if rec.coded_bytes is None else 8 * rec.coded_bytes / clip.pixels
            if row["bpp"] is None and rec.indices is not None and tok.vocab_size:
                # no entropy coder for this bottleneck (`vistok compress` codes LFQ tokens): the
                # rate is that of the raw indices, log2(vocabulary) bits each
                row["bpp"] = rec.indices.size * math.log2(tok.vocab_size) / clip.pixels
                raw_rate[label] = tok.vocab_size
            row["bits_per_token_coded"] = rec.coded_bits_per_token
            if rec.indices is not None and label in usage:
                usage[label].add(rec.indices)
            timing[label][0] += rec.encode_s
            timing[label][1] += rec.decode_s
            timing[label][2] += clip.frames.shape[0]
            if target_bpp is None:
                target_bpp = row["bpp"]
            outputs.append((label, rec.frames, row))
        for codec in codecs:
            crf, decoded, bpp = baseline_at_rate(clip, codec, target_bpp)
            outputs.append((f"{codec} (matched bpp)", decoded, {"clip": clip.name, "crf": crf, "bpp": bpp}))
        if block_baseline:
            outputs.append((block_label, block_means(clip.frames, spatial), {"clip": clip.name}))
        for method, frames, row in outputs:
            row.update(frame_scores(clip.frames, frames, nets.lpips, positions=True))
            row.update(chroma_scores(clip.frames, frames))
            if nets.inception is not None:
                feats_inc[method].append(inception_features(frames, nets.inception))
            if real_i3d is not None:
                feats_i3d[method].append(i3d_features(frames, nets.i3d, protocol))
            per_clip[method].append(row)
            worst_kept[method].offer(row["psnr"], clip.name, clip.frames, frames)
            done += 1
            if progress:
                progress(done, total, f"{clip.name} {method}")
        del outputs
    if not records:
        raise _none_readable(inputs, skipped)
    if chunks.choices:
        notes.append("memory: " + "; ".join(chunks.choices))
    for label, vocab in raw_rate.items():
        notes.append(f"{label}: bpp is the rate of the raw token indices, log2({vocab}) = {math.log2(vocab):.2f} "
                     "bits each (no entropy coder for this bottleneck; `vistok compress` codes LFQ tokens)")
    results: dict[str, dict] = {}
    for method in methods:
        rows = per_clip[method]
        agg: dict[str, Any] = {}
        for key in ("psnr", "ssim", "ms_ssim", "lpips_vgg", "lpips_alex", "bpp", "bits_per_token_coded",
                    "psnr_first", "psnr_later", "chroma_error"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            agg[key] = float(np.mean(vals)) if vals else None
        grey = [r["chroma_error"] for r in rows if r.get("grey_input")]
        agg["chroma_error_grey"] = float(np.mean(grey)) if grey else None
        agg["rfid"] = _frechet(feats_real_inc, feats_inc[method], "rFID", notes) if nets.inception else None
        agg["rfvd"] = _frechet(feats_real_i3d, feats_i3d[method], "rFVD", notes) if nets.i3d else None
        if method in usage:
            agg.update(usage[method].summary())
        if method in timing:
            enc, dec, frames = timing[method]
            agg["encode_fps"] = frames / enc if enc > 0 else None
            agg["decode_fps"] = frames / dec if dec > 0 else None
        results[method] = {"aggregate": agg, "per_clip": rows}
    if len(feats_real_i3d) < len(records):
        notes.append(f"rFVD uses the {len(feats_real_i3d)} clips of at least {protocol.fvd_frames} frames "
                     f"(of {len(records)} items)")
    features: dict[str, np.ndarray] = {}
    if feats_real_inc:
        features["inception_real"] = np.concatenate(feats_real_inc)
    if feats_real_i3d:
        features["i3d_real"] = np.concatenate(feats_real_i3d)
    for j, method in enumerate(methods):
        suffix = "" if j == 0 else "_" + _safe(method)
        if feats_inc[method]:
            features["inception_recon" + suffix] = np.concatenate(feats_inc[method])
        if feats_i3d[method]:
            features["i3d_recon" + suffix] = np.concatenate(feats_i3d[method])
    worst_items = {method: kept.items() for method, kept in worst_kept.items()}
    return EvalResult(protocol, records, results, notes, skipped, features, worst_items)
