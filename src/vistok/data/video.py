"""Read and write video files with PyAV (no system ffmpeg needed; the wheel bundles its own).

Frames leave and enter this module as uint8 arrays laid out ``t h w 3`` (RGB). Conversion to the
library's ``c t h w`` float layout lives in :mod:`vistok.data.transforms`.

Reading a clip never decodes the whole file when only a part is needed: decoding stops after the
last requested frame, and a clip that starts later in the file is reached by seeking to the
keyframe before it (then decoding forward to the exact frame).
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from collections.abc import Iterator
from typing import BinaryIO, Union

import av
import numpy as np

from vistok.atomic import WRITE_FAILURES, atomic_output
from vistok.errors import VistokError
from vistok.limits import MAX_FPS

#: Suffixes treated as videos when scanning folders. GIF is listed here rather than with the images:
#: an animated GIF is a clip, and PyAV decodes it like any other video.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp", ".ogv", ".gif"}
)

#: What ``read_video``/``probe_video`` accept: a path, the encoded bytes, or an open binary file.
VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# Containers write_video produces with H.264, by suffix -> ffmpeg muxer name.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

# Formats whose timestamps cannot be mapped to frame indices at a constant rate, so a clip is found by
# counting decoded frames from the start. GIF stores a duration per frame and merges repeats.
_SEQUENTIAL_FORMATS = frozenset({"gif"})


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` learns from a container without decoding pictures.

    ``frames_from``: where ``frames`` came from -- ``"header"`` (the container's frame count) or
    ``"packets"`` (counted by demuxing, used when the header has no count, e.g. MPEG-TS, WebM, GIF).
    ``rotation``: the quarter turn (degrees counter-clockwise: 0, 90, 180, 270) that the file's
    display matrix asks for, as phones record portrait video; ``width`` and ``height`` are the
    picture *as displayed*, which is what :func:`read_video` returns.
    """

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    frames_from: str
    rotation: int = 0

    @property
    def duration(self) -> float:
        """Seconds, from the frame count and rate."""
        return self.frames / self.fps if self.fps > 0 else 0.0


def _name(source: VideoSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", "<bytes>") if not isinstance(source, (bytes, bytearray, memoryview)) else "<bytes>"


def _open(source: VideoSource) -> av.container.InputContainer:
    """Open for reading; bytes are wrapped in memory (shards decode without temporary files)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, os.PathLike):
        source = os.fspath(source)
    elif hasattr(source, "seek"):
        source.seek(0)  # a file object may have been read before (e.g. by a previous probe)
    try:
        return av.open(source, mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VistokError(f"cannot open {_name(source)!s} as a video: {e}") from e


def _video_stream(container, name: str):
    if not container.streams.video:
        raise VistokError(f"{name} has no video stream; expected a video file (mp4, mkv, webm, gif, ...)")
    return container.streams.video[0]


def _rate(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None


def probe_video(source: VideoSource) -> VideoInfo:
    """Frame count, frame rate and displayed size of the first video stream, decoding one picture
    at most (for its display rotation).

    The frame count comes from the container header when it has one (MP4/MOV sample tables). When it
    does not, packets are counted by demuxing, which reads the file but decodes nothing: one packet
    per frame holds for every video codec we target. Raises ``VistokError`` for an unreadable file,
    one without a video stream, or one with no frames.
    """
    name = _name(source)
    with _open(source) as container:
        stream = _video_stream(container, name)
        cc = stream.codec_context
        if not cc.width or not cc.height:
            raise VistokError(f"{name}: video stream has no picture size; the file is damaged")
        frames, frames_from = int(stream.frames or 0), "header"
        if frames <= 0:
            frames_from = "packets"
            try:
                frames = sum(1 for p in container.demux(stream) if p.size > 0)
            except (av.FFmpegError, OSError) as e:
                raise VistokError(f"{name}: cannot read packets: {e}") from e
        if frames <= 0:
            raise VistokError(f"{name}: video stream has no frames")
        rate, codec, width, height = _rate(stream), cc.name, int(cc.width), int(cc.height)
    rotation = _display_rotation(source)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        frames=frames,
        fps=float(rate) if rate else 0.0,
        width=width,
        height=height,
        codec=codec,
        frames_from=frames_from,
        rotation=rotation,
    )


def _quarter_turns(frame: av.VideoFrame) -> int:
    """The display rotation of a decoded picture in quarter turns counter-clockwise (0-3)."""
    try:
        degrees = frame.rotation
    except Exception:  # side data PyAV cannot parse: show the picture as stored
        return 0
    return int(round((degrees or 0) / 90.0)) % 4


def _display_rotation(source: VideoSource) -> int:
    """The rotation (0, 90, 180, 270) of the first picture, read by decoding it: the display matrix
    reaches PyAV as side data of decoded frames. 0 when nothing decodes (reading reports that)."""
    try:
        with _open(source) as container:
            for frame in container.decode(_video_stream(container, _name(source))):
                return 90 * _quarter_turns(frame)
    except (VistokError, av.FFmpegError, OSError):
        pass
    return 0


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """One decoded picture as ``h w 3`` uint8, as displayed. Grey sources are expanded by the RGB
    conversion; sources with alpha are composited on white, the same rule ``read_image`` applies, so
    an image and a video of the same content give the same pixels; a display rotation is applied."""
    if any(c.is_alpha for c in frame.format.components):
        rgba = frame.to_ndarray(format="rgba").astype(np.uint16)
        a = rgba[..., 3:]
        # Integer compositing: out = (rgb * a + 255 * (255 - a)) / 255, rounded.
        rgb = ((rgba[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    else:
        rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    # A display matrix (a phone's portrait video) is applied, as players do: np.rot90 turns
    # counter-clockwise, the sense of the matrix's angle.
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class _SeekMissed(Exception):
    """Seeking landed after the wanted frame (bad index or timestamps); retry by counting frames."""


def _decode(container, stream, start: int, num_frames: int | None, stride: int, seek: bool) -> list[np.ndarray]:
    rate = _rate(stream)
    t0 = stream.start_time or 0
    tb = stream.time_base
    by_pts = seek and start > 0 and rate is not None and tb is not None
    if by_pts:
        # Seek to the presentation time of frame `start`; the demuxer lands on the keyframe at or
        # before it (backward=True), and we decode forward from there.
        target = t0 + int(math.floor(Fraction(start) / rate / tb))
        container.seek(target, stream=stream, backward=True, any_frame=False)
    out: list[np.ndarray] = []
    wanted = start  # index of the next frame to keep
    count = 0  # frames decoded so far (the index when not using timestamps)
    for frame in container.decode(stream):
        if by_pts:
            if frame.pts is None:
                raise _SeekMissed
            index = round((frame.pts - t0) * tb * rate)
            if count == 0 and index > start:
                raise _SeekMissed
        else:
            index = count
        count += 1
        # `>=` rather than `==`: a timestamp gap (dropped frame) must not make us skip past a clip.
        if index >= wanted:
            out.append(_to_rgb(frame))
            wanted += stride
            if num_frames is not None and len(out) == num_frames:
                break  # stop early: the rest of the file is never decoded
    return out


def read_video(
    source: VideoSource,
    *,
    start: int = 0,
    num_frames: int | None = None,
    stride: int = 1,
    seek: bool = True,
) -> np.ndarray:
    """Decode frames ``start, start + stride, ...`` of the first video stream.

    Returns ``t h w 3`` uint8 RGB with ``t = num_frames`` (or every remaining frame when
    ``num_frames`` is None). Frame indices count pictures in presentation order; when seeking, they are
    derived from timestamps at the stream's average rate, which is exact for constant-frame-rate video
    (what cameras and encoders write). If the timestamps do not line up (the first frame after a seek is
    already past ``start``), the clip is decoded again by counting frames from the start; pass
    ``seek=False`` to always count (variable-frame-rate sources). Raises ``VistokError`` when the file
    cannot be decoded or ends before the requested frames.
    """
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise VistokError(f"expected start >= 0, stride >= 1, num_frames >= 1; got {start=}, {stride=}, {num_frames=}")
    name = _name(source)
    frames: list[np.ndarray] | None = None
    for attempt_seek in ((True, False) if seek else (False,)):
        with _open(source) as container:
            stream = _video_stream(container, name)
            use_seek = attempt_seek and container.format.name not in _SEQUENTIAL_FORMATS
            try:
                frames = _decode(container, stream, start, num_frames, stride, use_seek)
                break
            except _SeekMissed:
                continue
            except (av.FFmpegError, OSError) as e:
                raise VistokError(f"{name}: decoding failed: {e}") from e
    if not frames:
        raise VistokError(f"{name}: no decodable frames at or after frame {start}")
    if num_frames is not None and len(frames) < num_frames:
        raise VistokError(
            f"{name}: expected {num_frames} frames from frame {start} with stride {stride}, "
            f"but the video ended after {len(frames)}"
        )
    return np.stack(frames)


def iter_video_frames(source: VideoSource, *, num_frames: int | None = None, strict: bool = True) -> Iterator[np.ndarray]:
    """The first ``num_frames`` frames (all when None) of the first video stream, one ``h w 3``
    uint8 picture at a time, decoded in one pass with one open file: what streaming work over a
    long video reads (``read_video`` per chunk would open and seek once per chunk). Frames are
    counted in decoding order, as ``read_video(seek=False)`` counts them. Raises ``VistokError``
    when the file cannot be decoded or (``strict``) ends before ``num_frames``; with
    ``strict=False`` a file shorter than its header says just ends the iteration."""
    if num_frames is not None and num_frames < 1:
        raise VistokError(f"expected num_frames >= 1; got {num_frames}")
    name = _name(source)
    done = 0
    with _open(source) as container:
        stream = _video_stream(container, name)
        try:
            for frame in container.decode(stream):
                picture = _to_rgb(frame)
                done += 1
                yield picture
                if num_frames is not None and done == num_frames:
                    return
        except (av.FFmpegError, OSError) as e:
            raise VistokError(f"{name}: decoding failed after {done} frames: {e}") from e
    if done == 0:
        raise VistokError(f"{name}: no decodable frames")
    if strict and num_frames is not None and done < num_frames:
        raise VistokError(f"{name}: expected {num_frames} frames, but the video ended after {done}")


def _as_frames(frames) -> np.ndarray:
    """Accept ``t h w 3``, ``t h w 1`` or ``t h w`` uint8 (numpy or torch); return ``t h w 3``."""
    if hasattr(frames, "detach"):  # torch tensor, without importing torch here
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise VistokError(
            f"expected uint8 frames laid out (t h w 3); got dtype {frames.dtype}. "
            "Convert a [-1, 1] float clip with vistok.data.transforms.to_uint8 first"
        )
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.shape[0] < 1:
        raise VistokError(f"expected frames laid out (t h w 3) with t >= 1; got shape {tuple(frames.shape)}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return np.ascontiguousarray(frames)


def _even(frames: np.ndarray, odd_size: str) -> np.ndarray:
    """yuv420p stores chroma at half resolution, so x264 needs even width and height."""
    t, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    if odd_size == "pad":
        # Repeat the last row/column: no picture content is lost, and the added line looks like its
        # neighbour so it costs few bits. A reader crops with [:, :h, :w] to get the original size.
        return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    if odd_size == "crop":
        if h < 2 or w < 2:
            raise VistokError(f"cannot crop a {h}x{w} video to even size; use odd_size='pad'")
        return frames[:, : h - h % 2, : w - w % 2]
    raise VistokError(f"odd_size must be 'pad' or 'crop'; got {odd_size!r}")


def write_video(
    path: str | os.PathLike,
    frames,
    *,
    fps: float = 25.0,
    crf: int = 18,
    preset: str = "medium",
    odd_size: str = "pad",
) -> Path:
    """Write ``t h w 3`` uint8 frames (``t h w`` grey is expanded) to ``path``; returns the path.

    The suffix picks the format:

    * ``.mp4``/``.mkv``/``.mov``: H.264 (PyAV's bundled libx264), yuv420p so every player can show it.
      ``crf`` sets quality (0 lossless in luma, 18 visually near-lossless, 23 x264's default).
      yuv420p needs even sizes: ``odd_size="pad"`` (default) repeats the last row/column, so the
      file is up to one pixel larger than the frames; ``"crop"`` drops it instead.
      MP4s get ``faststart`` (index at the front), so they stream and open quickly from shards.
    * ``.gif``: pillow, 256-colour palette per frame, frame duration rounded to 10 ms. GIF merges
      identical consecutive frames into one longer frame, so a static clip reads back shorter.

    To write frames as they are produced, without holding the clip, use :class:`VideoWriter`.
    """
    with VideoWriter(path, fps=fps, crf=crf, preset=preset, odd_size=odd_size) as writer:
        writer.write(frames)
    return Path(path)


class VideoWriter:
    """``with VideoWriter(path, fps=...) as w: w.write(frames); ...`` -- frames encoded as they
    arrive, so memory holds one batch, not the clip (a GIF, a format for short clips, is kept until
    the end). Same formats and options as :func:`write_video`. The file appears under ``path`` only
    when the block ends without an error (a temporary beside it is renamed); on an error, a full
    disk or a kill, nothing is left under the name."""

    def __init__(self, path: str | os.PathLike, *, fps: float = 25.0, crf: int = 18, preset: str = "medium",
                 odd_size: str = "pad"):
        self.path = Path(path)
        if not (0 < fps <= MAX_FPS):
            raise VistokError(f"fps must be above 0 and at most {MAX_FPS}; got {fps!r}")
        suffix = self.path.suffix.lower()
        if suffix != ".gif" and suffix not in _MUXERS:
            raise VistokError(f"cannot write {self.path.name}: expected a .mp4, .mkv, .mov, .m4v or .gif path")
        if odd_size not in ("pad", "crop"):
            raise VistokError(f"odd_size must be 'pad' or 'crop'; got {odd_size!r}")
        self.fps, self.crf, self.preset, self.odd_size = fps, crf, preset, odd_size
        self.frames_written = 0
        self._gif: list[np.ndarray] | None = [] if suffix == ".gif" else None
        self._container = self._stream = None
        self._size: tuple[int, int] | None = None
        self._atomic = self._tmp = None

    def __enter__(self) -> "VideoWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._atomic = atomic_output(self.path)  # a failure (full disk, kill) never leaves a broken file
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, frames) -> None:
        """Append ``t h w 3`` (or ``t h w`` grey) uint8 frames, all of the first frame's size."""
        if self._tmp is None:
            raise RuntimeError("VideoWriter.write outside its with-block")
        frames = _as_frames(frames)
        size = frames.shape[1:3]
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise VistokError(f"{self.path}: all frames must be {self._size[0]}x{self._size[1]}; got {size[0]}x{size[1]}")
        if self._gif is not None:
            self._gif.extend(frames)
        else:
            self._encode(_even(frames, self.odd_size))
        self.frames_written += len(frames)

    def _encode(self, frames: np.ndarray | None) -> None:
        try:
            if self._container is None and frames is not None:
                options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
                # The muxer is named explicitly: the temporary's name is not what ffmpeg should guess from.
                self._container = av.open(str(self._tmp), mode="w", format=_MUXERS[self.path.suffix.lower()],
                                          options=options)
                # 1001 as the largest denominator represents the NTSC rates (30000/1001) exactly.
                rate = Fraction(self.fps).limit_denominator(1001)
                self._stream = self._container.add_stream(
                    "libx264", rate=rate, options={"crf": str(int(self.crf)), "preset": self.preset})
                self._stream.width, self._stream.height = frames.shape[2], frames.shape[1]
                self._stream.pix_fmt = "yuv420p"
            if frames is None:  # flush the encoder's delayed frames
                for packet in self._stream.encode():
                    self._container.mux(packet)
                return
            for array in frames:
                for packet in self._stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                    self._container.mux(packet)
        except av.FFmpegError as e:
            if isinstance(e, OSError) and e.errno in WRITE_FAILURES:
                raise  # atomic_output names the final file
            raise VistokError(f"writing {self.path} failed: {e}") from e

    def __exit__(self, exc_type, exc, tb) -> bool:
        atomic, self._atomic = self._atomic, None
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            self._discard()
            if not atomic.__exit__(*sys.exc_info()):  # removes the temporary; a full disk becomes one line
                raise
            return False
        if exc_type is not None:
            self._discard()
            return bool(atomic.__exit__(exc_type, exc, tb))
        self._tmp = None
        atomic.__exit__(None, None, None)  # renames the temporary into place
        return False

    def _finish(self) -> None:
        if self.frames_written == 0:
            raise VistokError(f"{self.path}: no frames to write")
        if self._gif is not None:
            _write_gif(self._tmp, np.stack(self._gif), self.fps)
            return
        self._encode(None)
        container, self._container = self._container, None
        try:
            container.close()
        except av.FFmpegError as e:
            if isinstance(e, OSError) and e.errno in WRITE_FAILURES:
                raise
            raise VistokError(f"writing {self.path} failed: {e}") from e

    def _discard(self) -> None:
        self._tmp = None
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # closing a half-written file on the way out of an error
                pass


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    # GIF stores delays in centiseconds; pillow takes milliseconds and rounds down to 10 ms.
    duration = max(10, int(round(100.0 / fps)) * 10)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
