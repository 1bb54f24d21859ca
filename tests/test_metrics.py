"""Quality metrics against scikit-image on real photographs, MS-SSIM against an independent NumPy
reference and its invariants, and the LPIPS network: zero on identity, gradients, weight files."""

import math

import numpy as np
import pytest
import torch
from lpips_fixtures import brute_force_lpips, image_pair, random_lpips
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vistok.errors import VistokError
from vistok.metrics import LPIPS, MS_SSIM_WEIGHTS, ms_ssim, psnr, ssim
from vistok.metrics.perceptual import VGG16_CONV_INDICES


# --------------------------------------------------------------------------- helpers
def _to_pm1(img: np.ndarray) -> np.ndarray:
    """uint8 image (h w) or (h w c) -> float64 in [-1, 1], always (h w c)."""
    x = img.astype(np.float64) / 127.5 - 1.0
    return x[..., None] if x.ndim == 2 else x


def _torch(img: np.ndarray) -> torch.Tensor:
    """(h w c) -> (1 c h w) float64."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


def _distort(img: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return np.clip(img + rng.normal(0.0, 0.1, img.shape), -1, 1)
    if kind == "blur":
        return gaussian_filter(img, sigma=(2.0, 2.0, 0.0))
    if kind == "shift":  # brightness / contrast change: luminance and contrast terms at work
        return np.clip(0.8 * img + 0.1, -1, 1)
    raise ValueError(kind)


REAL_IMAGES = {
    "astronaut": lambda: data.astronaut()[::2, ::2],  # 256 x 256 RGB
    "camera": lambda: data.camera()[::2, ::2],  # 256 x 256 grey
    "coffee": lambda: data.coffee()[100:300, 50:330],  # 200 x 280 RGB, not square
}


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0
    )


def _numpy_ms_ssim(a: np.ndarray, b: np.ndarray, weights) -> float:
    """Independent reference: SciPy Gaussian filtering (as skimage), crop, 2x2 means between scales."""
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    terms = []
    for j in range(len(weights)):

        def filt(z):
            return gaussian_filter(z, sigma=(1.5, 1.5, 0.0), truncate=3.5)[5:-5, 5:-5]

        mu_a, mu_b = filt(a), filt(b)
        var_a = filt(a * a) - mu_a**2
        var_b = filt(b * b) - mu_b**2
        cov = filt(a * b) - mu_a * mu_b
        cs = (2 * cov + c2) / (var_a + var_b + c2)
        lum = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
        terms.append(cs.mean() if j < len(weights) - 1 else (lum * cs).mean())
        h, w, c = a.shape
        h2, w2 = h // 2, w // 2
        a = a[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, c).mean(axis=(1, 3))
        b = b[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, c).mean(axis=(1, 3))
    return float(np.prod([max(t, 0.0) ** w for t, w in zip(terms, weights)]))


# --------------------------------------------------------------------------- SSIM / PSNR vs skimage
@pytest.mark.parametrize("name", sorted(REAL_IMAGES))
@pytest.mark.parametrize("kind", ["noise", "blur", "shift"])
def test_ssim_matches_skimage_on_real_images(name, kind):
    a = _to_pm1(REAL_IMAGES[name]())
    b = _distort(a, kind)
    ref = _skimage_ssim(a, b)
    assert 0.0 < ref < 0.999  # the distortion is real
    got64 = ssim(_torch(a), _torch(b))
    got32 = ssim(_torch(a).float(), _torch(b).float())
    assert got64.shape == (1,) and got64.dtype == torch.float64 and got32.dtype == torch.float32
    assert abs(got64.item() - ref) < 1e-10
    assert abs(got32.item() - ref) < 1e-4


@pytest.mark.parametrize("name", sorted(REAL_IMAGES))
def test_psnr_matches_skimage_on_real_images(name):
    a = _to_pm1(REAL_IMAGES[name]())
    for kind in ("noise", "blur", "shift"):
        b = _distort(a, kind)
        ref = peak_signal_noise_ratio(a, b, data_range=2.0)
        assert abs(psnr(_torch(a), _torch(b)).item() - ref) < 1e-9
        assert abs(psnr(_torch(a).float(), _torch(b).float()).item() - ref) < 1e-4


def test_psnr_identical_is_inf_unless_capped():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.equal(psnr(x, x, max_db=100.0), torch.full((2,), 100.0))
    y = x + 0.01
    assert torch.isclose(psnr(x, y, max_db=100.0), psnr(x, y)).all()  # the cap leaves finite values alone


def test_psnr_known_value_and_data_range():
    x = torch.zeros(1, 1, 4, 4)
    y = torch.full((1, 1, 4, 4), 0.2)  # MSE 0.04 -> 10 log10(4 / 0.04) = 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-5)
    assert psnr(x, y, data_range=1.0).item() == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-5)


def test_video_metrics_are_frame_averages():
    torch.manual_seed(0)
    a = _to_pm1(data.astronaut()[::8, ::8])  # 64 x 64
    frames_a, frames_b = [], []
    for i in range(3):  # three different frames with different distortion strengths
        fa = np.roll(a, 5 * i, axis=1)
        frames_a.append(fa)
        frames_b.append(np.clip(fa + np.random.default_rng(i).normal(0, 0.05 * (i + 1), fa.shape), -1, 1))
    va = torch.stack([_torch(f)[0] for f in frames_a], dim=1)[None]  # (1 c t h w)
    vb = torch.stack([_torch(f)[0] for f in frames_b], dim=1)[None]
    ref_ssim = np.mean([_skimage_ssim(fa, fb) for fa, fb in zip(frames_a, frames_b)])
    ref_psnr = np.mean([peak_signal_noise_ratio(fa, fb, data_range=2.0) for fa, fb in zip(frames_a, frames_b)])
    assert abs(ssim(va, vb).item() - ref_ssim) < 1e-10
    assert abs(psnr(va, vb).item() - ref_psnr) < 1e-9
    per_frame = [ms_ssim(_torch(fa), _torch(fb)).item() for fa, fb in zip(frames_a, frames_b)]
    assert ms_ssim(va, vb).item() == pytest.approx(np.mean(per_frame), abs=1e-12)


def test_per_sample_values_and_reductions():
    torch.manual_seed(1)
    # one clip, the same noise pattern at three strengths
    x = (torch.rand(1, 3, 2, 24, 24, dtype=torch.float64) * 2 - 1).expand(3, -1, -1, -1, -1)
    noise = torch.randn(1, 3, 2, 24, 24, dtype=torch.float64)
    y = x + 0.1 * noise * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1, 1, 1)
    for fn in (psnr, ssim, ms_ssim):
        per = fn(x, y)
        assert per.shape == (3,)
        assert per[0] > per[1] > per[2]  # more noise, lower score, sample by sample
        assert torch.allclose(fn(x, y, reduction="mean"), per.mean())
        assert torch.allclose(fn(x, y, reduction="sum"), per.sum())
        # each sample scored alone gives the same value: no coupling across the batch
        assert torch.allclose(fn(x[1:2], y[1:2]), per[1:2])


# --------------------------------------------------------------------------- MS-SSIM
def test_ms_ssim_matches_numpy_reference_five_scales():
    a = _to_pm1(data.astronaut()[::2, ::2])  # 256 x 256: all five scales fit (needs 176)
    for kind in ("noise", "blur"):
        b = _distort(a, kind)
        ref = _numpy_ms_ssim(a, b, MS_SSIM_WEIGHTS)
        assert abs(ms_ssim(_torch(a), _torch(b)).item() - ref) < 1e-10
        assert abs(ms_ssim(_torch(a).float(), _torch(b).float()).item() - ref) < 1e-4


def test_ms_ssim_identity_symmetry_and_range():
    a = _torch(_to_pm1(data.coffee()[::2, ::2]))  # 200 x 300
    b = _torch(_distort(_to_pm1(data.coffee()[::2, ::2]), "noise"))
    assert ms_ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim(a.float(), a.float()).item() == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(a, b).item() == pytest.approx(ms_ssim(b, a).item(), abs=1e-12)
    assert 0.0 <= ms_ssim(a, b).item() < 1.0
    # anti-correlated content: cs < 0 is clamped, the result stays real and in [0, 1]
    value = ms_ssim(a, -a).item()
    assert math.isfinite(value) and 0.0 <= value < 0.1


def test_ms_ssim_monotone_under_increasing_noise():
    a = _to_pm1(data.camera()[::2, ::2])
    noise = np.random.default_rng(0).normal(size=a.shape)
    scores = [ms_ssim(_torch(a), _torch(a + s * noise)).item() for s in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert all(s1 > s2 for s1, s2 in zip(scores, scores[1:])), scores
    ssims = [ssim(_torch(a), _torch(a + s * noise)).item() for s in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert all(s1 > s2 for s1, s2 in zip(ssims, ssims[1:])), ssims


def test_ms_ssim_small_images_use_fewer_renormalized_scales():
    a = _to_pm1(data.astronaut()[::8, ::8])  # 64 x 64: 64, 32, 16 hold the window; 8 does not
    b = _distort(a, "noise")
    w3 = [w / sum(MS_SSIM_WEIGHTS[:3]) for w in MS_SSIM_WEIGHTS[:3]]
    ref = _numpy_ms_ssim(a, b, w3)
    assert abs(ms_ssim(_torch(a), _torch(b)).item() - ref) < 1e-10
    # the rule is not just "drop scales": the weights are renormalized, not truncated
    assert abs(_numpy_ms_ssim(a, b, MS_SSIM_WEIGHTS[:3]) - ref) > 1e-3
    with pytest.raises(VistokError, match="176x176"):
        ms_ssim(_torch(a), _torch(b), allow_fewer_scales=False)
    with pytest.raises(VistokError, match="window"):
        ms_ssim(torch.zeros(1, 3, 10, 40), torch.zeros(1, 3, 10, 40))


def test_ms_ssim_with_one_scale_is_ssim():
    a = _to_pm1(data.astronaut()[::4, ::4])
    b = _distort(a, "blur")
    one_scale = ms_ssim(_torch(a), _torch(b), weights=(1.0,))
    assert one_scale.item() == pytest.approx(ssim(_torch(a), _torch(b)).item(), abs=1e-12)


def test_ssim_and_ms_ssim_are_differentiable():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    for fn in (ssim, ms_ssim, psnr):
        (g,) = torch.autograd.grad(fn(x, y, reduction="mean"), y)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17), "same shape"),
        (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), "b c h w"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "floating"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), "window"),
    ],
)
def test_bad_inputs_raise_vistok_error(x, y, match):
    fns = (ssim, ms_ssim) if match == "window" else (psnr, ssim, ms_ssim)
    for fn in fns:
        with pytest.raises(VistokError, match=match):
            fn(x, y)


def test_bad_options_raise():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(VistokError, match="reduction"):
        psnr(x, x, reduction="avg")
    with pytest.raises(VistokError, match="data_range"):
        ssim(x, x, data_range=0)
    with pytest.raises(VistokError, match="odd"):
        ssim(x, x, win_size=10)
    with pytest.raises(VistokError, match="weights"):
        ms_ssim(x, x, weights=())
    assert issubclass(VistokError, ValueError)


# --------------------------------------------------------------------------- LPIPS
def _random_lpips(width=4, seed=0) -> LPIPS:
    return random_lpips("vgg", width, seed)


_pair = image_pair


def test_lpips_zero_on_identity_positive_otherwise():
    net = _random_lpips()
    x, y = _pair()
    assert torch.equal(net(x, x), torch.zeros(2))
    d = net(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(net(x, y), net(y, x))
    # more distortion, larger distance (same noise pattern, scaled)
    _, y2 = _pair(noise=0.6)
    assert (net(x, y2) > d).all()


def test_lpips_matches_its_definition():
    """Brute-force eq. (1): normalized taps, squared differences, weighted channel sum, spatial mean."""
    net = _random_lpips()
    x, y = _pair(shape=(1, 3, 32, 32))
    ref = brute_force_lpips(net, x, y, taps=(3, 8, 15, 22, 29))  # VGG16's relu1_2 ... relu5_3
    assert net(x, y).item() == pytest.approx(ref.item(), rel=1e-5)


def test_lpips_video_grey_and_gradients():
    net = _random_lpips()
    x, y = _pair(shape=(2, 3, 3, 32, 32))
    per_frame = torch.stack([net(x[:, :, i], y[:, :, i]) for i in range(3)], dim=1).mean(1)
    assert torch.allclose(net(x, y), per_frame, atol=1e-6)
    grey = net(x[:, :1, 0], y[:, :1, 0])
    assert torch.allclose(grey, net(x[:, :1, 0].expand(-1, 3, -1, -1), y[:, :1, 0].expand(-1, 3, -1, -1)))
    y = y.clone().requires_grad_(True)
    net(x, y, reduction="mean").backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # gradient of the distance at identity is finite too (no sqrt(0) NaNs)
    z = x.clone().requires_grad_(True)
    net(x, z, reduction="sum").backward()
    assert torch.isfinite(z.grad).all()


def test_lpips_save_load_round_trip(tmp_path):
    net = _random_lpips(width=8, seed=3)
    path = net.save_pretrained(tmp_path / "lpips.safetensors")
    loaded = LPIPS.from_pretrained(path)
    assert loaded.width == 8 and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x, y = _pair()
    assert torch.equal(net(x, y), loaded(x, y))


def test_lpips_loads_original_layouts(tmp_path):
    """The LPIPS package's ``vgg.pth`` (lin{k}.model.1.weight) + a torchvision VGG16 state dict
    (features.{i}.*, classifier.*), both via torch.save; and the LPIPS full-model layout."""
    net = _random_lpips(width=4, seed=5)
    state = net.state_dict()
    torchvision_like = {k: v.clone() for k, v in state.items() if k.startswith("features.")}
    torchvision_like["classifier.0.weight"] = torch.zeros(7, 7)  # present in torchvision files, ignored
    lin_like = {f"lin{k}.model.1.weight": state[f"lins.{k}.weight"].clone() for k in range(5)}
    torch.save(torchvision_like, tmp_path / "vgg16.pth")
    torch.save(lin_like, tmp_path / "vgg.pth")
    loaded = LPIPS.from_pretrained(tmp_path / "vgg.pth", trunk_path=tmp_path / "vgg16.pth")
    x, y = _pair()
    assert torch.equal(net(x, y), loaded(x, y))

    slices = {1: range(0, 4), 2: range(4, 9), 3: range(9, 16), 4: range(16, 23), 5: range(23, 30)}
    full = {f"lin{k}.model.1.weight": state[f"lins.{k}.weight"] for k in range(5)}
    full["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    for s, idx in slices.items():
        for i in VGG16_CONV_INDICES:
            if i in idx:
                full[f"net.slice{s}.{i}.weight"] = state[f"features.{i}.weight"]
                full[f"net.slice{s}.{i}.bias"] = state[f"features.{i}.bias"]
    torch.save(full, tmp_path / "lpips_full.pth")
    assert torch.equal(net(x, y), LPIPS.from_pretrained(tmp_path / "lpips_full.pth")(x, y))


def test_lpips_missing_and_wrong_files_say_how_to_get_weights(tmp_path):
    with pytest.raises(VistokError, match="no such file") as e:
        LPIPS.from_pretrained(tmp_path / "absent.safetensors")
    assert "lpips/weights/v0.1/vgg.pth" in str(e.value) and "vgg16" in str(e.value)

    net = _random_lpips()
    lin_only = {f"lin{k}.model.1.weight": net.lins[k].weight.detach().clone() for k in range(5)}
    torch.save(lin_only, tmp_path / "vgg.pth")
    with pytest.raises(VistokError, match="trunk weights are missing") as e:
        LPIPS.from_pretrained(tmp_path / "vgg.pth")
    assert "trunk_path" in str(e.value)

    trunk_only = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    torch.save(trunk_only, tmp_path / "vgg16.pth")
    with pytest.raises(VistokError, match="linear weights are missing"):
        LPIPS.from_pretrained(tmp_path / "vgg16.pth")

    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(VistokError, match="missing"):
        LPIPS.from_pretrained(tmp_path / "other.pth")

    bad = dict(trunk_only)
    bad["features.2.weight"] = torch.zeros(5, 5, 3, 3)  # not a VGG16 of the inferred width
    bad.update(lin_only)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(VistokError, match="shape"):
        LPIPS.from_pretrained(tmp_path / "bad.pth")

    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VistokError, match="cannot read"):
        LPIPS.from_pretrained(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(VistokError, match="cannot read"):
        LPIPS.from_pretrained(tmp_path / "junk.pth")


def test_lpips_bad_inputs():
    net = _random_lpips()
    with pytest.raises(VistokError, match="16x16"):
        net(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(VistokError, match="channels"):
        net(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))
    with pytest.raises(VistokError, match="same shape"):
        net(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 32))
    with pytest.raises(VistokError, match="width"):
        LPIPS(width=0)
