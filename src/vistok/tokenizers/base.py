"""The interface every tokenizer implements, and what they share: input checks, streaming,
``save_pretrained`` / ``from_pretrained`` (:mod:`vistok.pretrained`: ``config.json`` +
``model.safetensors``, never pickle), the registry of tokenizer families and the model identity.

Three API levels (as CompressAI keeps them apart):

1. ``forward(video) -> TokenizerOutput`` -- reconstruction and losses, for training;
2. ``encode(video) -> indices``, ``decode_indices(indices) -> video``, ``indices_to_codes`` -- tokens;
3. the codec (``vistok.codec``) -- bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vistok.configuration import to_dict
from vistok.errors import VistokError
from vistok.nn.causal_conv import streaming
from vistok.pretrained import CONFIG_NAME, ModelRegistry, Pretrained
from vistok.quantizers.base import Quantizer, QuantizerOutput
from vistok.quantizers.config import TRAINING_ONLY_FIELDS
from vistok.tokenizers.shipped import resolve_model_dir

# Pixels may overshoot [-1, 1] a little after resampling filters; beyond this they are surely
# in another range (e.g. [0, 255]) and the tokenizer would silently produce garbage.
RANGE_TOLERANCE = 0.05

#: Tokenizer classes by ``model_type`` (``config.json``); families register with ``@TOKENIZERS.register``.
TOKENIZERS: ModelRegistry["Tokenizer"] = ModelRegistry("tokenizer model_type")

# Config fields that never change the function a trained tokenizer computes: the clip size a
# preset was designed for (informational) and, inside ``quantizer``, the training objective's
# settings. A model's identity (:meth:`Tokenizer.model_id`) leaves them out.
INFORMATIONAL_FIELDS = ("frames", "image_size")


@dataclass
class TokenizerOutput:
    """What ``Tokenizer.forward`` returns, in training and evaluation alike.

    Attributes:
        x_hat: ``(b c t h w)`` reconstruction.
        indices: ``(b t' h' w')`` int64 tokens (``None`` for a continuous bottleneck).
        codes: ``(b d t' h' w')`` quantized latents (straight-through gradients).
        latents: ``(b d t' h' w')`` encoder output before quantization.
        quantizer: the quantizer's full output (losses and statistics).
    """

    x_hat: Tensor
    indices: Tensor | None
    codes: Tensor
    latents: Tensor
    quantizer: QuantizerOutput

    @property
    def loss(self) -> Tensor:
        """The quantizer's weighted auxiliary loss (add the reconstruction terms to it)."""
        return self.quantizer.loss


class Tokenizer(Pretrained, nn.Module):
    """Base class. Subclasses define ``model_type``, ``config_class`` (a :class:`Config` with a
    ``quantizer`` section), build ``self.encoder``, ``self.quantizer`` and ``self.decoder``,
    implement ``encode_latents`` and ``decode``, and register with ``@TOKENIZERS.register(...)``.
    Encoder and decoder stream independently, so an encode stream can feed a decode stream."""

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    saved_what: ClassVar[str] = "tokenizer"
    # True when some batches leave parameters without gradients (read by the trainer's DDP wrap).
    ddp_find_unused_parameters: ClassVar[bool] = False
    encoder: nn.Module
    quantizer: Quantizer
    decoder: nn.Module

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # -- properties -------------------------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def temporal_compression(self) -> int:
        raise NotImplementedError

    @property
    def spatial_compression(self) -> int:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int | None:
        """Number of distinct tokens (``None`` for a continuous bottleneck)."""
        return self.quantizer.codebook_size

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Token grid ``(t', h', w')`` of a ``frames x height x width`` clip."""
        tc, sc = self.temporal_compression, self.spatial_compression
        return (1 + (frames - 1) // tc, height // sc, width // sc)

    # -- checks -----------------------------------------------------------------------------------

    def check_video(self, video: Tensor, *, first_chunk: bool = True) -> None:
        """Raise :class:`VistokError` unless ``video`` is ``(b, c, 1 + T k, h, w)`` floats in [-1, 1]."""
        tc, sc, c = self.temporal_compression, self.spatial_compression, self.in_channels
        frames = "1 + %dk" % tc if first_chunk else "%dk (k >= 1, a later streamed chunk)" % tc
        expected = f"expected video of shape (b, {c}, {frames}, h, w) with h and w divisible by {sc}"
        if not isinstance(video, Tensor):
            raise VistokError(f"{expected}; got {type(video).__name__}")
        if video.ndim != 5:
            hint = " (an image is a 1-frame video: use image.unsqueeze(2))" if video.ndim == 4 else ""
            raise VistokError(f"{expected}; got a {video.ndim}-d tensor of shape {tuple(video.shape)}{hint}")
        b, ch, t, h, w = video.shape
        if ch != c:
            raise VistokError(f"{expected}; got {ch} channels (shape {tuple(video.shape)})")
        if not video.is_floating_point():
            raise VistokError(f"{expected}, floating point in [-1, 1]; got dtype {video.dtype}")
        if b == 0 or h == 0 or w == 0:
            raise VistokError(f"{expected}; got an empty tensor {tuple(video.shape)}")
        ok_t = (t >= 1 and (t - 1) % tc == 0) if first_chunk else (t >= tc and t % tc == 0)
        if not ok_t:
            raise VistokError(f"{expected}; got {t} frames (trim or pad the clip)")
        if h % sc or w % sc:
            raise VistokError(f"{expected}; got {h}x{w} (crop or pad to a multiple of {sc})")
        if video.is_meta:  # shapes only (memory planning, see vistok.pipelines.budget): no values to check
            return
        if not torch.isfinite(video).all():
            raise VistokError("video contains NaN or infinite values")
        lo, hi = float(video.min()), float(video.max())
        if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise VistokError(
                f"video values must lie in [-1, 1]; got [{lo:.3g}, {hi:.3g}] (uint8 pixels p map to p / 127.5 - 1)"
            )

    def check_indices(self, indices: Tensor, *, first_chunk: bool = True) -> None:
        if self.vocab_size is None:
            raise VistokError(f"{type(self).__name__} has a continuous bottleneck and no indices")
        if not isinstance(indices, Tensor) or indices.ndim != 4:
            shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
            raise VistokError(f"expected indices of shape (b, t', h', w'); got {shape}")
        self.quantizer.check_indices(indices)

    # -- model ------------------------------------------------------------------------------------

    def encode_latents(self, video: Tensor) -> Tensor:
        """``(b c t h w) -> (b d t' h' w')`` continuous latents (no input checks)."""
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:
        """``(b d t' h' w')`` codes -> ``(b c t h w)`` pixels (unclamped)."""
        raise NotImplementedError

    def forward(self, video: Tensor) -> TokenizerOutput:
        """``video (b c t h w)`` -> reconstruction, tokens and quantizer losses."""
        self.check_video(video)
        latents = self.encode_latents(video)
        q = self.quantizer(latents)
        return TokenizerOutput(x_hat=self.decode(q.codes), indices=q.indices, codes=q.codes, latents=latents, quantizer=q)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """``video (b c t h w)`` in [-1, 1] -> ``indices (b t' h' w')`` int64."""
        self.check_video(video)
        if self.vocab_size is None:
            raise VistokError(f"{type(self).__name__} has a continuous bottleneck; use encode_codes")
        return self.quantizer.quantize(self.encode_latents(video))[1]

    @torch.no_grad()
    def encode_codes(self, video: Tensor) -> Tensor:
        """``video (b c t h w)`` -> quantized ``codes (b d t' h' w')``."""
        self.check_video(video)
        return self.quantizer.quantize(self.encode_latents(video))[0]

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """``(b t' h' w')`` int64 -> ``(b d t' h' w')`` codes."""
        self.check_indices(indices)
        return self.quantizer.indices_to_codes(indices)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """``indices (b t' h' w')`` -> ``video (b c t h w)``, ``t = 1 + T (t' - 1)``."""
        codes = self.indices_to_codes(indices).to(next(self.parameters()).dtype)
        return self.decode(codes)

    # -- streaming --------------------------------------------------------------------------------

    def encode_stream(self, chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """Tokenize a long clip chunk by chunk, exactly as if it were encoded whole.

        ``chunks``: ``(b c t h w)`` pieces of one clip, the first with ``1 + T k`` frames and each
        later one with a multiple of ``T`` frames (see :func:`split_clip`). Yields ``(b t' h' w')``
        indices per chunk; memory is bounded by the chunk size. Causal convolutions carry their
        last frames across chunks.
        """
        if self.vocab_size is None:
            raise VistokError(f"{type(self).__name__} has a continuous bottleneck and no tokens; use encode_codes_stream")
        return self._encode_stream(chunks, want_indices=True)

    def encode_codes_stream(self, chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """As :meth:`encode_stream`, but yields the quantized ``codes (b d t' h' w')`` of each chunk
        (the only output of a continuous bottleneck such as KL)."""
        return self._encode_stream(chunks, want_indices=False)

    def _encode_stream(self, chunks: Iterable[Tensor], *, want_indices: bool) -> Iterator[Tensor]:
        with torch.no_grad(), streaming(self.encoder):
            for i, chunk in enumerate(chunks):
                self.check_video(chunk, first_chunk=i == 0)
                codes, indices = self.quantizer.quantize(self.encode_latents(chunk))[:2]
                yield indices if want_indices else codes

    def decode_stream(self, index_chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """Decode ``(b t' h' w')`` index chunks of one clip; yields ``(b c t h w)`` pixel chunks
        equal to the matching frames of decoding the whole clip at once."""
        return self.decode_codes_stream(self.indices_to_codes(indices) for indices in index_chunks)

    def decode_codes_stream(self, code_chunks: Iterable[Tensor]) -> Iterator[Tensor]:
        """Decode ``(b d t' h' w')`` code chunks of one clip (as :meth:`decode_stream`)."""
        dtype = next(self.parameters()).dtype
        with torch.no_grad(), streaming(self.decoder):
            for codes in code_chunks:
                yield self.decode(codes.to(dtype))

    # -- persistence (save_pretrained / from_pretrained come from Pretrained) -------------------------

    def extra_metadata(self, weight_dtype: torch.dtype | None) -> dict:
        return {"model_id": self.model_id(weight_dtype=weight_dtype)}

    @classmethod
    def resolve_dir(cls, path_or_name: str | Path) -> Path:
        return resolve_model_dir(path_or_name)

    @classmethod
    def class_for(cls, meta: dict, config: Any, source: Path) -> type:
        found = TOKENIZERS.get(meta["model_type"], where=str(source / CONFIG_NAME))
        if not issubclass(found, cls):
            raise VistokError(f"{source} holds a {meta['model_type']!r} tokenizer, not a {cls.model_type!r} one")
        return found

    @classmethod
    def config_from_meta(cls, meta: dict, source: Path) -> Any:
        found = TOKENIZERS.get(meta["model_type"], where=str(source / CONFIG_NAME))
        try:
            return found.config_class.from_dict(meta["config"])
        except VistokError as e:
            raise VistokError(f"{source / CONFIG_NAME}: {e}") from None

    def identity_config(self) -> dict:
        """The config as far as it decides the function the network computes (see
        :data:`INFORMATIONAL_FIELDS` and :data:`vistok.quantizers.config.TRAINING_ONLY_FIELDS`)."""
        cfg = {k: v for k, v in to_dict(self.config).items() if k not in INFORMATIONAL_FIELDS}
        if isinstance(cfg.get("quantizer"), dict):
            cfg["quantizer"] = {k: v for k, v in cfg["quantizer"].items() if k not in TRAINING_ONLY_FIELDS}
        return cfg

    def model_id(self, *, weight_dtype: torch.dtype | None = None) -> str:
        """Hex SHA-256 of the identity config and every weight (as float32): the identity a token or
        compressed file records. ``weight_dtype``: the id the weights will have once rounded to
        that dtype."""
        meta = {"model_type": self.model_type, "config": self.identity_config()}
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            v = v.detach().cpu()
            if weight_dtype is not None and v.is_floating_point():
                v = v.to(weight_dtype)
            h.update(k.encode())
            h.update(v.contiguous().float().numpy().tobytes())
        return h.hexdigest()


def split_clip(video: Tensor, chunk_frames: int, temporal_compression: int = 4) -> Iterator[Tensor]:
    """Cut ``(b c t h w)`` into streaming chunks: ``1 + chunk_frames`` frames, then ``chunk_frames``
    each (the last possibly shorter, still a multiple of ``temporal_compression``)."""
    if chunk_frames < temporal_compression or chunk_frames % temporal_compression:
        raise VistokError(f"chunk_frames must be a positive multiple of {temporal_compression}, got {chunk_frames}")
    t = video.shape[2]
    yield video[:, :, : 1 + chunk_frames]
    for start in range(1 + chunk_frames, t, chunk_frames):
        yield video[:, :, start : start + chunk_frames]


