"""Decoupled spatial-temporal attention for video transformers (OmniTokenizer, section 3.1).

- :class:`SpatialAttention`: within one frame, over non-overlapping ``window x window`` windows
  (or the whole frame), with axial rotary positions. Frames never see each other here.
- :class:`TemporalAttention`: at each spatial position, causal over frames (optionally only the
  last ``window`` frames), with 1D rotary positions. In streaming mode it keeps the rotated keys and
  values of past frames (all, or the last ``window``), so a clip encoded chunk by chunk gives
  exactly the result of encoding it whole; with a window, memory is constant in the clip length.

Both run ``torch.nn.functional.scaled_dot_product_attention`` on batched windows / positions: no
Python loop over frames or windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistok.nn.causal_conv import StreamingModule
from vistok.nn.rotary import apply_axial, apply_rotary, axial_angles, rotary_angles


class SpatialAttention(nn.Module):
    """``x (B h w d) -> (B h w d)``; ``window = 0``: full attention over the frame."""

    def __init__(self, dim: int, heads: int, window: int = 0, rope_base: float = 100.0):
        super().__init__()
        if dim % heads or (dim // heads) % 4:
            raise ValueError(f"dim {dim} / heads {heads} must give a head size divisible by 4")
        self.heads, self.window, self.rope_base = heads, window, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, h, w, d = x.shape
        H, hd = self.heads, d // self.heads
        qkv = self.qkv(x).reshape(B, h * w, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3 B H n hd)
        cos, sin = axial_angles(h, w, hd, self.rope_base, device=x.device)
        q, k, v = apply_axial(qkv[0], cos, sin), apply_axial(qkv[1], cos, sin), qkv[2]
        ws = self.window
        if ws <= 0 or (h <= ws and w <= ws):
            out = F.scaled_dot_product_attention(q, k, v)  # (B H n hd)
            return self.proj(out.transpose(1, 2).reshape(B, h, w, d))
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws

        def windows(t: Tensor) -> Tensor:  # (B H n hd) -> (B nh nw H ws*ws hd)
            t = t.reshape(B, H, h, w, hd)
            t = F.pad(t, (0, 0, 0, wp - w, 0, hp - h))
            t = t.reshape(B, H, hp // ws, ws, wp // ws, ws, hd).permute(0, 2, 4, 1, 3, 5, 6)
            return t.reshape(-1, H, ws * ws, hd)

        mask = None
        if hp != h or wp != w:  # padded keys must not be attended to
            valid = torch.zeros(hp, wp, dtype=torch.bool, device=x.device)
            valid[:h, :w] = True
            valid = valid.reshape(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
            mask = valid[None, :, None, None, :].expand(B, -1, 1, 1, -1).reshape(-1, 1, 1, ws * ws)
        out = F.scaled_dot_product_attention(windows(q), windows(k), windows(v), attn_mask=mask)
        out = out.reshape(B, hp // ws, wp // ws, H, ws, ws, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, hp, wp, d)
        return self.proj(out[:, :h, :w].contiguous())


class TemporalAttention(StreamingModule):
    """``x (b t h w d) -> (b t h w d)``, causal in ``t``; ``window = 0``: all past frames."""

    def __init__(self, dim: int, heads: int, window: int = 0, rope_base: float = 10000.0):
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim {dim} / heads {heads} must give an even head size")
        self.heads, self.window, self.rope_base = heads, window, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.reset_stream(False)

    def reset_stream(self, on: bool) -> None:
        self._stream_on = on
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._offset = 0

    def forward(self, x: Tensor) -> Tensor:
        b, t, h, w, d = x.shape
        H, hd = self.heads, d // self.heads
        qkv = self.qkv(x).reshape(b, t, h * w, 3, H, hd).permute(3, 0, 2, 4, 1, 5)  # (3 b n H t hd)
        qkv = qkv.reshape(3, b * h * w, H, t, hd)
        past = self._k.shape[2] if (self._stream_on and self._k is not None) else 0
        offset = self._offset if self._stream_on else 0
        cos, sin = rotary_angles(torch.arange(offset, offset + t, device=x.device), hd, self.rope_base)
        q, k, v = apply_rotary(qkv[0], cos, sin), apply_rotary(qkv[1], cos, sin), qkv[2]
        if past:
            k, v = torch.cat([self._k, k], dim=2), torch.cat([self._v, v], dim=2)
        if past == 0 and self.window <= 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            qi = torch.arange(past, past + t, device=x.device)[:, None]
            kj = torch.arange(past + t, device=x.device)[None]
            allowed = kj <= qi
            if self.window > 0:
                allowed &= qi - kj < self.window
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        if self._stream_on:
            keep = k.shape[2] if self.window <= 0 else min(self.window - 1, k.shape[2])
            self._k, self._v = k[:, :, k.shape[2] - keep :], v[:, :, v.shape[2] - keep :]
            self._offset = offset + t
        out = out.reshape(b, h * w, H, t, hd).permute(0, 3, 1, 2, 4).reshape(b, t, h, w, d)
        return self.proj(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SpaceTimeBlock(nn.Module):
    """Pre-norm: ``x + spatial(LN x)``, ``+ temporal(LN x)``, ``+ mlp(LN x)`` on ``(b t h w d)``."""

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float = 4.0, spatial_window: int = 0, temporal_window: int = 0):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.spatial = SpatialAttention(dim, heads, spatial_window)
        self.temporal = TemporalAttention(dim, heads, temporal_window)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        b, t, h, w, d = x.shape
        x = x + self.spatial(self.norm1(x).reshape(b * t, h, w, d)).reshape(b, t, h, w, d)
        x = x + self.temporal(self.norm2(x))
        return x + self.mlp(self.norm3(x))
