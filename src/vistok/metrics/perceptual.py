"""LPIPS perceptual distance (Zhang, Isola, Efros, Shechtman & Wang 2018), VGG16 variant, plain torch.

``d(x, y) = sum_l mean_{h,w} || w_l * (f_l(x) - f_l(y)) ||^2`` where ``f_l`` are the VGG16
activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, each normalized to unit length
along channels, and ``w_l`` are the learned non-negative per-channel weights ("lin" layers, a 1x1
convolution to one channel without bias) -- eq. (1) of the paper.

No weights ship with vistok and none are downloaded. ``LPIPS.from_pretrained`` reads them from
files you name:

* a ``.safetensors`` file written by ``LPIPS.save_pretrained`` (trunk and linear weights together),
  the recommended format;
* the original LPIPS linear weights ``vgg.pth`` (in the ``lpips`` pip package at
  ``lpips/weights/v0.1/vgg.pth``, or github.com/richzhang/PerceptualSimilarity), together with
* a torchvision VGG16 state dict, ``trunk_path=`` (``vgg16-397923af.pth`` from
  download.pytorch.org/models, or ``torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()``
  saved with ``torch.save`` or safetensors).

Both ``.pth`` files are read with ``torch.load(..., weights_only=True)`` (no pickled code runs).
Convert once and keep the safetensors file::

    LPIPS.from_pretrained("vgg.pth", trunk_path="vgg16-397923af.pth").save_pretrained("lpips_vgg.safetensors")

``LPIPS(width=...)`` builds a randomly initialized network of the same architecture (narrower with
a small ``width``) for tests and smoke runs; its distances are not perceptual.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from einops import rearrange, reduce
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from vistok.errors import VistokError

__all__ = ["LPIPS", "VGG16_CONV_INDICES", "VGG16_TAP_INDICES"]

# VGG16 (Simonyan & Zisserman 2015, configuration D) as torchvision lays out ``features``: the
# entries are conv widths (relative to 64) and "M" for 2x2 max pooling. Keeping torchvision's
# module indices lets its state dict load key for key.
_VGG16_PLAN: tuple[int | str, ...] = (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8)
# Index in ``features`` of every conv, and of the ReLU after which LPIPS taps a feature map
# (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
VGG16_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_TAP_INDICES: tuple[int, ...] = (3, 8, 15, 22, 29)

# The trunk was trained on ImageNet images normalized by these statistics of [0, 1] pixels; for
# [-1, 1] pixels that is ``(x - (2 mean - 1)) / (2 std)``.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# The message every "cannot load" error ends with.
_HOW_TO_GET = (
    "LPIPS needs the VGG16 trunk and the LPIPS linear weights, which vistok cannot download. Either pass "
    "a .safetensors file written by LPIPS.save_pretrained, or pass the LPIPS linear weights 'vgg.pth' "
    "(pip package 'lpips', file lpips/weights/v0.1/vgg.pth; or github.com/richzhang/PerceptualSimilarity) "
    "as path and a torchvision VGG16 state dict as trunk_path= (vgg16-397923af.pth from "
    "https://download.pytorch.org/models/, or torchvision.models.vgg16(weights='IMAGENET1K_V1').state_dict() "
    "saved with torch.save). Convert once with LPIPS.from_pretrained(lin, trunk_path=vgg).save_pretrained(out)."
)


def _normalize_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Unit length along channels (LPIPS eq. 1, the hat on ``y^l``).

    ``eps`` goes inside the square root: a position where every channel is zero (common after a
    ReLU) then gives 0 with a finite gradient, whereas ``sqrt(0)`` has an infinite derivative and
    turns the backward pass into NaN. The value differs from ``x / (||x|| + eps)`` by < 1e-10.
    """
    return x * torch.rsqrt(x.square().sum(dim=1, keepdim=True) + eps**2)


class LPIPS(nn.Module):
    """LPIPS-VGG16 distance between pixel tensors in [-1, 1].

    Args:
        width: channels of the first VGG block (64 for the real network, whose blocks are
            64-128-256-512-512); a small width (e.g. 4 or 8) gives a fast random network for tests.

    A freshly built network has random VGG weights and all linear weights equal to one, which is
    the paper's "baseline" distance without learned weights (channel-summed squared differences of
    normalized features); load real weights with ``from_pretrained``.
    """

    def __init__(self, *, width: int = 64):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise VistokError(f"LPIPS: width must be a positive integer, got {width!r}")
        self.width = width
        layers: list[nn.Module] = []
        c_in = 3
        for item in _VGG16_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                c_out = width * int(item)
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.channels = tuple(self.features[i - 1].out_channels for i in VGG16_TAP_INDICES)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.channels)
        for lin in self.lins:
            nn.init.ones_(lin.weight)
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("shift", (2 * mean - 1).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", (2 * std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ forward
    def _taps(self, x: Tensor) -> list[Tensor]:
        """The five normalized feature maps of ``(n 3 h w)`` pixels."""
        x = (x - self.shift) / self.scale
        out, taps = x, set(VGG16_TAP_INDICES)
        feats = []
        for i, layer in enumerate(self.features):
            out = layer(out)
            if i in taps:
                feats.append(_normalize_channels(out))
        return feats

    def forward(self, x: Tensor, y: Tensor, *, reduction: str = "none") -> Tensor:
        """Distance per sample: ``(b c h w)`` or ``(b c t h w)`` pairs -> ``(b,)`` (or a scalar).

        ``c`` is 3, or 1 (grey, repeated to RGB). Frames of a video are scored separately and
        averaged. Frames must be at least 16x16 (the trunk halves them four times). ``reduction``
        is ``"none"``, ``"mean"`` or ``"sum"``. Differentiable in ``x`` and ``y``.
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
        if min(x.shape[-2:]) < 16:
            raise VistokError(f"LPIPS: frames must be at least 16x16 pixels, got {x.shape[-2]}x{x.shape[-1]}")
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
        """Write trunk and linear weights to one ``.safetensors`` file (no pickle)."""
        path = Path(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"format": "vistok-lpips-vgg16", "width": str(self.width)})
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, trunk_path: str | Path | None = None) -> LPIPS:
        """Load LPIPS weights; see the module docstring for the accepted files.

        Args:
            path: a ``.safetensors`` file from ``save_pretrained``, or the original LPIPS
                ``vgg.pth`` linear weights (then give ``trunk_path`` too). A file holding only the
                LPIPS package's full state dict (``net.slice*`` and ``lin*`` keys) also works.
            trunk_path: a torchvision VGG16 state dict (``.pth`` or ``.safetensors``) supplying the
                trunk when ``path`` has none.

        Returns:
            The network in eval mode with gradients off for its parameters (inputs still get them).

        Raises:
            VistokError: a file is missing or unreadable, or the weights needed are not there; the
                message says how to obtain them.
        """
        state: dict[str, Tensor] = {}
        for p in [path] + ([trunk_path] if trunk_path is not None else []):
            for k, v in _read_state(p).items():
                state.setdefault(k, v)
        state = _canonical_keys(state)
        conv_w = [f"features.{i}.weight" for i in VGG16_CONV_INDICES]
        conv_b = [f"features.{i}.bias" for i in VGG16_CONV_INDICES]
        lin_w = [f"lins.{k}.weight" for k in range(len(VGG16_TAP_INDICES))]
        missing_trunk = [k for k in conv_w + conv_b if k not in state]
        missing_lin = [k for k in lin_w if k not in state]
        if missing_trunk:
            raise VistokError(
                f"LPIPS.from_pretrained: the VGG16 trunk weights are missing from {_names(path, trunk_path)} "
                f"(e.g. {missing_trunk[0]!r}). {_HOW_TO_GET}"
            )
        if missing_lin:
            raise VistokError(
                f"LPIPS.from_pretrained: the LPIPS linear weights are missing from {_names(path, trunk_path)} "
                f"(e.g. 'lin0.model.1.weight'). {_HOW_TO_GET}"
            )
        width = int(state[conv_w[0]].shape[0])
        net = cls(width=width)
        wanted = set(net.state_dict())
        load = {k: v for k, v in state.items() if k in wanted}
        expected = net.state_dict()
        for k, v in load.items():
            if v.shape != expected[k].shape:
                raise VistokError(
                    f"LPIPS.from_pretrained: {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)} "
                    f"for a VGG16 of width {width}; is this a VGG16 / LPIPS-VGG file (not AlexNet or SqueezeNet)?"
                )
        net.load_state_dict(load, strict=True)
        net.eval().requires_grad_(False)
        return net


def _names(path, trunk_path) -> str:
    return f"'{path}'" + (f" and '{trunk_path}'" if trunk_path is not None else "")


def _read_state(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file or a ``torch.save``d state dict (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise VistokError(f"LPIPS.from_pretrained: no such file '{p}'. {_HOW_TO_GET}")
    if p.suffix == ".safetensors":
        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise VistokError(f"LPIPS.from_pretrained: cannot read '{p}' as safetensors ({e}). {_HOW_TO_GET}") from e
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
    return dict(obj)


_LIN_KEY = re.compile(r"^lin(\d)\.model\.\d+\.weight$")  # lpips: lin{k}.model.{0|1}.weight
_SLICE_KEY = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")  # lpips full model: net.slice{s}.{i}.*


def _canonical_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of the accepted layouts to this module's (``features.{i}.*``, ``lins.{k}.*``).

    The LPIPS package keeps torchvision's indices inside its ``slice`` modules, so
    ``net.slice2.5.weight`` is ``features.5.weight``. Keys of other parts (torchvision's
    ``classifier``, LPIPS's ``scaling_layer``) are dropped.
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
