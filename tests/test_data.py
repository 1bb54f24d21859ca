"""vistok.data: decoding, writing, transforms, datasets, sampler, shards, samples, synthetic clips."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vistok.data import (
    ClipDataset,
    MixedBatchSampler,
    ShardDataset,
    assign_shards,
    center_crop,
    collate_clips,
    heldout_clip,
    moving_shapes,
    moving_shapes_batch,
    probe_video,
    random_crop,
    read_image,
    read_video,
    resize_shorter,
    sample_clips,
    sample_images,
    to_tensor,
    to_uint8,
    training_files,
    write_image,
    write_shards,
    write_video,
)
from vistok.data import datasets as datasets_module
from vistok.data import samples as samples_module
from vistok.errors import VistokError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def bikes():
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("needs the data extra: pip install absolutely-not-scikit-video scikit-image")
    return next(p for p in sample_clips() if p.stem == "bikes")


def shapes_uint8(frames=17, height=48, width=64, seed=0) -> np.ndarray:
    return to_uint8(moving_shapes(frames=frames, height=height, width=width, seed=seed))


# --- video decoding -----------------------------------------------------------------------------


def test_probe_and_decode_real_clip(bikes):
    info = probe_video(bikes)
    assert (info.frames, info.fps, info.width, info.height) == (250, 25.0, 640, 272)
    assert info.frames_from == "header"
    clip = read_video(bikes, num_frames=5)
    assert clip.shape == (5, 272, 640, 3) and clip.dtype == np.uint8
    assert clip.min() < 40 and clip.max() > 215  # real content, not a blank or mis-scaled frame
    # Reading to the end yields exactly the frames the probe counted after `start`.
    assert read_video(bikes, start=240).shape[0] == 10
    with pytest.raises(VistokError, match="ended after 10"):
        read_video(bikes, start=240, num_frames=17)
    video = to_tensor(clip)
    assert video.shape == (3, 5, 272, 640) and video.dtype == torch.float32
    assert -1.0 <= float(video.min()) and float(video.max()) <= 1.0
    assert np.array_equal(to_uint8(video), clip)


def test_seeked_strided_clip_matches_sequential_decode(bikes):
    # Frame 100 lies between keyframes 76 and 137: the seek lands on 76 and must decode forward.
    clip = read_video(bikes, start=100, num_frames=17, stride=2)
    assert clip.shape == (17, 272, 640, 3)
    reference = read_video(bikes, num_frames=133, seek=False)[100::2]
    assert np.array_equal(clip, reference)


def test_read_video_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(VistokError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(VistokError):
        read_video(bad, stride=0)


def _encode_raw(path, codec, pix_fmt, in_format, frames):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format=in_format)):
                container.mux(p)
        for p in stream.encode():
            container.mux(p)


def test_grey_and_alpha_videos_become_rgb(tmp_path):
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (5, 8, 1))  # (t h w), lossless ffv1
    _encode_raw(tmp_path / "grey.mkv", "ffv1", "gray", "gray", grey)
    info = probe_video(tmp_path / "grey.mkv")
    assert info.frames == 5 and info.frames_from == "packets"  # Matroska has no frame count
    out = read_video(tmp_path / "grey.mkv")
    assert out.shape == (5, 8, 16, 3)
    assert all(np.array_equal(out[..., c], grey) for c in range(3))

    rgba = np.zeros((3, 8, 16, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.array([0, 255, 128, 255] * 4, np.uint8)
    _encode_raw(tmp_path / "alpha.mov", "png", "rgba", "rgba", rgba)
    out = read_video(tmp_path / "alpha.mov")
    assert out[0, 0, 0].tolist() == [255, 255, 255]  # transparent -> white
    assert out[0, 0, 1].tolist() == [200, 0, 0]  # opaque -> its colour
    assert out[0, 0, 2].tolist() == [227, 127, 127]  # half -> blend with white


# --- video writing ------------------------------------------------------------------------------


def test_mp4_round_trip_psnr(tmp_path):
    frames = shapes_uint8(frames=17, height=48, width=64)
    path = write_video(tmp_path / "clip.mp4", frames, fps=25, crf=12)
    info = probe_video(path)
    assert (info.frames, info.width, info.height, info.fps) == (17, 64, 48, 25.0)
    back = read_video(path)
    assert back.shape == frames.shape
    assert psnr(back, frames) > 30.0
    # The same bytes decode from memory (how shards read them).
    assert np.array_equal(read_video(path.read_bytes(), start=4, num_frames=5), back[4:9])


def test_mp4_odd_size_pad_and_crop(tmp_path):
    frames = shapes_uint8(frames=5, height=33, width=47)
    padded = read_video(write_video(tmp_path / "pad.mp4", frames, crf=12))
    assert padded.shape == (5, 34, 48, 3)
    assert psnr(padded[:, :33, :47], frames) > 30.0
    cropped = read_video(write_video(tmp_path / "crop.mp4", frames, crf=12, odd_size="crop"))
    assert cropped.shape == (5, 32, 46, 3)
    assert psnr(cropped, frames[:, :32, :46]) > 30.0
    with pytest.raises(VistokError, match="uint8"):
        write_video(tmp_path / "x.mp4", frames.astype(np.float32))
    with pytest.raises(VistokError, match=".gif"):
        write_video(tmp_path / "x.avi", frames)


def test_gif_round_trip(tmp_path):
    frames = shapes_uint8(frames=9, height=40, width=56, seed=2)
    path = write_video(tmp_path / "clip.gif", frames, fps=10)
    info = probe_video(path)
    assert info.frames == 9 and abs(info.fps - 10.0) < 0.5
    back = read_video(path)
    assert back.shape == frames.shape
    assert psnr(back, frames) > 22.0  # 256-colour palette per frame: lossy, but close


# --- images -------------------------------------------------------------------------------------


def test_read_image_modes(tmp_path):
    grey = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (12, 20, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[..., 3] = [[0, 255, 128], [255, 0, 255]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    white = read_image(tmp_path / "rgba.png")
    assert white[0, 0].tolist() == [255, 255, 255] and white[0, 1].tolist() == [10, 200, 30]
    assert white[0, 2].tolist() == [(10 * 128 + 255 * 127 + 127) // 255, (200 * 128 + 255 * 127 + 127) // 255,
                                   (30 * 128 + 255 * 127 + 127) // 255]
    assert np.array_equal(read_image(tmp_path / "rgba.png", alpha="drop"), rgba[..., :3])

    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * (3 * 254))
    palette.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    palette.save(tmp_path / "palette.png")
    out = read_image(tmp_path / "palette.png")
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [0, 0, 255]

    deep = np.array([[0, 257, 257 * 100], [65535, 257 * 254, 128]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # a real 16-bit PNG
    out = read_image(tmp_path / "deep.png")
    assert out[..., 0].tolist() == [[0, 1, 100], [255, 254, 0]]

    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(VistokError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    # A truncated PNG opens (the header is intact) but must fail on decode, not return garbage.
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:3000])
    with pytest.raises(VistokError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_write_image_round_trip(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert np.array_equal(read_image(write_image(tmp_path / "a.png", image)), image)
    with pytest.raises(VistokError, match="png"):
        write_image(tmp_path / "a.jpg", image)


# --- transforms ---------------------------------------------------------------------------------


def test_transforms():
    frames = np.random.default_rng(0).integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    video = to_tensor(frames)
    assert video.shape == (3, 2, 30, 50) and np.array_equal(to_uint8(video), frames)
    assert resize_shorter(video, 12).shape == (3, 2, 12, 20)
    assert resize_shorter(torch.from_numpy(frames).permute(3, 0, 1, 2), 12).dtype == torch.uint8
    # Antialiasing: a 1-pixel checkerboard shrunk 4x must average to grey, not alias to black/white.
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    small = resize_shorter(to_tensor(np.repeat(checker[None, ..., None], 3, -1)), 16)
    assert float(small.abs().max()) < 0.05
    assert torch.equal(center_crop(video, 10, 20), video[..., 10:20, 15:35])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(random_crop(video, 8, 8, generator=g1), random_crop(video, 8, 8, generator=g2))
    with pytest.raises(VistokError, match="resize first"):
        center_crop(video, 40, 40)


# --- datasets -----------------------------------------------------------------------------------


@pytest.fixture()
def mixed_folder(tmp_path, bikes):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    write_video(root / "good.mp4", shapes_uint8(frames=21, height=40, width=56), crf=20)
    write_image(root / "sub" / "good.png", shapes_uint8(frames=1, height=30, width=40)[0])
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "truncated.mp4").write_bytes(bikes.read_bytes()[:2048])
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("not a video\n")
    write_video(root / "sub" / "short.mp4", shapes_uint8(frames=3, height=40, width=56))
    bad = {"corrupt.mp4", "truncated.mp4", "empty.mp4", "notes.txt", "short.mp4"}
    return root, bad


def test_clip_dataset_skips_bad_files(mixed_folder, monkeypatch):
    root, bad = mixed_folder

    def no_decoding(*args, **kwargs):
        raise AssertionError("building the index must only probe, never decode")

    with monkeypatch.context() as m:
        m.setattr(datasets_module, "read_video", no_decoding)
        m.setattr(datasets_module, "read_image", no_decoding)
        with pytest.warns(UserWarning) as record:
            ds = ClipDataset(root, frames=17, size=32, seed=0)
    message = "\n".join(str(w.message) for w in record)
    assert all(name in message for name in bad)
    assert {p.split("/")[-1] for p, _ in ds.skipped} == bad
    reasons = {p.split("/")[-1]: r for p, r in ds.skipped}
    assert "too short" in reasons["short.mp4"] and "3 frame" in reasons["short.mp4"]
    assert reasons["empty.mp4"] == "empty file"
    assert len(ds) == 2 and sorted(ds.kinds) == ["image", "video"]
    for i in range(len(ds)):
        item = ds[i]
        t = 17 if item["kind"] == "video" else 1
        assert item["video"].shape == (3, t, 32, 32) and item["video"].dtype == torch.float32
        assert -1.0 <= float(item["video"].min()) and float(item["video"].max()) <= 1.0
        assert item["path"].endswith("good.mp4" if t == 17 else "good.png")


def test_folder_of_only_bad_files_raises(mixed_folder):
    root, bad = mixed_folder
    for name in ("good.mp4", "sub/good.png"):
        (root / name).unlink()
    with pytest.raises(VistokError) as err:
        ClipDataset(root, frames=17, size=32)
    assert all(name in str(err.value) for name in bad)


def test_damaged_file_found_at_load_is_replaced(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", shapes_uint8(frames=1, height=20, width=20, seed=i)[0])
    data = (tmp_path / "img1.png").read_bytes()
    (tmp_path / "img1.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    ds = ClipDataset(tmp_path, frames=1, size=16, random_crop=False)
    assert len(ds) == 3 and not ds.skipped  # probing reads headers only
    with pytest.warns(UserWarning, match="img1.png"):
        item = ds[1]
    assert item["path"].endswith("img2.png")
    assert [p.split("/")[-1] for p, _ in ds.skipped] == ["img1.png"]


def test_clip_dataset_deterministic_by_seed(bikes):
    a = ClipDataset([bikes], frames=5, size=24, stride=3, seed=7)
    b = ClipDataset([bikes], frames=5, size=24, stride=3, seed=7)
    first = a[0]
    assert torch.equal(first["video"], b[0]["video"]) and first["start"] == b[0]["start"]
    assert first["video"].shape == (3, 5, 24, 24)
    starts = set()
    for epoch in range(4):
        a.set_epoch(epoch)
        starts.add(a[0]["start"])
    assert len(starts) > 1  # new clips each epoch
    assert all(0 <= s <= 250 - 13 for s in starts)
    evaluation = ClipDataset([bikes], frames=5, size=24, random_crop=False)
    assert evaluation[0]["start"] == 0
    with pytest.raises(VistokError, match="1 \\+ 4k"):
        ClipDataset([bikes], frames=16)


def test_mixed_batch_sampler_homogeneous_and_split():
    kinds = ["video"] * 10 + ["image"] * 7
    batches = list(MixedBatchSampler(kinds, batch_size=3, image_batch_size=4, video_fraction=0.25, num_batches=12))
    assert len(batches) == 12
    types = [{kinds[i] for i in b} for b in batches]
    assert all(len(t) == 1 for t in types)  # every batch is all clips or all images
    assert sum(t == {"video"} for t in types) == 3  # exactly a quarter
    assert all(len(b) == (3 if t == {"video"} else 4) for b, t in zip(batches, types))

    per_rank = [
        list(MixedBatchSampler(kinds, batch_size=2, video_fraction=0.5, num_batches=6, rank=r, world_size=2))
        for r in range(2)
    ]
    for step in range(6):
        a, b = per_rank[0][step], per_rank[1][step]
        assert {kinds[i] for i in a} == {kinds[i] for i in b}  # same t on every rank at a step
        assert not set(a) & set(b)
    # Without a fixed length, one epoch shows each clip about once.
    default = list(MixedBatchSampler(kinds, batch_size=2, video_fraction=0.5))
    seen = [i for b in default for i in b if kinds[i] == "video"]
    assert sorted(seen) == list(range(10))
    with pytest.raises(VistokError, match="no images"):
        MixedBatchSampler(["video"] * 4, batch_size=2, video_fraction=0.5)


def test_sampler_collate_with_dataloader(mixed_folder):
    root, _ = mixed_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ClipDataset(root, frames=5, size=16, seed=0)
    sampler = MixedBatchSampler(ds, batch_size=2, video_fraction=0.5, num_batches=4)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_clips)
    shapes = [tuple(batch["video"].shape) for batch in loader]
    assert sorted(set(shapes)) == [(2, 3, 1, 16, 16), (2, 3, 5, 16, 16)]
    with pytest.raises(VistokError, match="MixedBatchSampler"):
        collate_clips([ds[0], ds[1]])


# --- shards -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    src = tmp_path_factory.mktemp("shard_src")
    for i in range(4):
        write_video(src / f"clip{i}.mp4", shapes_uint8(frames=9, height=24, width=32, seed=i), crf=28)
    for i in range(3):
        write_image(src / f"img{i}.png", shapes_uint8(frames=1, height=24, width=32, seed=10 + i)[0])
    out = tmp_path_factory.mktemp("shards")
    shards = write_shards(src, out, max_count=2, max_size_bytes=10**9)
    return out, shards, src


def _keys(dataset_or_loader) -> list[str]:
    return [item["key"] for item in dataset_or_loader]


def test_write_shards_layout(shard_dir):
    out, shards, src = shard_dir
    assert [p.name for p in shards] == [f"shard-{i:06d}.tar" for i in range(4)]
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile(names[1]).read())
    assert names == ["000000000.mp4", "000000000.json", "000000001.mp4", "000000001.json"]
    assert meta["kind"] == "video" and meta["frames"] == 9 and meta["path"].endswith("clip0.mp4")
    with pytest.raises(VistokError, match="overwrite"):
        write_shards(shards, out)
    # A size limit smaller than one sample puts every sample in a shard of its own.
    singles = write_shards(src, out / "tiny", max_size_bytes=1, max_count=100)
    assert len(singles) == 7


def test_shards_stream_every_sample_once(shard_dir):
    out, _, _ = shard_dir
    expected = sorted(f"{i:09d}" for i in range(7))
    ds = ShardDataset(out, frames=5, size=16, shuffle_buffer=3)
    items = list(ds)
    assert sorted(item["key"] for item in items) == expected
    assert {tuple(it["video"].shape) for it in items} == {(3, 5, 16, 16), (3, 1, 16, 16)}
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    assert sorted(_keys(loader)) == expected


def test_shards_rank_split_disjoint_and_covering(shard_dir):
    out, _, _ = shard_dir
    expected = sorted(f"{i:09d}" for i in range(7))
    for world in (2, 3):
        parts = [_keys(ShardDataset(out, frames=5, size=16, rank=r, world_size=world, seed=1)) for r in range(world)]
        assert sorted(k for p in parts for k in p) == expected, world
        assert all(p for p in parts)
    # More readers than shards: a warning, then samples are split instead, still exactly once.
    with pytest.warns(UserWarning, match="falling back"):
        parts = [_keys(ShardDataset(out, frames=5, size=16, rank=r, world_size=6)) for r in range(6)]
    assert sorted(k for p in parts for k in p) == expected


@pytest.mark.parametrize("num_shards", range(1, 8))
def test_assign_shards_covers_every_sample_once(num_shards):
    samples_per_shard = [3 + (s % 3) for s in range(num_shards)]
    for world in (1, 2, 3):
        for workers in (1, 2, 3):
            owners: dict[tuple[int, int], int] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for rank in range(world):
                    for worker in range(workers):
                        shards, mod, rem = assign_shards(num_shards, rank, world, worker, workers)
                        for s in shards:
                            for j in range(samples_per_shard[s]):
                                if (s + j) % mod == rem:
                                    assert (s, j) not in owners
                                    owners[(s, j)] = rank
            assert len(owners) == sum(samples_per_shard)
            if num_shards >= world:  # each rank reads its own shards
                by_shard = {}
                for (s, _), rank in owners.items():
                    by_shard.setdefault(s, set()).add(rank)
                assert all(len(r) == 1 for r in by_shard.values())


def test_shard_bad_member_skipped(tmp_path):
    good = io.BytesIO()
    Image.fromarray(shapes_uint8(frames=1, height=20, width=20)[0]).save(good, format="PNG")
    path = tmp_path / "mixed.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("a.mp4", b"garbage" * 100), ("a.json", b'{"kind": "video", "frames": 30}'),
                           ("b.png", good.getvalue()), ("c.txt", b"hello")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.warns(UserWarning) as record:
        items = list(ShardDataset(path, frames=5, size=16))
    assert [it["key"] for it in items] == ["b"]
    message = "\n".join(str(w.message) for w in record)
    assert "a.mp4" in message and ":c" in message


# --- samples and synthetic ----------------------------------------------------------------------


def test_sample_data_found_without_importing_skvideo(bikes):
    already = {m for m in ("skvideo", "skimage") if m in sys.modules}  # other tests may import skimage
    clips = sample_clips()
    assert [p.stem for p in clips] == ["bikes", "bigbuckbunny", "carphone_pristine"]
    assert all(p.is_file() for p in clips + sample_images())
    assert heldout_clip().stem == "carphone_pristine"
    train = training_files()
    assert heldout_clip() not in train and all("distorted" not in p.name for p in train)
    assert len(train) == 2 + len(sample_images())
    for module in {"skvideo", "skimage"} - already:
        assert module not in sys.modules


def test_sample_data_missing_package_message(monkeypatch):
    monkeypatch.setattr(samples_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VistokError, match="pip install absolutely-not-scikit-video scikit-image"):
        sample_clips()


def test_synthetic_video_deterministic_by_seed():
    a = moving_shapes(frames=9, height=32, width=40, seed=5)
    assert a.shape == (3, 9, 32, 40) and a.dtype == torch.float32
    assert torch.equal(a, moving_shapes(frames=9, height=32, width=40, seed=5))
    assert not torch.equal(a, moving_shapes(frames=9, height=32, width=40, seed=6))
    assert -1.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert (a[:, -1] - a[:, 0]).abs().max() > 0.5  # shapes move
    # A longer clip starts with the shorter one: frame i does not depend on the clip length.
    assert torch.equal(moving_shapes(frames=17, height=32, width=40, seed=5)[:, :9], a)
    flat = moving_shapes(frames=1, height=16, width=16, num_shapes=0, background="flat", seed=1)
    assert torch.equal(flat.amax(dim=(1, 2, 3)), flat.amin(dim=(1, 2, 3)))  # one colour per channel
    batch = moving_shapes_batch(3, seed=0, frames=5, height=16, width=16)
    assert batch.shape == (3, 3, 5, 16, 16) and not torch.equal(batch[0], batch[1])
