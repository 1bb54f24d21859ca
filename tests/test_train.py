"""Trainer invariants: resume equals uninterrupted, 2-rank torchrun stays in sync, divergence is
reported with its step, outputs (metrics, pictures, model) are written."""

import json
from pathlib import Path

import pytest
from torchrun_launch import run_two_ranks
import torch

import vistok
from vistok.losses.objective import TokenizerLoss
from vistok.train.config import load_train_config
from vistok.train.logging import read_metrics
from vistok.train.trainer import TrainingDiverged, train

from conftest import tiny_train_overrides


def losses_by_step(out):
    return {r["step"]: (r["loss"], r["recon"], r["grad_norm"]) for r in read_metrics(Path(out) / "metrics.jsonl")}


def test_resume_equals_uninterrupted(media_dir, tmp_path):
    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=6))
    full = train(cfg, tmp_path / "full", quiet=True)
    assert full.step == 6
    part = train(cfg, tmp_path / "part", quiet=True, stop_after=3)  # "killed" after the step-3 checkpoint
    assert part.step == 3 and not (tmp_path / "part" / "model").exists()
    resumed = train(cfg, tmp_path / "part", quiet=True, resume=True)
    assert resumed.step == 6
    a, b = losses_by_step(tmp_path / "full"), losses_by_step(tmp_path / "part")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert a == b  # bit-identical losses, recon and gradient norms on every step, before and after resuming
    ta, tb = vistok.load_tokenizer(tmp_path / "full"), vistok.load_tokenizer(tmp_path / "part")
    for (k, va), vb in zip(ta.state_dict().items(), tb.state_dict().values()):
        assert torch.equal(va, vb), k


def test_outputs_written_and_loss_falls(media_dir, tmp_path):
    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=12) + ["optim.lr=0.003"])
    res = train(cfg, tmp_path / "run", quiet=True)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 12
    assert {"codes_used", "perplexity", "usage_fraction", "psnr", "lr"} <= set(rows[-1])
    first, last = rows[0]["recon"], min(r["recon"] for r in rows[-3:])
    assert last < 0.7 * first
    assert (tmp_path / "run" / "recon_latest.png").stat().st_size > 0
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0
    assert len(list((tmp_path / "run" / "pictures").glob("recon_*.png"))) == 4
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["steps"] == 12
    tok = vistok.load_tokenizer(res.model_dir)
    assert tok.vocab_size == 2**10


def test_refuses_to_overwrite_a_run_without_resume(media_dir, tmp_path):
    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=1))
    train(cfg, tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, tmp_path / "run", quiet=True)


def test_non_finite_loss_is_reported_with_its_step(media_dir, tmp_path, monkeypatch):
    original = TokenizerLoss.generator_loss

    def poisoned(self, video, x_hat, quantizer_loss, step, discriminator=None, **kw):
        loss, stats = original(self, video, x_hat, quantizer_loss, step, discriminator, **kw)
        return (loss * float("nan") if step == 2 else loss), stats

    monkeypatch.setattr(TokenizerLoss, "generator_loss", poisoned)
    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=5))
    with pytest.raises(TrainingDiverged, match="step 2"):
        train(cfg, tmp_path / "run", quiet=True)


def test_bad_config_values_are_clear_errors(media_dir):
    with pytest.raises(ValueError, match="unknown config key"):
        load_train_config("tiny", ["optim.lrr=1"])
    with pytest.raises(ValueError, match="expected a number"):
        load_train_config("tiny", ["optim.lr=fast"])
    with pytest.raises(ValueError, match="expected a number"):
        load_train_config("tiny", ["optim.lr=nan"])
    # YAML 1.1 reads "2e-4" as a string; a float field takes it as the number it spells
    assert load_train_config("tiny", ["optim.lr=2e-4"]).optim.lr == 2e-4
    with pytest.raises(ValueError, match="neither a training preset"):
        load_train_config("no-such-preset")


def test_gan_and_bf16_path_runs(media_dir, tmp_path):
    cfg = load_train_config(
        "tiny",
        tiny_train_overrides(media_dir, steps=3)
        + ["loss.adversarial_weight=0.1", "loss.gan_start_step=1", "discriminator={preset: tiny}", "precision=bf16"],
    )
    train(cfg, tmp_path / "run", quiet=True)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert "g_adv" not in rows[0] and "d_loss" not in rows[0]  # warm-up: no GAN at step 0
    assert "g_adv" in rows[-1] and "d_loss" in rows[-1]


def test_torchrun_two_ranks_stay_in_sync(media_dir, tmp_path):
    worker = Path(__file__).with_name("train_ddp_worker.py")
    run = run_two_ranks(worker, lambda out: [media_dir, out], tmp_path)
    sums = [json.loads((run / f"rank{r}.json").read_text()) for r in range(2)]
    assert sums[0]["params"] == sums[1]["params"]  # DDP kept the replicas identical
    assert sums[0]["batches_differ"]  # ... while each rank saw its own data
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_perceptual_term_uses_installed_weights_by_name(media_dir, tmp_path, monkeypatch):
    """loss.perceptual_weight > 0 takes LPIPS-VGG from the vistok home; without it, one clear error
    naming the install command."""
    from vistok.errors import VistokError
    from vistok.metrics.perceptual import LPIPS
    from vistok.metrics.store import installed_weights

    monkeypatch.setenv("VISTOK_HOME", str(tmp_path / "home"))
    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=1) + ["loss.perceptual_weight=0.1"])
    with pytest.raises(VistokError, match="vistok weights install lpips-vgg"):
        train(cfg, tmp_path / "run", quiet=True)
    target = installed_weights("lpips-vgg")
    target.parent.mkdir(parents=True)
    torch.manual_seed(0)
    LPIPS(width=4).save_pretrained(target)
    res = train(cfg, tmp_path / "run2", quiet=True)
    rows = read_metrics(tmp_path / "run2" / "metrics.jsonl")
    assert res.step == 1 and rows[-1].get("perceptual", 0) > 0
