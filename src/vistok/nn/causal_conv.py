"""Causal 3D convolution with exact chunk-by-chunk streaming.

All causal padding arithmetic lives here. Along time a kernel of size ``k`` with stride ``s`` sees
``k - 1`` frames of past padding (the first frame repeated, so an image behaves like a still video)
and no future frame: output frame ``j`` reads padded input frames ``j*s .. j*s + k - 1``, that is
original frames ``j*s - (k-1) .. j*s``. With ``k = 3, s = 2`` a clip of ``1 + 2m`` frames gives
``1 + m`` outputs and output 0 sees only frame 0 -- the first frame is encoded alone (MAGVIT-v2,
section 3.2).

Streaming: while :func:`streaming` is active, each convolution keeps the not-yet-consumed tail of
its padded input between calls, so feeding a clip chunk by chunk gives the same frames as feeding
it whole, with memory bounded by the chunk size.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn


def _triple(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


class CausalConv3d(nn.Module):
    """``(b, c_in, t, h, w) -> (b, c_out, t_out, h/s_h, w/s_w)``, causal in ``t``, "same" in space.

    ``t_out = floor((t - 1) / s_t) + 1`` for a whole clip.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, *, stride=1, bias: bool = True):
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)
        kt, kh, kw = self.kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError("spatial kernel sizes must be odd for 'same' padding")
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(
            in_channels, out_channels, self.kernel_size, stride=self.stride, padding=(0, kh // 2, kw // 2), bias=bias
        )
        self._stream_on = False
        self._tail: Tensor | None = None

    def reset_stream(self, on: bool) -> None:
        self._stream_on = on
        self._tail = None

    def forward(self, x: Tensor) -> Tensor:
        kt, st = self.kernel_size[0], self.stride[0]
        if self._stream_on and self._tail is not None:
            padded = torch.cat([self._tail, x], dim=2)
        elif self.time_pad:
            padded = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        else:
            padded = x
        n_out = (padded.shape[2] - kt) // st + 1 if padded.shape[2] >= kt else 0
        if self._stream_on:
            self._tail = padded[:, :, n_out * st :].detach()
        if n_out == 0:
            raise ValueError(
                "a streamed chunk produced no output frame; feed 1 + 4k frames first, then multiples of 4"
            )
        return _conv3d(self.conv, padded[:, :, : (n_out - 1) * st + kt])


def _conv3d(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """``conv(x)``, but on CPU in float32 always through oneDNN.

    For a batch of one on small maps PyTorch's backend heuristic picks the single-threaded
    ``slow_conv3d`` kernel, several times slower than oneDNN here (bench/tokenizer.py); inference on
    one clip (the CLI, the codec) is exactly that case. Same arithmetic, differentiable. Under
    ``torch.compile`` the plain convolution is traced and the compiler picks the kernel.
    """
    x = x.contiguous()  # here, not inside the kernel, so memory planning on "meta" sees the copy
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()
    ):
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv(x)


class StreamingModule(nn.Module):
    """Marker base for modules that carry state between streamed chunks (``reset_stream``)."""

    def reset_stream(self, on: bool) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def set_streaming(module: nn.Module, on: bool) -> None:
    """Switch every stateful submodule of ``module`` in or out of streaming mode, clearing state."""
    for m in module.modules():
        if isinstance(m, (CausalConv3d, StreamingModule)):
            m.reset_stream(on)


@contextmanager
def streaming(module: nn.Module):
    """Within the block, successive forward calls continue one clip; state is dropped on exit."""
    set_streaming(module, True)
    try:
        yield module
    finally:
        set_streaming(module, False)


def causal_repeat(x: Tensor, factor: int, *, first: bool) -> Tensor:
    """Upsample ``(b c t h w)`` in time by ``factor`` the causal way.

    Frame ``j`` becomes ``factor`` frames, except that the very first frame of a clip (``first``)
    stays one frame: ``1 + k`` frames become ``1 + factor * k``, mirroring the encoder's
    ``1 + 4k -> 1 + k``. Output frame ``f`` reads input frame ``ceil(f / factor)``.
    """
    if factor == 1:
        return x
    if first:
        return torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(factor, dim=2)], dim=2)
    return x.repeat_interleave(factor, dim=2)
