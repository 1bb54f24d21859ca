"""Spatial tiling (issue 16): windows cover the frame on the model's grid, blend weights sum to
one, each tile streams through time exactly as its crop would alone, one tile is the whole-frame
path itself, and the CLI takes --tile with clear refusals."""

import json

import pytest
import torch

from vistok.cli import main
from vistok.errors import VistokError
from vistok.pipelines.reconstruct import plan_media, reconstruct_media
from vistok.pipelines.tiling import TiledReconstruction, blend_weights, tile_windows
from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer

from conftest import TINY_MODEL


@pytest.mark.parametrize("length,tile,overlap", [(40, 16, 8), (48, 24, 8), (64, 32, 0), (56, 16, 8), (40, 40, 8), (40, 64, 8)])
def test_windows_cover_the_frame_on_the_grid(length, tile, overlap):
    wins = tile_windows(length, tile, overlap, 8)
    assert wins[0][0] == 0 and wins[-1][1] == length
    for (a, b), (c, d) in zip(wins, wins[1:]):
        assert c - a > 0 and b - c >= overlap  # advancing, neighbours share at least the overlap
    assert all(a % 8 == 0 and b - a == min(tile, length) for a, b in wins)
    weights = blend_weights(wins, length)
    total = torch.zeros(length)
    for (a, b), w in zip(wins, weights):
        assert (w > 0).all()
        total[a:b] += w
    torch.testing.assert_close(total, torch.ones(length))


def test_bad_tiles_are_refused():
    with pytest.raises(VistokError, match="multiples of 8"):
        tile_windows(40, 12, 0, 8)
    with pytest.raises(VistokError, match="less than --tile"):
        tile_windows(40, 16, 16, 8)


def _tok():
    torch.manual_seed(0)
    return Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL)).eval()


def test_each_tile_streams_as_its_crop_alone():
    """No overlap: every pixel comes from one tile, whose stream (own causal caches, three chunks)
    must equal reconstructing that crop of the whole clip at once."""
    tok = _tok()
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    tiles = TiledReconstruction(tok, 32, 48, 16, 0)
    assert len(tiles) == 2 * 3
    chunks = [video[:, :, :1], video[:, :, 1:5], video[:, :, 5:]]
    out = torch.cat([x for x, _ in tiles.run(iter(chunks))], dim=2)
    with torch.no_grad():
        for (y0, y1), (x0, x1) in tiles.windows:
            alone = tok(video[..., y0:y1, x0:x1]).x_hat
            torch.testing.assert_close(out[..., y0:y1, x0:x1], alone, rtol=1e-5, atol=1e-5)


def test_one_tile_is_the_whole_frame_path(media_dir):
    tok = _tok()
    plan = plan_media(tok, media_dir / "clip0.mp4")
    whole = reconstruct_media(tok, plan, 4)
    one = reconstruct_media(tok, plan, 4, tile=64, tile_overlap=8)
    assert (one.reconstructed == whole.reconstructed).all() and (one.tokens == whole.tokens).all()
    tiled = reconstruct_media(tok, plan, 4, tile=24, tile_overlap=8)  # 40x48: 2 x 3 tiles of 24
    assert tiled.tokens is None and tiled.metrics["tiles"] == 6 and tiled.metrics["tile"] == [24, 24]
    assert tiled.metrics["tokens"] == 6 * 4 * 3 * 3 and tiled.reconstructed.shape == whole.reconstructed.shape


def test_cli_tiles_and_refuses_bad_tiles(capsys, model_dir, media_dir, tmp_path):
    out = tmp_path / "r.mp4"
    code = main(["reconstruct", str(model_dir), str(media_dir / "clip0.mp4"), str(out), "--tile", "24",
                 "--tile-overlap", "8", "--metrics", str(tmp_path / "m.json")])
    text = capsys.readouterr().out
    assert code == 0 and "6 tiles of 24x24" in text and out.is_file()
    assert json.loads((tmp_path / "m.json").read_text())["tiles"] == 6
    code = main(["reconstruct", str(model_dir), str(media_dir / "clip0.mp4"), str(tmp_path / "b.mp4"), "--tile", "20"])
    err = capsys.readouterr().err
    assert code == 2 and "multiples of 8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.mp4").exists()
