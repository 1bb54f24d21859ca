"""MAGVIT-v2 video tokenizer (Yu et al. 2023, "Language Model Beats Diffusion", section 3.2).

A causal 3D CNN: every temporal operation sees only the past, so latent frame ``i`` depends on
input frames ``<= 4 i`` and the first frame is encoded alone -- an image is a 1-frame video and
images and videos share one vocabulary. Lookup-free quantization (:class:`vistok.quantizers.LFQ`)
turns the ``K``-channel latent into ``K``-bit tokens.

Encoder (``b 3 t h w -> b K t' h' w'``)::

    causal conv 3x3x3 -> [stage i: n residual blocks, then strided causal conv (space /2, and time
    /2 in the later stages)] x (S - 1) -> last stage's residual blocks -> norm, swish -> conv 1x1x1

Decoder: mirrored, with adaptive group norm (scale and shift from the quantized latent) in every
residual block and depth-to-space up-sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.nn.blocks import AdaptiveResBlock, ResBlock
from vistok.nn.causal_conv import CausalConv3d, StreamingModule
from vistok.nn.norms import AdaptiveGroupNorm, FrameGroupNorm
from vistok.nn.resample import DepthToSpaceUpsample, Downsample
from vistok.configuration import Config
from vistok.quantizers.config import QuantizerConfig, build_quantizer, upgrade_quantizer_keys
from vistok.tokenizers.base import TOKENIZERS, Tokenizer


@dataclass
class Magvit2Config(Config):
    """Architecture and quantizer settings. ``temporal_downsample[i]`` says whether the transition
    after stage ``i`` also halves time (MAGVIT-v2 down-samples time only in the later stages).
    ``quantizer``: the bottleneck (always LFQ here: ``bits`` channels, 2^bits tokens)."""

    in_channels: int = 3
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 4
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    norm_groups: int = 32
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    # the training clip size this preset was designed for (informational; any valid size works)
    frames: int = 17
    image_size: int = 128

    family: ClassVar[str] = "MAGVIT-v2"

    def __post_init__(self):
        if not self.channel_multipliers or any(m < 1 for m in self.channel_multipliers):
            raise VistokError(f"channel_multipliers must be positive, got {self.channel_multipliers}")
        if len(self.temporal_downsample) != len(self.channel_multipliers) - 1:
            raise VistokError(
                f"temporal_downsample needs one flag per down-sampling (len(channel_multipliers) - 1 = "
                f"{len(self.channel_multipliers) - 1}), got {self.temporal_downsample}"
            )
        if self.base_channels < 1 or self.num_res_blocks < 0 or self.in_channels < 1:
            raise VistokError("base_channels and in_channels must be >= 1, num_res_blocks >= 0")
        if self.norm_groups < 1 or any((self.base_channels * m) % self.norm_groups for m in self.channel_multipliers):
            raise VistokError(f"norm_groups ({self.norm_groups}) must divide every stage's width "
                              f"({[self.base_channels * m for m in self.channel_multipliers]})")
        if self.quantizer.kind != "lfq":
            raise VistokError(f"MAGVIT-v2 uses lookup-free quantization: quantizer.kind must be 'lfq', got {self.quantizer.kind!r}")

    upgrade_dict = staticmethod(upgrade_quantizer_keys)

    @classmethod
    def presets(cls) -> dict[str, dict]:
        return MAGVIT2_PRESETS


# One table of named sizes; they double as CLI choices. All compress time 4x after the first frame.
MAGVIT2_PRESETS: dict[str, dict] = {
    # Trains on 2 CPU cores: 17 x 64 x 64 -> 5 x 8 x 8 tokens, vocabulary 2^18.
    "tiny": dict(
        base_channels=32,
        channel_multipliers=(1, 2, 2, 2),
        num_res_blocks=1,
        norm_groups=8,
        quantizer=dict(entropy_anneal_steps=200),
        frames=17,
        image_size=64,
    ),
    # The paper's video tokenizer (UCF-101 / Kinetics): 17 x 128 x 128 -> 5 x 16 x 16, 2^18.
    "ucf-128": dict(base_channels=128, channel_multipliers=(1, 2, 2, 4), num_res_blocks=4, frames=17, image_size=128),
    # Image tokenizer (ImageNet 256): 16x space for 16 x 16 tokens, same causal design and vocabulary.
    "imagenet-256": dict(
        base_channels=128,
        channel_multipliers=(1, 1, 2, 2, 4),
        num_res_blocks=4,
        temporal_downsample=(False, False, True, True),
        frames=1,
        image_size=256,
    ),
}


class Magvit2Encoder(nn.Module):
    def __init__(self, cfg: Magvit2Config):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_multipliers]
        g = cfg.norm_groups
        self.conv_in = CausalConv3d(cfg.in_channels, chans[0], 3)
        self.stages = nn.ModuleList()
        ch = chans[0]
        for i, out_ch in enumerate(chans):
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, out_ch, groups=g))
                ch = out_ch
            if i < len(chans) - 1:
                blocks.append(Downsample(ch, ch, temporal=cfg.temporal_downsample[i]))
            self.stages.append(nn.Sequential(*blocks))
        self.norm_out = FrameGroupNorm(ch, g)
        self.conv_out = CausalConv3d(ch, cfg.quantizer.bits, 1)

    def forward(self, video: Tensor) -> Tensor:
        """``(b c t h w) -> (b K t' h' w')``."""
        x = self.conv_in(video)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Magvit2Decoder(StreamingModule):
    def __init__(self, cfg: Magvit2Config):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_multipliers]
        g, k = cfg.norm_groups, cfg.quantizer.bits
        self.conv_in = CausalConv3d(k, chans[-1], 3)
        # Stages run from the coarsest; each ends (except the last) with an up-sampler that mirrors
        # the encoder's down-sampler at the same resolution.
        self.stages = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        self.factors: list[tuple[int, int]] = []  # (time, space) factor of each stage w.r.t. latent
        tf, sf = 1, 1
        ch = chans[-1]
        n = len(chans)
        for i in reversed(range(n)):
            out_ch = chans[i]
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(AdaptiveResBlock(ch, out_ch, k, groups=g))
                ch = out_ch
            self.stages.append(blocks)
            self.factors.append((tf, sf))
            if i > 0:
                temporal = cfg.temporal_downsample[i - 1]
                self.upsamplers.append(DepthToSpaceUpsample(ch, chans[i - 1], temporal=temporal))
                ch = chans[i - 1]
                tf, sf = tf * (2 if temporal else 1), sf * 2
        self.out_factors = (tf, sf)
        self.norm_out = AdaptiveGroupNorm(ch, k, g)
        self.conv_out = CausalConv3d(ch, cfg.in_channels, 3)
        self._stream_on = False
        self._started = False

    def reset_stream(self, on: bool) -> None:
        self._stream_on = on
        self._started = False

    def forward(self, codes: Tensor) -> Tensor:
        """``(b K t' h' w') -> (b c t h w)``, ``t = 1 + T (t' - 1)`` (``T t'`` for later streamed chunks)."""
        first = not (self._stream_on and self._started)
        self._started = True
        x = self.conv_in(codes)
        for i, blocks in enumerate(self.stages):
            tf, sf = self.factors[i]
            for block in blocks:
                x = block(x, codes, time_factor=tf, space_factor=sf, first=first)
            if i < len(self.upsamplers):
                x = self.upsamplers[i](x, first=first)
        tf, sf = self.out_factors
        x = F.silu(self.norm_out(x, codes, time_factor=tf, space_factor=sf, first=first))
        return self.conv_out(x)


@TOKENIZERS.register("magvit2")
class Magvit2Tokenizer(Tokenizer):
    """MAGVIT-v2: ``video (b 3 t h w)`` in [-1, 1], ``t = 1 + 4k`` -> ``indices (b 1+k h/8 w/8)``.

    Example::

        tok = Magvit2Tokenizer(Magvit2Config.preset("tiny"))
        indices = tok.encode(video)          # (b, 1 + k, h/8, w/8) int64
        x_hat = tok.decode_indices(indices)  # (b, 3, 1 + 4k, h, w)
    """

    model_type = "magvit2"
    config_class = Magvit2Config

    def __init__(self, config: Magvit2Config | None = None):
        super().__init__(config or Magvit2Config())
        cfg = self.config
        self.encoder = Magvit2Encoder(cfg)
        self.quantizer = build_quantizer(cfg.quantizer)
        self.decoder = Magvit2Decoder(cfg)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.config.temporal_downsample)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.config.channel_multipliers) - 1)

    def encode_latents(self, video: Tensor) -> Tensor:
        return self.encoder(video)

    def decode(self, codes: Tensor) -> Tensor:
        return self.decoder(codes)
