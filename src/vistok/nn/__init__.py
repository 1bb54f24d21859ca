"""Building blocks: causal 3D convolutions, causal norms, resampling, residual blocks."""

from vistok.nn.blocks import AdaptiveResBlock, ResBlock
from vistok.nn.causal_conv import CausalConv3d, causal_repeat, set_streaming, streaming
from vistok.nn.norms import AdaptiveGroupNorm, FrameGroupNorm
from vistok.nn.resample import DepthToSpaceUpsample, Downsample

__all__ = [
    "AdaptiveGroupNorm",
    "AdaptiveResBlock",
    "CausalConv3d",
    "DepthToSpaceUpsample",
    "Downsample",
    "FrameGroupNorm",
    "ResBlock",
    "causal_repeat",
    "set_streaming",
    "streaming",
]
