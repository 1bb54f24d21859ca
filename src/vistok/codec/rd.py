"""Rate-distortion comparison: vistok's ``.vtok`` files against x264 and x265 on the same pixels.

For each clip, every method sees the same uint8 RGB frames (read, optionally resized and
centre-cropped, trimmed to ``1 + T k`` frames), and every reconstruction is scored the same way:
PSNR, SSIM and MS-SSIM per frame on uint8 RGB, averaged over frames.

Rates are real sizes: ``len(file) * 8`` for vistok (header and chunk framing included) and the raw
Annex-B bitstream for x264/x265 (parameter sets included, SEI removed; see
:mod:`vistok.codec.baselines`), divided by ``frames x height x width``.

A tokenizer has one rate per clip at full precision; lower rates come from dropping the ``n``
least significant LFQ bits (not coded, decoded as zero codes), and other operating points from
other models. The codecs sweep CRF.
"""

from __future__ import annotations

import csv
import json
import math
from functools import cached_property
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vistok.codec.baselines import CODECS, available, run_baseline
from vistok.codec.codec import CompressStats, compress_indices, decompress, decompress_indices
from vistok.data.transforms import center_crop, resize_shorter, to_tensor, to_uint8
from vistok.data.video import probe_video, read_video
from vistok.errors import VistokError
from vistok.metrics.quality import frame_scores
from vistok.tokenizers.base import Tokenizer, split_clip

DEFAULT_CRFS = (18, 23, 28, 33, 38, 43, 48, 51)
DEFAULT_DROPS = (0, 2, 4, 6, 8)
# MS-SSIM needs at least 3 scales (11-pixel window at 1/4 size) to mean much; below that it is left out.
MS_SSIM_MIN_SIDE = 11 * 2**2


@dataclass
class Clip:
    """Frames every method codes: ``(t h w 3)`` uint8 RGB."""

    name: str
    frames: np.ndarray
    fps: float
    notes: list[str] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        t, h, w, _ = self.frames.shape
        return t * h * w


def load_clip(
    path: str | Path,
    *,
    frames: int | None = 17,
    start: int = 0,
    size: int | None = None,
    crop: tuple[int, int] | None = None,
    temporal_multiple: int = 4,
    spatial_multiple: int = 8,
) -> Clip:
    """Read ``frames`` frames from ``start`` (None: all), resize the shorter side to ``size`` (if
    given), centre-crop to ``crop`` (default: the largest multiple of ``spatial_multiple``) and trim
    to ``1 + temporal_multiple * k`` frames."""
    path = Path(path)
    info = probe_video(path)
    available_frames = info.frames - start
    n = available_frames if frames is None else min(frames, available_frames)
    if n < 1:
        raise VistokError(f"{path}: no frames from frame {start} (it has {info.frames})")
    n = 1 + (n - 1) // temporal_multiple * temporal_multiple
    x = torch.from_numpy(read_video(path, start=start, num_frames=n)).permute(3, 0, 1, 2)  # (c t h w) uint8
    if size is not None:
        x = resize_shorter(x, size)
    h, w = x.shape[-2:]
    ch, cw = crop if crop is not None else (h - h % spatial_multiple, w - w % spatial_multiple)
    if ch % spatial_multiple or cw % spatial_multiple:
        raise VistokError(f"crop {ch}x{cw} must be a multiple of {spatial_multiple}")
    x = center_crop(x, ch, cw)
    notes = [] if n == info.frames - start else [f"used {n} frames from frame {start}"]
    name = f"{path.stem}{f'@{start}' if start else ''} {cw}x{ch}x{n}" + (f" (shorter side {size})" if size else "")
    return Clip(name, x.permute(1, 2, 3, 0).contiguous().numpy(), info.fps or 25.0, notes)


def quality(original: np.ndarray, decoded: np.ndarray, lpips=None) -> dict[str, float | None]:
    """PSNR / SSIM / MS-SSIM of ``(t h w 3)`` uint8 frames, and ``lpips`` when a network is given."""
    return frame_scores(original, decoded, {"lpips": lpips} if lpips is not None else None)


@dataclass
class RDPoint:
    """One operating point. ``bpp`` is the real size; for vistok, ``bpp`` is the context-model
    file and ``bpp_static`` the static-model file of the same tokens."""

    clip: str
    method: str  # "vistok:<model>", "x264", "x265"
    setting: str  # "bits=18", "crf=35"
    bytes: int
    bpp: float
    psnr: float
    ssim: float | None
    ms_ssim: float | None
    lpips: float | None = None  # only with LPIPS weights (lower is better)
    kept_bits: int | None = None
    crf: int | None = None
    bits_per_token: float | None = None  # context model, coded
    info_bits_per_token: float | None = None  # context model, its own estimate
    bits_per_token_static: float | None = None
    info_bits_per_token_static: float | None = None
    bpp_static: float | None = None


def tokenize_clip(tok: Tokenizer, clip: Clip, chunk_frames: int = 16) -> np.ndarray:
    """``(t' h' w')`` tokens of the clip, encoded in streamed chunks (exact, bounded memory)."""
    video = to_tensor(clip.frames).unsqueeze(0).to(next(tok.parameters()).dtype)
    pieces = [p[0].cpu().numpy() for p in tok.encode_stream(split_clip(video, chunk_frames, tok.temporal_compression))]
    return np.concatenate(pieces)


def vistok_points(
    tok: Tokenizer, clip: Clip, *, name: str, drops: Sequence[int] = DEFAULT_DROPS, chunk_frames: int | None = None,
    lpips=None,
    previews: dict | None = None,
) -> list[RDPoint]:
    """One point per number of dropped low-order bits, each a real ``.vtok`` file decoded back.
    ``previews``: a dict that receives ``(clip, method, setting) -> middle decoded frame``."""
    indices = tokenize_clip(tok, clip)
    model_id = tok.model_id()
    bits = tok.quantizer.bits
    fps = clip.fps
    points = []
    for drop in sorted(set(drops)):
        if not 0 <= drop <= bits:
            raise VistokError(f"cannot drop {drop} of {bits} bits")
        kept = bits - drop
        stats = {}
        files = {}
        for entropy in ("static", "context"):
            st = CompressStats(entropy)
            files[entropy] = compress_indices(
                tok, indices, fps=fps, entropy=entropy, kept_bits=kept, chunk_frames=chunk_frames,
                model_id=model_id, stats=st,
            )
            stats[entropy] = st
        data = files["context"]
        header, back = decompress_indices(data)
        if not np.array_equal(back, indices & header.kept_mask):
            raise VistokError("internal error: decoded tokens differ from the encoded ones")  # the codec's promise
        decoded = to_uint8(decompress(data, tok)[0])
        q = quality(clip.frames, decoded, lpips)
        if previews is not None:
            previews[(clip.name, f"vistok:{name}", f"bits={kept}")] = decoded[len(decoded) // 2]
        ctx, sta = stats["context"], stats["static"]
        points.append(
            RDPoint(
                clip=clip.name, method=f"vistok:{name}", setting=f"bits={kept}", bytes=len(data),
                bpp=8 * len(data) / clip.pixels, **q, kept_bits=kept,
                bits_per_token=ctx.bits_per_token, info_bits_per_token=ctx.info_bits_per_token,
                bits_per_token_static=sta.bits_per_token, info_bits_per_token_static=sta.info_bits_per_token,
                bpp_static=8 * len(files["static"]) / clip.pixels,
            )
        )
    return points


def baseline_points(
    clip: Clip, codec: str, crfs: Sequence[int] = DEFAULT_CRFS, *, preset: str = "medium", pix_fmt: str = "yuv420p",
    lpips=None,
    previews: dict | None = None,
) -> list[RDPoint]:
    points = []
    for crf in crfs:
        r = run_baseline(clip.frames, codec, crf, fps=clip.fps, preset=preset, pix_fmt=pix_fmt)
        q = quality(clip.frames, r.decoded, lpips)
        if previews is not None:
            previews[(clip.name, codec, f"crf={crf}")] = r.decoded[len(r.decoded) // 2]
        points.append(
            RDPoint(clip=clip.name, method=codec, setting=f"crf={crf}", bytes=len(r.bitstream),
                    bpp=r.bits / clip.pixels, **q, crf=int(crf))
        )
    return points


def interpolate_at(points: list[RDPoint], bpp: float, metric: str) -> float | None:
    """A codec's ``metric`` at ``bpp``, linear in log-rate between its two bracketing points
    (None outside the range it reaches)."""
    pts = sorted((p.bpp, getattr(p, metric)) for p in points if getattr(p, metric) is not None)
    for (r0, m0), (r1, m1) in zip(pts, pts[1:]):
        if r0 <= bpp <= r1:
            if r1 == r0:
                return m0
            f = (math.log(bpp) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return m0 + f * (m1 - m0)
    return None


def verdict(codec_points: list[RDPoint], point: RDPoint, metric: str) -> str | None:
    """Where ``point`` lies against a codec's rate-distortion curve in ``metric``:

    * ``"above"`` / ``"below"``: inside the codec's rate range, better / not better than the codec
      interpolated at the same rate;
    * ``"dominates"``: at a rate the codec cannot reach (below its lowest), and better than the
      codec's lowest-rate point, which spends more bits;
    * ``"dominated"``: above the codec's highest rate, and not better than that point, which spends
      fewer bits;
    * None: no comparison (no metric, or outside the range without a clear order).
    """
    value = getattr(point, metric)
    pts = sorted((p for p in codec_points if getattr(p, metric) is not None), key=lambda p: p.bpp)
    if value is None or not pts:
        return None
    at = interpolate_at(pts, point.bpp, metric)
    if at is not None:
        return "above" if value > at else "below"
    if point.bpp < pts[0].bpp:
        return "dominates" if value > getattr(pts[0], metric) else None
    return "dominated" if value <= getattr(pts[-1], metric) else None


WINS = ("above", "dominates")


@dataclass(frozen=True)
class CodecComparison:
    """One vistok point against one codec at the same rate: the codec's PSNR / MS-SSIM interpolated
    in log-rate at vistok's bits per pixel (``None`` outside the codec's range), the verdicts
    (:func:`verdict`), and the codec's nearest measured point."""

    codec: str
    psnr_at_rate: float | None
    ms_ssim_at_rate: float | None
    psnr_verdict: str | None
    ms_ssim_verdict: str | None
    nearest: RDPoint

    def verdict(self, metric: str) -> str | None:
        return self.psnr_verdict if metric == "psnr" else self.ms_ssim_verdict


@dataclass(frozen=True)
class Comparison:
    """A vistok operating point on one clip and how every codec does at its rate; the table, the
    Markdown, the JSON and the summary all render these records."""

    point: RDPoint
    codecs: tuple[CodecComparison, ...]

    def as_dict(self) -> dict:
        v = self.point
        row = {"clip": v.clip, "method": v.method, "setting": v.setting, "bpp": v.bpp, "psnr": v.psnr, "ms_ssim": v.ms_ssim}
        for c in self.codecs:
            row[f"{c.codec}_psnr_at_rate"] = c.psnr_at_rate
            row[f"{c.codec}_ms_ssim_at_rate"] = c.ms_ssim_at_rate
            row[f"{c.codec}_psnr_verdict"] = c.psnr_verdict
            row[f"{c.codec}_ms_ssim_verdict"] = c.ms_ssim_verdict
            n = c.nearest
            row[f"{c.codec}_nearest"] = {"setting": n.setting, "bpp": n.bpp, "psnr": n.psnr, "ms_ssim": n.ms_ssim}
        return row


@dataclass
class RDResult:
    points: list[RDPoint]
    notes: list[str] = field(default_factory=list)
    # (clip, method, setting) -> the middle decoded frame; "original" as the method for the source
    previews: dict = field(default_factory=dict)

    def clips(self) -> list[str]:
        return list(dict.fromkeys(p.clip for p in self.points))

    @cached_property
    def comparisons(self) -> list[Comparison]:
        """Each vistok point against each codec at the same rate (interpolated), or the codec's
        nearest point when vistok is outside the codec's range. Computed once."""
        rows = []
        for clip in self.clips():
            pts = [p for p in self.points if p.clip == clip]
            codecs = sorted({p.method for p in pts if not p.method.startswith("vistok")})
            for v in (p for p in pts if p.method.startswith("vistok")):
                per_codec = []
                for c in codecs:
                    cp = [p for p in pts if p.method == c]
                    per_codec.append(CodecComparison(
                        codec=c,
                        psnr_at_rate=interpolate_at(cp, v.bpp, "psnr"),
                        ms_ssim_at_rate=interpolate_at(cp, v.bpp, "ms_ssim"),
                        psnr_verdict=verdict(cp, v, "psnr"),
                        ms_ssim_verdict=verdict(cp, v, "ms_ssim"),
                        nearest=min(cp, key=lambda p: abs(math.log(p.bpp / v.bpp))),
                    ))
                rows.append(Comparison(v, tuple(per_codec)))
        return rows

    def summary(self) -> list[str]:
        """Per vistok operating point and codec: on how many clips it is better at equal rate
        (``above`` the codec's curve, or ``dominates`` its lowest-rate point), in MS-SSIM and PSNR."""
        lines = []
        comp = self.comparisons
        keys = list(dict.fromkeys((c.point.method, c.point.setting) for c in comp))
        codecs = sorted({cc.codec for c in comp for cc in c.codecs})
        for method, setting in keys:
            rows = [c for c in comp if (c.point.method, c.point.setting) == (method, setting)]
            bpp = sum(c.point.bpp for c in rows) / len(rows)
            parts = []
            for codec in codecs:
                for metric, label in (("ms_ssim", "MS-SSIM"), ("psnr", "PSNR")):
                    judged = [cc.verdict(metric) for c in rows for cc in c.codecs if cc.codec == codec]
                    judged = [x for x in judged if x is not None]
                    parts.append(f"{codec} {label} {sum(x in WINS for x in judged)}/{len(judged)}")
            lines.append(f"{method} {setting} (mean {bpp:.4f} bpp over {len(rows)} clips), better than: " + ", ".join(parts))
        return lines

    def table(self) -> str:
        """A fixed-width text table, one block per clip, rows by method then rate."""
        lines = []
        has_lpips = any(p.lpips is not None for p in self.points)
        head = (f"{'method':<22} {'setting':<9} {'bytes':>7} {'bpp':>8} {'PSNR':>6} {'MS-SSIM':>7} "
                + (f"{'LPIPS':>6} " if has_lpips else "") + f"{'b/tok ctx':>9} {'b/tok stat':>10} {'bpp stat':>8}")
        for clip in self.clips():
            lines += [f"== {clip}", head]
            for p in sorted((p for p in self.points if p.clip == clip), key=lambda p: (p.method, p.bpp)):
                ms = f"{p.ms_ssim:.4f}" if p.ms_ssim is not None else "-"
                extra = (f" {p.bits_per_token:>9.3f} {p.bits_per_token_static:>10.3f} {p.bpp_static:>8.4f}"
                         if p.bits_per_token is not None else "")
                lp = (f" {p.lpips:>6.4f}" if p.lpips is not None else f" {'-':>6}") if has_lpips else ""
                lines.append(f"{p.method:<22} {p.setting:<9} {p.bytes:>7} {p.bpp:>8.4f} {p.psnr:>6.2f} {ms:>7}{lp}{extra}")
            lines.append("")
        comp = self.comparisons
        if comp:
            lines.append("== at vistok's rates (codec PSNR / MS-SSIM interpolated in log-rate; '-' = outside its range)")
            for c in comp:
                v = c.point
                parts = [f"{v.clip}, {v.method} {v.setting}: {v.bpp:.4f} bpp, {v.psnr:.2f} dB"]
                for cc in c.codecs:
                    near = cc.nearest
                    ms = f", MS-SSIM {cc.ms_ssim_at_rate:.4f}" if cc.ms_ssim_at_rate is not None else ""
                    parts.append(
                        (f"{cc.codec} {cc.psnr_at_rate:.2f} dB{ms}" if cc.psnr_at_rate is not None
                         else f"{cc.codec} - (nearest {near.setting}: {near.bpp:.4f} bpp, {near.psnr:.2f} dB)")
                        + (f" [MS-SSIM: vistok {cc.ms_ssim_verdict}]" if cc.ms_ssim_verdict else "")
                    )
                lines.append("  " + "; ".join(parts))
            lines += ["", "== summary (clips where vistok is better at equal rate / judged)"] + self.summary()
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as Markdown (one table per clip, then the equal-rate comparison), for docs."""
        out = []
        has_lpips = any(p.lpips is not None for p in self.points)
        for clip in self.clips():
            out += [f"**{clip}**", "",
                    "| method | setting | bytes | bpp | PSNR (dB) | MS-SSIM | " + ("LPIPS | " if has_lpips else "")
                    + "bits/token context | bits/token static |",
                    "|---|---|---:|---:|---:|---:|" + ("---:|" if has_lpips else "") + "---:|---:|"]
            for p in sorted((p for p in self.points if p.clip == clip), key=lambda p: (p.method, p.bpp)):
                ms = f"{p.ms_ssim:.4f}" if p.ms_ssim is not None else "–"
                ctx = f"{p.bits_per_token:.3f}" if p.bits_per_token is not None else ""
                sta = f"{p.bits_per_token_static:.3f}" if p.bits_per_token_static is not None else ""
                lp = ((f"{p.lpips:.4f}" if p.lpips is not None else "–") + " | ") if has_lpips else ""
                out.append(f"| {p.method} | {p.setting} | {p.bytes} | {p.bpp:.4f} | {p.psnr:.2f} | {ms} | {lp}{ctx} | {sta} |")
            out.append("")
        comp = self.comparisons
        if comp:
            codecs = sorted({cc.codec for c in comp for cc in c.codecs})
            out += ["At vistok's rates (codec values interpolated in log-rate between CRFs; – outside the codec's range):",
                    "above / below: vistok better / not better than the codec at its rate; dominates: below the codec's "
                    "lowest rate and better than that point.", "",
                    "| clip | vistok | bpp | PSNR | MS-SSIM | " + " | ".join(f"{c} PSNR | {c} MS-SSIM" for c in codecs) + " |",
                    "|---|---|---:|---:|---:|" + "---:|---:|" * len(codecs)]
            fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
            for c in comp:
                by_codec = {cc.codec: cc for cc in c.codecs}
                cells = []
                for k in codecs:
                    cc = by_codec.get(k)
                    cells.append("– | –" if cc is None else
                                 f"{fmt(cc.psnr_at_rate, '.2f')}{_tag(cc.psnr_verdict)} | "
                                 f"{fmt(cc.ms_ssim_at_rate, '.4f')}{_tag(cc.ms_ssim_verdict)}")
                v = c.point
                out.append(f"| {v.clip} | {v.method} {v.setting} | {v.bpp:.4f} | {v.psnr:.2f} | "
                           f"{fmt(v.ms_ssim, '.4f')} | " + " | ".join(cells) + " |")
            out += ["", "Summary (clips where vistok is better at equal rate / clips judged):", ""]
            out += [f"- {line}" for line in self.summary()]
            out.append("")
        out += [f"- {n}" for n in self.notes]
        return "\n".join(out)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``rd.csv``, ``rd.json``, ``rd.md`` and ``rd.png`` in ``out_dir``."""
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        rows = [asdict(p) for p in self.points]
        comp = [c.as_dict() for c in self.comparisons]
        with open(d / "rd.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (d / "rd.json").write_text(
            json.dumps({"points": rows, "comparisons": comp, "summary": self.summary(), "notes": self.notes}, indent=2)
            + "\n"
        )
        (d / "rd.md").write_text(self.markdown() + "\n")
        plot(self, d / "rd.png")
        files = {"csv": d / "rd.csv", "json": d / "rd.json", "md": d / "rd.md", "png": d / "rd.png"}
        if self.previews:
            files["previews"] = plot_previews(self, d / "previews.png")
        return files


def plot_previews(result: RDResult, path: str | Path) -> Path:
    """The middle frame of each clip: the original, then every method at its lowest rate (the
    region this comparison is about), titled with its rate and quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = result.clips() or list(dict.fromkeys(k[0] for k in result.previews))
    methods = list(dict.fromkeys(p.method for p in result.points))
    fig, axes = plt.subplots(len(clips), 1 + len(methods), figsize=(2.6 * (1 + len(methods)), 2.9 * len(clips)),
                             squeeze=False)
    for row, clip in enumerate(clips):
        cells = [("original", result.previews.get((clip, "original", "")))]
        for method in methods:
            pts = [p for p in result.points if p.clip == clip and p.method == method]
            low = min(pts, key=lambda p: p.bpp) if pts else None
            frame = result.previews.get((clip, method, low.setting)) if low else None
            ms = f", MS-SSIM {low.ms_ssim:.3f}" if low is not None and low.ms_ssim is not None else ""
            label = f"{method} {low.setting}\n{low.bpp:.4f} bpp, {low.psnr:.1f} dB{ms}" if low else method
            cells.append((label, frame))
        for col, (label, frame) in enumerate(cells):
            ax = axes[row][col]
            ax.axis("off")
            if frame is not None:
                ax.imshow(frame, interpolation="nearest")
            ax.set_title((clip + "\n" if col == 0 else "") + label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _tag(verdict_: str | None) -> str:
    return f" ({verdict_})" if verdict_ else ""


def plot(result: RDResult, path: str | Path) -> Path:
    """Bits per pixel (log scale) against PSNR and MS-SSIM, one row of panels per clip."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    clips = result.clips()
    metrics = ("psnr", "ms_ssim") + (("lpips",) if any(p.lpips is not None for p in result.points) else ())
    fig, axes = plt.subplots(len(clips), len(metrics), figsize=(5.5 * len(metrics), 4 * len(clips)), squeeze=False)
    for row, clip in enumerate(clips):
        pts = [p for p in result.points if p.clip == clip]
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            for method in sorted({p.method for p in pts}):
                mp = sorted((p for p in pts if p.method == method and getattr(p, metric) is not None), key=lambda p: p.bpp)
                if mp:
                    ax.plot([p.bpp for p in mp], [getattr(p, metric) for p in mp], marker="o", label=method)
            ax.set_xscale("log")
            ax.set_xlabel("bits per pixel")
            ax.set_ylabel({"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "lpips": "LPIPS (lower is better)"}[metric])
            ax.set_title(clip, fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            else:  # e.g. MS-SSIM on frames too small for it
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def run_rd(
    models: Sequence[tuple[str, Tokenizer]],
    clips: Sequence[Clip],
    *,
    drops: Sequence[int] = DEFAULT_DROPS,
    codecs: Sequence[str] = ("x264", "x265"),
    crfs: Sequence[int] = DEFAULT_CRFS,
    preset: str = "medium",
    pix_fmt: str = "yuv420p",
    chunk_frames: int | None = None,
    lpips=None,
    progress=None,
) -> RDResult:
    """Every model (``(name, tokenizer)``) and codec on every clip; ``lpips``: an
    :class:`~vistok.metrics.LPIPS` network to score LPIPS too."""
    if not models and not codecs:
        raise VistokError("nothing to compare: give at least one model or codec")
    notes = []
    missing = [c for c in codecs if not available(c)]
    if missing:
        notes.append(f"skipped {missing}: this PyAV build lacks their encoders")
    points: list[RDPoint] = []
    previews: dict = {}
    for clip in clips:
        previews[(clip.name, "original", "")] = clip.frames[len(clip.frames) // 2]
        notes += [f"{clip.name}: {n}" for n in clip.notes]
        if lpips is not None and min(clip.frames.shape[1:3]) < 16:
            notes.append(f"{clip.name}: too small for LPIPS (needs 16 px)")
        if min(clip.frames.shape[1:3]) < MS_SSIM_MIN_SIDE:
            notes.append(f"{clip.name}: too small for MS-SSIM (needs {MS_SSIM_MIN_SIDE} px)")
        elif min(clip.frames.shape[1:3]) < 11 * 2**4:
            side = min(clip.frames.shape[1:3])
            scales = 0
            while side >= 11 and scales < 5:
                scales, side = scales + 1, side // 2
            notes.append(f"{clip.name}: MS-SSIM on {scales} scales (frames below 176 px; weights renormalized)")
        for name, tok in models:
            if progress:
                progress(f"{clip.name}: vistok {name}")
            points += vistok_points(tok, clip, name=name, drops=drops, chunk_frames=chunk_frames, lpips=lpips,
                                    previews=previews)
        for codec in codecs:
            if codec not in CODECS:
                raise VistokError(f"unknown codec {codec!r}; choose from {sorted(CODECS)}")
            if codec in missing:
                continue
            if progress:
                progress(f"{clip.name}: {codec}")
            try:
                points += baseline_points(clip, codec, crfs, preset=preset, pix_fmt=pix_fmt, lpips=lpips,
                                          previews=previews)
            except VistokError as e:  # e.g. x265 refuses frames below its minimum size
                notes.append(f"{clip.name}: {codec} skipped: {e}")
    return RDResult(points, notes, previews)
