"""Memory budgets and streaming reconstruction: the live-tensor count is exact on real tensors and
the same on "meta", the chosen chunk is the longest that fits, reconstruction streams its frames
to the sink identically for any chunk length, and a file shorter than its header is used up to
its last whole latent frame."""

import numpy as np
import pytest
import torch

import vistok
from vistok.cli import main
from vistok.errors import VistokError
from vistok.pipelines.budget import (HEADROOM, LiveTensorBytes, choose_chunk_frames, meta_copy, parse_bytes,
                                     streaming_peak_bytes)
from vistok.pipelines.reconstruct import iter_input_chunks, plan_media, reconstruct_file


def test_parse_bytes():
    assert parse_bytes("2G") == 2 * 2**30 and parse_bytes("512M") == 512 * 2**20
    assert parse_bytes("1.5GiB") == 3 * 2**29 and parse_bytes("1000") == 1000 and parse_bytes("64kb") == 65536
    for bad in ("", "two", "-1G", "0", "5X", "1..2G"):
        with pytest.raises(VistokError):
            parse_bytes(bad)


def test_live_tensor_bytes_counts_allocations_not_views():
    with LiveTensorBytes() as m:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 4000 more
        v = b[10:20].view(2, 5)  # a view: no new storage
        b.mul_(3)  # in place: no new storage
        assert m.now == 8000
        del a
        assert m.now == 4000
        c = torch.cat([b, b])  # 8000
        del c
    assert m.peak == 12000 and m.now == 4000 and v.shape == (2, 5)


def test_meta_plan_equals_real_count(model_dir):
    """The planner's count on shape-only tensors equals the count on real ones, op for op."""
    tok = vistok.load_tokenizer(model_dir)
    for chunk, frames in ((4, None), (8, 13), (4, 1)):
        real = streaming_peak_bytes(tok, 40, 48, chunk, frames=frames)
        assert real > 0 and streaming_peak_bytes(meta_copy(tok), 40, 48, chunk, frames=frames) == real
    assert streaming_peak_bytes(tok, 40, 48, 8) > streaming_peak_bytes(tok, 40, 48, 4)


def test_choose_chunk_frames_takes_the_longest_that_fits(model_dir):
    tok = vistok.load_tokenizer(model_dir)
    meta = meta_copy(tok)
    assert choose_chunk_frames(tok, 64, 64, 2**40, frames=200, fixed=0).chunk_frames == 16
    assert choose_chunk_frames(tok, 64, 64, 2**40, frames=9, fixed=0).chunk_frames == 8  # no longer than the clip
    peak8 = streaming_peak_bytes(meta, 64, 64, 8, frames=200)
    exact = choose_chunk_frames(tok, 64, 64, int(HEADROOM * peak8) + 10**6, frames=200, fixed=10**6)
    assert exact.chunk_frames == 8 and exact.estimated_bytes <= exact.budget
    assert HEADROOM * streaming_peak_bytes(meta, 64, 64, 12, frames=200) > exact.budget - 10**6  # 12 would not fit
    no_metrics = choose_chunk_frames(tok, 64, 64, 2**40, frames=200, fixed=0, metrics=False, decode=False)
    assert no_metrics.estimated_bytes <= choose_chunk_frames(tok, 64, 64, 2**40, frames=200, fixed=0).estimated_bytes
    with pytest.raises(VistokError, match="over the memory budget"):
        choose_chunk_frames(tok, 64, 64, 1000, frames=200)


def test_reconstruction_streams_the_same_frames_for_any_chunk(model_dir, media_dir):
    tok = vistok.load_tokenizer(model_dir)
    clip = media_dir / "clip0.mp4"
    kept = reconstruct_file(tok, clip, chunk_frames=4)
    sunk = []
    streamed = reconstruct_file(tok, clip, chunk_frames=8, sink=sunk.append, keep_frames=False)
    assert streamed.original is None and streamed.reconstructed is None
    assert [len(s) for s in sunk] == [1, 8, 4]  # the first frame alone, then chunks
    assert np.array_equal(np.concatenate(sunk), kept.reconstructed)
    assert np.array_equal(streamed.tokens, kept.tokens)
    assert streamed.metrics["psnr_per_frame"] == kept.metrics["psnr_per_frame"]
    planned = reconstruct_file(tok, clip, max_memory=2**40)  # the budget picks the chunk
    assert planned.chunk.chunk_frames == 12 and np.array_equal(planned.tokens, kept.tokens)


def test_a_file_shorter_than_its_header_is_used_to_its_last_latent_frame(model_dir, media_dir):
    tok = vistok.load_tokenizer(model_dir)
    plan = plan_media(tok, media_dir / "clip0.mp4")  # 14 frames in the file, 13 used
    plan.frames = 21  # as if the header promised 21
    chunks = list(iter_input_chunks(plan, 8, 4))
    assert [c.shape[2] for c in chunks] == [1, 8, 4] and "ended after 14 of the 21" in plan.notes[-1]
    assert "used 13" in plan.notes[-1]


def test_cli_memory_budget_errors(capsys, model_dir, media_dir, tmp_path):
    out = tmp_path / "r.mp4"
    assert main(["reconstruct", str(model_dir), str(media_dir / "clip0.mp4"), str(out), "--max-memory", "1K"]) == 2
    err = capsys.readouterr().err
    assert "over the memory budget" in err and "Traceback" not in err and not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(model_dir), str(media_dir / "clip0.mp4"), str(out), "--max-memory", "lots"])
    assert e.value.code == 2 and not out.exists()
    assert main(["reconstruct", str(model_dir), str(media_dir / "clip0.mp4"), str(out), "--max-memory", "8G"]) == 0
    assert "memory: chunks of 12 frames" in capsys.readouterr().err and out.exists()


@pytest.mark.parametrize("bottleneck", ["vq", "lfq", "kl"])
def test_meta_plan_of_an_omnitokenizer_equals_real_count(bottleneck):
    """Memory planning runs the network on "meta", where autocast does not exist: the quantizers
    turn it off only where it does (a VQ OmniTokenizer's `vistok eval` once died with a traceback)."""
    from vistok.tokenizers.omni import OmniConfig, OmniTokenizer

    torch.manual_seed(0)
    cfg = dict(dim=32, heads=2, encoder_depth=1, decoder_depth=1, mlp_ratio=2.0, spatial_window=2, codebook_size=64,
               bottleneck=bottleneck)
    tok = OmniTokenizer(OmniConfig.from_dict(cfg)).eval()
    real = streaming_peak_bytes(tok, 32, 32, 4, frames=9, metrics=False)
    assert real > 0 and streaming_peak_bytes(meta_copy(tok), 32, 32, 4, frames=9, metrics=False) == real
    assert choose_chunk_frames(tok, 32, 32, 2**40, frames=9, fixed=0).chunk_frames == 8
