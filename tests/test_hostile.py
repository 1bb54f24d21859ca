"""Hostile and careless inputs: every command ends in exit 0 or one line ``vistok: error:`` with
exit 2, inputs are byte-identical afterwards, nothing partial is left, and nothing blocks."""

import hashlib
import json
import os
import threading

import numpy as np
import pytest

from vistok.atomic import temporary_name
from vistok.cli import main
from vistok.errors import VistokError
from vistok.paths import FolderLock
from vistok.train.config import load_train_config
from vistok.train.trainer import Trainer, train

from conftest import tiny_train_overrides


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused(code, err, needle=""):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vistok: error:"), err
    assert needle in lines[0], lines[0]


def test_output_equal_to_input_is_refused(capsys, model_dir, media_dir, tmp_path):
    src = tmp_path / "x.mp4"
    src.write_bytes((media_dir / "clip0.mp4").read_bytes())
    before = digest(src)
    for target in (src, tmp_path / "sub" / ".." / "x.mp4"):
        code, _, err = run(capsys, "reconstruct", model_dir, src, target)
        assert_refused(code, err, "refusing to overwrite")
    code, _, err = run(capsys, "reconstruct", model_dir, src, tmp_path / "ok.mp4", "--metrics", src)
    assert_refused(code, err, "refusing to overwrite")
    code, _, err = run(capsys, "encode", model_dir, src, src)
    assert code == 2
    assert digest(src) == before


def test_outputs_that_are_folders_or_under_files(capsys, model_dir, media_dir, tmp_path):
    (tmp_path / "adir").mkdir()
    code, _, err = run(capsys, "reconstruct", model_dir, media_dir / "image0.png", tmp_path / "adir")
    assert_refused(code, err, "is a folder")
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "encode", model_dir, media_dir / "image0.png", tmp_path / "afile" / "t.npz")
    assert_refused(code, err, "is a file, not a folder")
    # a missing folder is created (one behaviour for every command)
    code, _, err = run(capsys, "encode", model_dir, media_dir / "image0.png", tmp_path / "new" / "deeper" / "t.npz")
    assert code == 0 and (tmp_path / "new" / "deeper" / "t.npz").is_file()


def test_fifos_are_refused_without_blocking(capsys, model_dir, media_dir, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    result = {}

    def go(args):
        result["r"] = run(capsys, *args)

    for args in (["reconstruct", model_dir, fifo, tmp_path / "o.mp4"],
                 ["reconstruct", model_dir, media_dir / "image0.png", tmp_path / "pipe.png"]):
        if args[-1].name == "pipe.png":
            os.mkfifo(tmp_path / "pipe.png")
        t = threading.Thread(target=go, args=(args,), daemon=True)
        t.start()
        t.join(timeout=60)
        assert not t.is_alive(), "blocked on a FIFO"
        assert_refused(result["r"][0], result["r"][2], "not a regular file")


@pytest.mark.parametrize("indices, needle", [
    (np.full((1, 2, 2), 1.5, np.float32), "must be integers"),
    (np.ones((1, 2, 2), bool), "must be integers"),
    (np.zeros((0, 2, 2), np.int64), "non-empty"),
    (np.full((1, 2, 2), -3, np.int64), ">= 0"),
])
def test_tampered_token_files(capsys, model_dir, tmp_path, indices, needle):
    p = tmp_path / "t.npz"
    meta = np.frombuffer(json.dumps({"fps": 25.0}).encode(), np.uint8)
    np.savez(p, indices=indices, meta=meta)
    code, _, err = run(capsys, "decode", model_dir, p, tmp_path / "o.png")
    assert_refused(code, err, needle)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("meta, needle", [([1, 2], "JSON object"), ({"fps": 4294967295}, "fps"), ({"fps": "fast"}, "fps")])
def test_tampered_token_metadata(capsys, model_dir, tmp_path, meta, needle):
    p = tmp_path / "t.npz"
    np.savez(p, indices=np.zeros((1, 2, 2), np.int64), meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    code, _, err = run(capsys, "decode", model_dir, p, tmp_path / "o.png")
    assert_refused(code, err, needle)


def test_model_folders_with_bad_config(capsys, media_dir, tmp_path, model_dir):
    weights = (model_dir / "model.safetensors").read_bytes()
    cases = {
        "wrongtype": json.dumps({"model_type": "magvit2", "config": {"base_channels": "eight"}}).encode(),
        "missing": json.dumps({"model_type": "magvit2"}).encode(),
        "deep": json.dumps({"model_type": "magvit2", "config": {"quantizer": {"bits": {"a": 1}}}}).encode(),
        "notutf8": b"\xff\xfe\x00garbage",
        "unknownkey": json.dumps({"model_type": "magvit2", "config": {"widthh": 3}}).encode(),
    }
    for name, config in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_bytes(config)
        (d / "model.safetensors").write_bytes(weights)
        code, _, err = run(capsys, "reconstruct", d, media_dir / "image0.png", tmp_path / f"{name}.png")
        assert_refused(code, err)


def test_concurrent_runs_into_one_folder_and_stale_temporaries(media_dir, tmp_path):
    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=4))
    first = Trainer(cfg, tmp_path / "run", quiet=True)
    try:
        with pytest.raises(VistokError, match="in use by another vistok run"):
            Trainer(cfg, tmp_path / "run", quiet=True)
    finally:
        first.close()
    train(cfg, tmp_path / "run2", quiet=True, stop_after=3)  # "killed" after the step-3 checkpoint
    stale = temporary_name(tmp_path / "run2" / "checkpoint.pt").with_name(".checkpoint.vistok-tmp-999999999.pt")
    stale.write_bytes(b"half a checkpoint from a killed run")
    res = train(cfg, tmp_path / "run2", quiet=True, resume=True)
    assert res.step == 4 and not stale.exists()
    assert not list((tmp_path / "run2").glob(".*vistok-tmp*"))


def test_folder_lock_is_released(tmp_path):
    lock = FolderLock(tmp_path)
    with pytest.raises(VistokError):
        FolderLock(tmp_path)
    lock.release()
    FolderLock(tmp_path).release()


def _png_declaring(path, width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_pixel_bombs_refused_before_work(capsys, model_dir, tmp_path):
    bomb = _png_declaring(tmp_path / "bomb.png", 9000, 9000)  # 185 bytes on disk
    for command in ("reconstruct", "encode", "compress"):
        suffix = {"reconstruct": ".png", "encode": ".npz", "compress": ".vtok"}[command]
        code, _, err = run(capsys, command, model_dir, bomb, tmp_path / f"out{suffix}")
        assert_refused(code, err, "exceed the budget")
        assert not (tmp_path / f"out{suffix}").exists()
    huge = _png_declaring(tmp_path / "huge.png", 100_000, 100_000)
    from vistok.data.images import read_image

    with pytest.raises(VistokError, match="100000x100000|decompression bomb"):
        read_image(huge)


def test_exif_orientation_applied_the_same_way_everywhere(capsys, model_dir, tmp_path):
    from PIL import Image

    from vistok.data.images import probe_image, read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 64-wide, 48-high stored image is shown 48 wide, 64 high
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
        tmp_path / "rot.jpg", exif=exif.tobytes())
    assert probe_image(tmp_path / "rot.jpg") == read_image(tmp_path / "rot.jpg").shape[:2] == (64, 48)
    for command, out in (("reconstruct", "r.png"), ("encode", "t.npz"), ("compress", "c.vtok")):
        code, _, err = run(capsys, command, model_dir, tmp_path / "rot.jpg", tmp_path / out)
        assert code == 0, err


def test_token_file_declaring_a_huge_clip_is_refused_quickly(capsys, model_dir, tmp_path):
    p = tmp_path / "long.npz"
    np.savez_compressed(p, indices=np.zeros((20_000, 8, 8), np.int64),
                        meta=np.frombuffer(json.dumps({"fps": 25.0}).encode(), np.uint8))
    assert p.stat().st_size < 100_000
    code, _, err = run(capsys, "decode", model_dir, p, tmp_path / "o.mp4")
    assert_refused(code, err, "more than --max-pixels")
    assert not (tmp_path / "o.mp4").exists()


def test_encode_set_limits_and_damaged_items(capsys, model_dir, tmp_path):
    from PIL import Image

    root = tmp_path / "classes"
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "1.png").write_bytes(good[: len(good) // 2])  # the header probes fine, the pixels do not
    out = tmp_path / "set.npz"
    for flag, needle in ((("--limit", "0"), "limit"), (("--limit", "-3"), "limit"), (("--size", "0"), "size")):
        args = ["encode-set", model_dir, root, out, "--size", "16", *flag]
        code, _, err = run(capsys, *args)
        assert_refused(code, err, needle)
        assert not out.exists()
    with pytest.warns(UserWarning, match="1.png"):
        code, text, _ = run(capsys, "encode-set", model_dir, root, out, "--size", "16")
    assert code == 0 and "5 items" in text and "skipped 1" in text
    code, text, _ = run(capsys, "encode-set", model_dir, root, out, "--size", "16", "--limit", "3")
    assert code == 0 and "3 items" in text  # the limit holds across class folders


def test_idx_header_sizes_cannot_wrap_around(tmp_path):
    import struct

    from vistok.data.idx import read_idx

    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x04" + struct.pack(">4I", *[0xFFFFFFFF] * 4) + b"\x00" * 16)
    with pytest.raises(VistokError, match="more than this reader accepts"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x04" + struct.pack(">4I", 1 << 16, 1 << 16, 1 << 16, 1 << 16) + b"\x00" * 16)
    with pytest.raises(VistokError, match="more than this reader accepts"):
        read_idx(p)


def test_skipped_training_files_are_all_named(tmp_path):
    from vistok.data.datasets import skipped_summary

    many = [(f"/d/bad{i}.mp4", "empty file") for i in range(27)] + [("/d/x.txt", "not a video or image file")]
    text = skipped_summary(many)
    assert all(f"bad{i}.mp4" in text for i in range(27)) and "x.txt" in text and "(27 file(s))" in text
    few = skipped_summary(many[:3])
    assert few.count("\n") == 2 and "bad2.mp4: empty file" in few


def test_vtok_declaring_huge_frames_is_refused_before_decoding(capsys, model_dir, tmp_path):
    import vistok
    from vistok.codec import compress_indices

    tok = vistok.load_tokenizer(model_dir)
    p = tmp_path / "bomb.vtok"  # one 11584x11584 frame (400 MB of pixels) in a small file
    p.write_bytes(compress_indices(tok, np.zeros((1, 1448, 1448), np.int64)))
    assert p.stat().st_size < 200_000
    code, _, err = run(capsys, "decompress", p, tmp_path / "o.png", "--model", model_dir)
    assert_refused(code, err, "more than max_frame_pixels=2088960")
    assert not (tmp_path / "o.png").exists()
    tokens = tmp_path / "bomb.npz"
    np.savez_compressed(tokens, indices=np.zeros((1, 1448, 1448), np.int64),
                        meta=np.frombuffer(json.dumps({"fps": 0}).encode(), np.uint8))
    code, _, err = run(capsys, "decode", model_dir, tokens, tmp_path / "o.png")
    assert_refused(code, err, "more than --max-frame-pixels 2088960")


def test_long_vtok_decodes_with_progress_and_a_total_budget(capsys, model_dir, tmp_path):
    import vistok
    from vistok.codec import compress_indices
    from vistok.data import read_video

    tok = vistok.load_tokenizer(model_dir)
    p = tmp_path / "long.vtok"
    p.write_bytes(compress_indices(tok, np.zeros((50, 2, 3), np.int64), fps=25))
    code, out, err = run(capsys, "decompress", p, tmp_path / "o.mp4", "--model", model_dir)
    assert code == 0, err
    assert "decompress: 100%" in err and "197/197" in err  # progress in frames, to the end
    assert read_video(tmp_path / "o.mp4").shape[:3] == (197, 16, 24)
    code, _, err = run(capsys, "decompress", p, tmp_path / "o2.mp4", "--model", model_dir, "--max-pixels", 1000)
    assert_refused(code, err, "more than max_pixels=1000")


def _rotated_clip(path, frames):
    """An H.264 clip whose display matrix asks for a quarter turn counter-clockwise (as a phone
    writes portrait video): stored ``frames`` are landscape, players show them portrait."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10, options={"crf": "0"})
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.set_display_rotation(90)
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_video_rotation_metadata_is_applied(capsys, model_dir, tmp_path):
    from vistok.data import probe_video, read_video

    stored = np.zeros((5, 32, 48, 3), np.uint8)
    stored[:, :, :12] = 255  # a white band down the left side of the stored picture
    _rotated_clip(tmp_path / "portrait.mp4", stored)
    info = probe_video(tmp_path / "portrait.mp4")
    assert (info.rotation, info.width, info.height) == (90, 32, 48)
    shown = read_video(tmp_path / "portrait.mp4")
    assert shown.shape == (5, 48, 32, 3)
    assert np.abs(shown.astype(int) - np.rot90(stored, 1, axes=(1, 2))).mean() < 3  # the band is now at the bottom
    code, _, err = run(capsys, "reconstruct", model_dir, tmp_path / "portrait.mp4", tmp_path / "out.mp4")
    assert code == 0, err
    assert read_video(tmp_path / "out.mp4").shape[1:3] == (48, 32)
