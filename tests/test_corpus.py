"""The deterministic pieces of scripts/build_corpus.py, on synthetic inputs (no network, no packages)."""

import importlib.util
import json
import math
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistok.data import moving_shapes, to_uint8, write_image, write_video
from vistok.data.video import read_video

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_corpus"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("build_corpus", None)


def texture(h, w, seed=0, sigma=3.0):
    """A smooth random colour texture (detail at every position, no periodicity)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((h, w, 3)), (sigma, sigma, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).round().astype(np.uint8)


def test_split_is_by_group_and_deterministic(bc):
    groups = {
        "pkg-a": [f"pkg-a/g{i}" for i in range(30)],
        "pkg-b": [f"pkg-b/g{i}" for i in range(10)],
        "pkg-c": ["pkg-c/only"],
    }
    forced = ("pkg-b/g7",)
    split = bc.assign_split(groups, 0.1, forced)
    shuffled = {k: list(reversed(v)) + v[:3] for k, v in groups.items()}  # order and repeats do not matter
    assert bc.assign_split(shuffled, 0.1, forced) == split
    held = {k: [g for g in v if split[g] == "heldout"] for k, v in groups.items()}
    assert len(held["pkg-a"]) == 3 and len(held["pkg-b"]) == 1 and held["pkg-c"] == []
    assert held["pkg-b"] == ["pkg-b/g7"]  # a forced group fills the package's quota
    # Growing one package leaves the other packages' splits alone.
    more = dict(groups, **{"pkg-a": groups["pkg-a"] + ["pkg-a/new"]})
    again = bc.assign_split(more, 0.1, forced)
    assert all(again[g] == split[g] for g in groups["pkg-b"] + groups["pkg-c"])


def test_every_item_of_a_source_group_shares_its_split(bc, tmp_path):
    img = tmp_path / "p.png"
    write_image(img, texture(120, 160))
    srcs = [bc.Source(f"s{i}", str(img), "pkg", "1", "lic", "m", "photo", f"pkg/g{i // 3}") for i in range(12)]
    split = bc.assign_split({"pkg": [s.group for s in srcs]}, 0.25)
    for s in srcs:
        s.split, s.n_clips, s.n_stills = split[s.group], 2, 1
    items = bc.plan_all(srcs, size=32, frames=5, seed=0)
    by_group = {}
    for it in items:
        by_group.setdefault(next(s.group for s in srcs if s.sid == it.source), set()).add(it.split)
    assert all(len(v) == 1 for v in by_group.values())
    assert {"train", "heldout"} == set().union(*by_group.values())
    assert [it.params for it in bc.plan_all(srcs, size=32, frames=5, seed=0)] == [it.params for it in items]


def test_video_split_in_time_leaves_a_gap(bc):
    src = bc.Source("v", "unused", "pkg", "1", "lic", "m", "video", "pkg/v", split="time", heldout_from=60)
    items = bc.plan_video(src, 90, 48, 64, 25.0, size=32, frames=5, seed=0)
    train = [it.params for it in items if it.split == "train"]
    held = [it.params for it in items if it.split == "heldout"]
    assert train and held
    assert max(p["stop"] for p in train) <= 60 - bc.TIME_SPLIT_GAP
    assert min(p["start"] for p in held) >= 60
    assert {p["stride"] for p in train} == {1, 2}
    for p in train + held:
        x0, y0, x1, y1 = p["crop"]
        assert 0 <= x0 and 0 <= y0 and x1 <= 64 + 1e-6 and y1 <= 48 + 1e-6
        assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 >= 32 - 1e-6


@pytest.mark.parametrize("kind", ["pan", "zoom_in", "zoom_out", "rotate", "mixed"])
def test_synthetic_motion_gives_the_requested_frames_and_size(bc, kind):
    h, w, size, frames = 240, 320, 48, 9
    img = Image.fromarray(texture(h, w))
    rng = np.random.default_rng(1)
    params = bc.sample_motion(rng, h, w, size=size, frames=frames, kind=kind, scale_range=(1.0, 4.5))
    assert params is not None and params["motion"] == kind
    video = bc.render_motion(img, params, size)
    assert video.shape == (frames, size, size, 3) and video.dtype == np.uint8
    # Every frame's window lies inside the photo, and the scale never drops below 1 (no upsampling).
    pts = bc._corners(params, size) + np.array(params["center_start"])
    assert pts[:, 0].min() >= 0 and pts[:, 1].min() >= 0 and pts[:, 0].max() <= w and pts[:, 1].max() <= h
    assert min(params["scale_start"], params["scale_end"]) >= 1.0 - 1e-9
    if kind == "zoom_in":
        assert params["scale_end"] < params["scale_start"]
    if kind == "zoom_out":
        assert params["scale_end"] > params["scale_start"]
    if kind == "rotate":
        assert abs(params["angle_end_deg"] - params["angle_start_deg"]) > 1
    # Consecutive frames differ (it moves) but stay alike (it is one continuous view).
    d = np.abs(np.diff(video.astype(np.int16), axis=0)).mean()
    assert 0 < d < 40


def test_pan_moves_content_by_the_requested_amount(bc):
    from skimage.registration import phase_cross_correlation

    h, w, size, frames = 400, 400, 64, 9
    img = Image.fromarray(texture(h, w, seed=3, sigma=2.0))
    shift = (1.37, -0.62)  # content motion, output px per frame (sub-pixel)
    s = 2.5
    cx, cy = 200.0, 210.0
    n = frames - 1
    params = {
        "motion": "pan", "frames": frames, "center_start": [cx, cy],
        "center_end": [cx - shift[0] * s * n, cy - shift[1] * s * n],
        "scale_start": s, "scale_end": s, "angle_start_deg": 0.0, "angle_end_deg": 0.0,
    }
    video = bc.render_motion(img, params, size).astype(np.float64).mean(-1)
    for k in (1, 4, 8):
        # phase_cross_correlation returns the (row, col) shift that registers frame k onto frame 0.
        est, _, _ = phase_cross_correlation(video[k], video[0], upsample_factor=50)
        assert est[1] == pytest.approx(k * shift[0], abs=0.06)
        assert est[0] == pytest.approx(k * shift[1], abs=0.06)
    # The parameters sample_motion records describe the motion it renders.
    rng = np.random.default_rng(5)
    p = bc.sample_motion(rng, h, w, size=size, frames=frames, kind="pan", scale_range=(1.5, 3.0))
    v = bc.render_motion(img, p, size).astype(np.float64).mean(-1)
    est, _, _ = phase_cross_correlation(v[4], v[0], upsample_factor=50)
    sx, sy = p["shift_px_per_frame"]
    if math.hypot(sx, sy) * 4 < size / 3:  # enough overlap for a reliable estimate
        assert est[1] == pytest.approx(4 * sx, abs=0.1) and est[0] == pytest.approx(4 * sy, abs=0.1)


def test_rotation_path_matches_the_direct_path_at_zero_angle(bc):
    img = Image.fromarray(texture(300, 300, seed=4))
    direct = bc.render_view(img, 150.3, 140.7, 1.7, 0.0, 48, rotate=False)
    via_spline = bc.render_view(img, 150.3, 140.7, 1.7, 0.0, 48, rotate=True)
    assert np.abs(direct.astype(int) - via_spline.astype(int)).max() <= 1


def _tiny_sources(bc, tmp_path):
    clip = to_uint8(moving_shapes(frames=40, height=48, width=64, seed=0))
    vid = write_video(tmp_path / "src" / "v.mp4", clip, fps=10, crf=10)
    photos = []
    for i in range(3):
        p = tmp_path / "src" / f"p{i}.png"
        write_image(p, texture(100 + 10 * i, 140, seed=i))
        photos.append(p)
    S = bc.Source
    return [
        S("vid", str(vid), "pkg-v", "1.0", "MIT", "v.mp4", "video", "pkg-v/v", split="time", heldout_from=27, n_clips=4),
        S("p0", str(photos[0]), "pkg-p", "2.0", "CC0", "p0.png", "photo", "pkg-p/a", split="train", n_clips=3, n_stills=2),
        S("p1", str(photos[1]), "pkg-p", "2.0", "CC0", "p1.png", "photo", "pkg-p/a", split="train", n_clips=2, n_stills=1),
        S("p2", str(photos[2]), "pkg-p", "2.0", "CC0", "p2.png", "photo", "pkg-p/b", split="heldout", n_clips=2, n_stills=1, grey=False),
    ]


def test_build_writes_what_the_manifest_lists(bc, tmp_path, capsys):
    srcs = _tiny_sources(bc, tmp_path)
    out, staging = tmp_path / "out", tmp_path / "staging"
    m = bc.build(srcs, out, staging, size=32, frames=5, seed=0, max_count=3)
    items = m["items"]
    assert len({r["id"] for r in items}) == len(items)
    # Every held-out file on disk is listed, and every listed one exists with its recorded size.
    on_disk = {str(p.relative_to(out)) for p in (out / "heldout").rglob("*") if p.is_file()}
    listed = {r["file"] for r in items if r["split"] == "heldout"}
    assert on_disk == listed
    for r in items:
        if r["split"] == "heldout":
            assert (out / r["file"]).stat().st_size == r["bytes"]
    # Every sample in every training shard is listed (shard + key), and nothing else.
    samples = set()
    for shard in sorted((out / "train").rglob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for name in tar.getnames():
                key, _, ext = name.partition(".")
                if ext == "json":
                    samples.add((str(shard.relative_to(out)), key))
    assert samples == {(r["shard"], r["key"]) for r in items if r["split"] == "train"}
    assert len(list((out / "train" / "clips").glob("*.tar"))) >= 2  # max_count=3 splits the clips
    # Held-out clips are real mp4 files of the requested size and length.
    real = [r for r in items if r["split"] == "heldout" and r["kind"] == "real_video"]
    assert real and all(r["frame_range"]["start"] >= 27 for r in real)
    v = read_video(out / real[0]["file"])
    assert v.shape == (5, 32, 32, 3)
    # Manifest records: provenance on every item, motion or frame range by kind; totals add up.
    for r in items:
        assert r["package"] and r["version"] and r["licence"] and r["source_file"]
        assert ("motion" in r) == (r["kind"] == "synthetic_motion")
        assert ("frame_range" in r) == (r["kind"] == "real_video")
    for split in ("train", "heldout"):
        t = m["totals"]["per_split"][split]
        assert sum(t[k] for k in bc.KINDS) == sum(1 for r in items if r["split"] == split)
    assert {r["source_id"] for r in items if r["split"] == "heldout"} == {"vid", "p2"}
    assert json.loads((out / "manifest.json").read_text())["items"] == items
    # Resuming renders nothing new and gives the same manifest.
    capsys.readouterr()
    m2 = bc.build(srcs, out, staging, size=32, frames=5, seed=0, max_count=3)
    assert "rendered 0 new items" in capsys.readouterr().out
    assert m2["items"] == items


def test_photo_check_and_dep5(bc):
    flat = {"height": 300, "width": 400, "flat": 0.9, "top8": 0.95}
    assert "flat" in bc.photo_check(flat)
    assert "small" in bc.photo_check({"height": 100, "width": 400, "flat": 0.0, "top8": 0.0})
    assert bc.photo_check({"height": 300, "width": 400, "flat": 0.05, "top8": 0.01}) is None
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: x\nLicense: GPL-2+\n\n"
        "Files: 16.04/a.jpg\n 16.04/b.jpg\nCopyright: y\nLicense: CC-BY-4.0\n\n"
        "License: CC-BY-4.0\n long text\n"
    )
    st = bc.parse_dep5(text)
    assert bc.dep5_licence(st, "16.04/b.jpg") == "CC-BY-4.0"
    assert bc.dep5_licence(st, "other/c.jpg") == "GPL-2+"
