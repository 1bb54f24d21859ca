"""Training-crop scale, grey clips, and the diagnostics / trivial baseline that judge them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vistok.codec.baselines import block_means
from vistok.data import ClipDataset, to_uint8, write_video
from vistok.data.memory import InMemoryClipDataset
from vistok.data.transforms import cover, finish_clip, prepare_clip, to_grayscale
from vistok.errors import VistokError
from vistok.metrics.quality import chroma_scores, frame_scores
from vistok.train.config import DataConfig


def _colour_clip(t=5, h=96, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_cover_keeps_the_requested_scale():
    x = torch.from_numpy(_colour_clip()).permute(3, 0, 1, 2)  # (3 5 96 160)
    assert cover(x, 32, 32).shape[-2:] == (32, 53)  # no scale: the smallest cover
    assert cover(x, 32, 32, scale=96) is x  # already at that scale: untouched
    assert cover(x, 32, 32, scale=64).shape[-2:] == (64, 107)
    assert cover(x, 48, 128, scale=48).shape[-2:] == (77, 128)  # enlarged further only to hold the crop


def test_prepare_clip_scale_crops_native_pixels():
    frames = _colour_clip()
    g = torch.Generator().manual_seed(0)
    clip = prepare_clip(frames, 32, random=True, generator=g, scale=96)
    # every 32 x 32 window of the untouched frames is a candidate; the crop must be one of them
    u = to_uint8(clip)
    hits = [(i, j) for i in range(96 - 31) for j in range(160 - 31) if np.array_equal(frames[:, i:i + 32, j:j + 32], u)]
    assert len(hits) == 1


def test_grayscale_is_bt601_luma_in_every_channel():
    x = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=torch.uint8)
    video = x.T.reshape(3, 1, 1, 4)
    grey = to_grayscale(video)
    want = torch.tensor([76, 150, 29, 18], dtype=torch.uint8)  # round(.299 r + .587 g + .114 b)
    assert torch.equal(grey[0, 0, 0], want) and torch.equal(grey[1], grey[0]) and torch.equal(grey[2], grey[0])


def test_finish_clip_draws_nothing_without_grayscale():
    video = torch.from_numpy(_colour_clip(t=1, h=8, w=8)).permute(3, 0, 1, 2)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = finish_clip(video, 0.0, g1)
    assert torch.equal(out, video.float() / 127.5 - 1)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))  # no draw consumed
    assert torch.equal(finish_clip(video, 1.0, g1), to_grayscale(video).float() / 127.5 - 1)


def test_dataset_grey_share_and_validation(tmp_path):
    path = tmp_path / "c.mp4"
    write_video(path, _colour_clip(t=9, h=64, w=64, seed=1), fps=10, crf=0)
    ds = ClipDataset([path], frames=5, size=32, seed=0, grayscale=0.5)
    greys = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        v = ds[0]["video"]
        greys.append(bool(torch.equal(v[0], v[1]) and torch.equal(v[1], v[2])))
    assert 8 <= sum(greys) <= 32  # about half, never all or none
    cached = InMemoryClipDataset(ds)
    for epoch in range(5):  # the in-memory copy draws exactly as the decoding dataset
        ds.set_epoch(epoch)
        cached.set_epoch(epoch)
        assert torch.equal(ds[0]["video"], cached[0]["video"])
    evaluation = ClipDataset([path], frames=5, size=32, random_crop=False, grayscale=1.0)
    v = evaluation[0]["video"]
    assert not torch.equal(v[0], v[1])  # evaluation clips are never altered
    with pytest.raises(VistokError, match="scale"):
        ClipDataset([path], frames=5, size=32, scale=16)
    with pytest.raises(VistokError, match="grayscale"):
        ClipDataset([path], frames=5, size=32, grayscale=1.5)
    with pytest.raises(VistokError, match="data.scale"):
        DataConfig(size=64, scale=32)


def test_chroma_and_frame_position_scores():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (5, 16, 16, 1), dtype=np.uint8), 3, axis=-1)
    d = {**chroma_scores(grey, grey), **frame_scores(grey, grey, positions=True)}
    assert d["grey_input"] and d["chroma_error"] == 0 and d["psnr_first"] == 100
    tinted = grey.astype(np.int16)
    tinted[..., 2] += 10  # +10 blue: Cb +5, Cr -0.81
    tinted = tinted.clip(0, 255).astype(np.uint8)
    exact = np.abs((tinted.astype(float) - grey) @ np.array([-0.168736, -0.331264, 0.5])).mean()
    exact += np.abs((tinted.astype(float) - grey) @ np.array([0.5, -0.418688, -0.081312])).mean()
    assert chroma_scores(grey, tinted)["chroma_error"] == pytest.approx(exact / 2)
    later = grey.copy()
    later[1:] = 255 - later[1:]
    d = frame_scores(grey, later, positions=True)
    assert d["psnr_first"] == 100 and d["psnr_later"] < 10
    assert "psnr_first" not in frame_scores(grey, later)  # rd's rows keep their fields
    assert not chroma_scores(_colour_clip(t=2, h=4, w=4), _colour_clip(t=2, h=4, w=4))["grey_input"]
    assert frame_scores(grey[:1], grey[:1], positions=True)["psnr_later"] is None


def test_block_means_against_a_loop():
    rng = np.random.default_rng(1)
    f = rng.integers(0, 256, (2, 20, 13, 3), dtype=np.uint8)  # partial blocks at both edges
    out = block_means(f, 8)
    for t in range(2):
        for i in range(0, 20, 8):
            for j in range(0, 13, 8):
                block = f[t, i:i + 8, j:j + 8].reshape(-1, 3).astype(float)
                assert (out[t, i:i + 8, j:j + 8] == np.rint(block.mean(0)).astype(np.uint8)).all()
    assert out.shape == f.shape and out.dtype == np.uint8
    with pytest.raises(VistokError):
        block_means(f.astype(np.float32), 8)
