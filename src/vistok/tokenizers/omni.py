"""OmniTokenizer (Wang et al., NeurIPS 2024): a spatial-temporal transformer tokenizer for images
and videos with one vocabulary.

Encoder (``b c t h w -> b D t' h' w'``)::

    patch embedding: frame 0 alone in 8x8 patches, later frames in 4x8x8 patches (1 + 4k -> 1 + k)
    -> N decoupled blocks [spatial window attention within a frame, causal attention across
       frames, MLP] -> LayerNorm -> linear to the bottleneck's channels

Decoder: linear from the codes, N mirrored blocks, LayerNorm, and linear "un-patchify" heads
(latent frame 0 -> 1 frame, later latent frames -> 4 frames each). Positions are rotary (axial in
space, 1D in time), so other resolutions and lengths than the training ones work.

Causality: patches never straddle latent frames and temporal attention is causal, so latent frame
``i`` depends only on frames ``<= 4 i`` and an image is a 1-frame video (its tokens are those of a
video's first frame). Encoder and decoder stream exactly (temporal attention keeps past keys and
values).

Bottleneck (``quantizer.kind``): ``"vq"`` (l2-normalized codebook, 8192 codes, as the paper), ``"kl"``
(Gaussian latent; no tokens) or ``"lfq"`` -- the quantizers of :mod:`vistok.quantizers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.nn.attention import SpaceTimeBlock
from vistok.nn.causal_conv import StreamingModule
from vistok.configuration import Config
from vistok.quantizers.config import QuantizerConfig, build_quantizer, upgrade_quantizer_keys
from vistok.tokenizers.base import TOKENIZERS, Tokenizer


@dataclass
class OmniConfig(Config):
    """Architecture and bottleneck. ``spatial_window``: side of the attention windows in latent
    tokens (0 = whole frame); ``encoder_windows`` / ``decoder_windows``: one window per block,
    overriding ``spatial_window`` (empty: ``spatial_window`` everywhere); ``temporal_window``:
    latent frames a frame attends to, itself included (0 = all past frames). Code
    channels: ``quantizer.code_dim`` (VQ codebook dimension, KL channels; LFQ uses ``quantizer.bits``)."""

    in_channels: int = 3
    patch_size: int = 8
    temporal_patch: int = 4
    dim: int = 512
    heads: int = 8
    encoder_depth: int = 8
    decoder_depth: int = 8
    mlp_ratio: float = 4.0
    spatial_window: int = 8
    encoder_windows: tuple[int, ...] = ()
    decoder_windows: tuple[int, ...] = ()
    temporal_window: int = 0
    # the bottleneck: VQ 8192 x 8 by default (the paper), or quantizer.kind "kl" / "lfq"
    quantizer: QuantizerConfig = field(default_factory=lambda: QuantizerConfig(kind="vq"))
    frames: int = 17
    image_size: int = 128

    def __post_init__(self):
        for name in ("in_channels", "patch_size", "temporal_patch", "dim", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise VistokError(f"{name} must be a positive integer, got {v!r}")
        if self.encoder_depth < 0 or self.decoder_depth < 0:
            raise VistokError("encoder_depth and decoder_depth must be >= 0")
        if self.dim % self.heads or (self.dim // self.heads) % 4:
            raise VistokError(f"dim {self.dim} / heads {self.heads} must give a head size divisible by 4")
        if self.spatial_window < 0 or self.temporal_window < 0:
            raise VistokError("spatial_window and temporal_window must be >= 0 (0: unlimited)")
        self.encoder_windows = tuple(int(v) for v in self.encoder_windows)
        self.decoder_windows = tuple(int(v) for v in self.decoder_windows)
        for name, depth in (("encoder", self.encoder_depth), ("decoder", self.decoder_depth)):
            windows = getattr(self, f"{name}_windows")
            if windows and (len(windows) != depth or min(windows) < 0):
                raise VistokError(
                    f"{name}_windows needs one window >= 0 per {name} block ({name}_depth = {depth}), got {list(windows)}"
                )

    family: ClassVar[str] = "OmniTokenizer"

    @staticmethod
    def upgrade_dict(data: dict) -> dict:
        """Older files spell the bottleneck flat (``bottleneck``, ``latent_dim``, ...). A quantizer
        section that names no ``kind`` means OmniTokenizer's default, VQ."""
        data = upgrade_quantizer_keys(data)
        if isinstance(data.get("quantizer"), dict) and "kind" not in data["quantizer"]:
            data["quantizer"] = {"kind": "vq", **data["quantizer"]}
        return data

    @classmethod
    def presets(cls) -> dict[str, dict]:
        return OMNI_PRESETS


OMNI_PRESETS: dict[str, dict] = {
    # Same token budget as MAGVIT-v2 "tiny" (17 x 64 x 64 -> 5 x 8 x 8) and about its 3.7 M
    # parameters; an 8 x 8 latent frame is one window.
    "omni-tiny": dict(dim=192, heads=4, mlp_ratio=3.5, encoder_depth=3, decoder_depth=3, spatial_window=8, frames=17, image_size=64),
    # The authors' released recipe (FoundationVision/OmniTokenizer, scripts/recons/train.sh): width
    # 512, 8 heads of 64, per side 4 spatial + 4 causal temporal attention layers, encoder spatial
    # layers "ttww" (two full, two 8 x 8 windows), decoder "tttt" (full), VQ 8192 x 8 l2-normalized,
    # commitment 1.0, 17 x 256 x 256. Here a block holds one spatial and one temporal attention, so
    # 4 blocks give the same attention layers; one MLP of ratio 8 per block stands for their two
    # feed-forwards of ratio 4 (same parameters, about 51 M). Untrained here (GPU work).
    "omni-paper": dict(
        dim=512, heads=8, encoder_depth=4, decoder_depth=4, mlp_ratio=8.0, spatial_window=8,
        encoder_windows=(0, 0, 8, 8), decoder_windows=(0, 0, 0, 0), quantizer=dict(commitment_weight=1.0), frames=17,
        image_size=256,
    ),
}


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _blocks(cfg: OmniConfig, depth: int, windows: tuple[int, ...]) -> nn.ModuleList:
    windows = windows or (cfg.spatial_window,) * depth
    return nn.ModuleList(
        SpaceTimeBlock(cfg.dim, cfg.heads, mlp_ratio=cfg.mlp_ratio, spatial_window=ws, temporal_window=cfg.temporal_window)
        for ws in windows
    )


class _FirstChunk(StreamingModule):
    """Tracks whether the next forward call starts a clip (whose first frame stands alone)."""

    def reset_stream(self, on: bool) -> None:
        self._stream_on, self._started = on, False

    def _first(self) -> bool:
        first = not (getattr(self, "_stream_on", False) and getattr(self, "_started", False))
        self._started = True
        return first


class OmniEncoder(_FirstChunk):
    def __init__(self, cfg: OmniConfig, out_channels: int):
        super().__init__()
        p, tp, c = cfg.patch_size, cfg.temporal_patch, cfg.in_channels
        self.p, self.tp = p, tp
        self.embed_first = nn.Linear(c * p * p, cfg.dim)
        self.embed_rest = nn.Linear(c * tp * p * p, cfg.dim)
        self.blocks = _blocks(cfg, cfg.encoder_depth, cfg.encoder_windows)
        self.norm = nn.LayerNorm(cfg.dim)
        self.to_latent = nn.Linear(cfg.dim, out_channels)

    def forward(self, video: Tensor) -> Tensor:
        """``(b c t h w) -> (b D t' h' w')``."""
        p, tp = self.p, self.tp
        parts = []
        rest = video
        if self._first():
            parts.append(self.embed_first(rearrange(video[:, :, :1], "b c t (h p) (w q) -> b t h w (c p q)", p=p, q=p)))
            rest = video[:, :, 1:]
        if rest.shape[2]:
            parts.append(self.embed_rest(rearrange(rest, "b c (t r) (h p) (w q) -> b t h w (c r p q)", r=tp, p=p, q=p)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for block in self.blocks:
            x = block(x)
        return rearrange(self.to_latent(self.norm(x)), "b t h w d -> b d t h w")


class OmniDecoder(_FirstChunk):
    def __init__(self, cfg: OmniConfig, code_channels: int):
        super().__init__()
        p, tp, c = cfg.patch_size, cfg.temporal_patch, cfg.in_channels
        self.p, self.tp, self.c = p, tp, c
        self.from_code = nn.Linear(code_channels, cfg.dim)
        self.blocks = _blocks(cfg, cfg.decoder_depth, cfg.decoder_windows)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head_first = nn.Linear(cfg.dim, c * p * p)
        self.head_rest = nn.Linear(cfg.dim, c * tp * p * p)

    def forward(self, codes: Tensor) -> Tensor:
        """``(b D t' h' w') -> (b c t h w)``, ``t = 1 + 4 (t' - 1)`` (``4 t'`` for later streamed chunks)."""
        p, tp = self.p, self.tp
        x = self.from_code(rearrange(codes, "b d t h w -> b t h w d"))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        parts = []
        if self._first():
            parts.append(rearrange(self.head_first(x[:, :1]), "b t h w (c p q) -> b c t (h p) (w q)", p=p, q=p))
            x = x[:, 1:]
        if x.shape[1]:
            parts.append(rearrange(self.head_rest(x), "b t h w (c r p q) -> b c (t r) (h p) (w q)", r=tp, p=p, q=p))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]


@TOKENIZERS.register("omni")
class OmniTokenizer(Tokenizer):
    """OmniTokenizer: ``video (b 3 t h w)`` in [-1, 1], ``t = 1 + 4k`` -> ``indices (b 1+k h/8 w/8)``.

    Example::

        tok = OmniTokenizer(OmniConfig.preset("omni-tiny"))
        indices = tok.encode(video)          # (b, 1 + k, h/8, w/8) int64 in [0, 8192)
        x_hat = tok.decode_indices(indices)  # (b, 3, 1 + 4k, h, w)
    """

    model_type = "omni"
    config_class = OmniConfig
    # Image batches (1 frame) use only the first-frame embedding and head, not the 4-frame ones.
    ddp_find_unused_parameters = True

    def __init__(self, config: OmniConfig | None = None):
        super().__init__(config or OmniConfig())
        cfg = self.config
        self.quantizer = build_quantizer(cfg.quantizer)
        self.encoder = OmniEncoder(cfg, self.quantizer.dim)
        self.decoder = OmniDecoder(cfg, self.quantizer.code_dim)
        self.encoder.apply(_init)
        self.decoder.apply(_init)

    @property
    def temporal_compression(self) -> int:
        return self.config.temporal_patch

    @property
    def spatial_compression(self) -> int:
        return self.config.patch_size

    def encode_latents(self, video: Tensor) -> Tensor:
        return self.encoder(video)

    def decode(self, codes: Tensor) -> Tensor:
        return self.decoder(codes)
