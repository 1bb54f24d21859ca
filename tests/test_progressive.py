"""Progressive training (image stage, then joint image + video) and warm starts (VQ -> KL)."""

import json
from pathlib import Path

import pytest
from torchrun_launch import run_two_ranks
import torch

import vistok
from vistok.errors import VistokError
from vistok.train.config import load_train_config, stage_plan
from vistok.train.logging import read_metrics
from vistok.train.trainer import Trainer, train

from conftest import tiny_train_overrides

OMNI_SMALL = {"dim": 32, "heads": 2, "encoder_depth": 1, "decoder_depth": 1, "mlp_ratio": 2.0, "codebook_size": 64}
STAGES = "stages=[{name: image, steps: 2, data: {image_fraction: 1.0}}, {name: joint, steps: 3, data: {image_fraction: 0.5}}]"


def omni_overrides(media_dir, **extra):
    return tiny_train_overrides(media_dir, **extra) + [
        "model_type=omni", "preset=omni-tiny", f"model={OMNI_SMALL}", STAGES, "checkpoint_every=1", "optim.lr=0.002",
    ]


def rows_by_step(run):
    return {r["step"]: {k: v for k, v in r.items() if k not in ("time", "steps_per_s")} for r in read_metrics(run / "metrics.jsonl")}


def test_stage_plan_and_validation(media_dir):
    cfg = load_train_config("tiny", omni_overrides(media_dir))
    assert cfg.steps == 5
    plan = stage_plan(cfg)
    assert [(a, b) for a, b, _ in plan] == [(0, 2), (2, 5)]
    assert [c.data.image_fraction for *_, c in plan] == [1.0, 0.5]
    assert all(c.data.size == 32 and not c.stages for *_, c in plan)
    with pytest.raises(VistokError, match="image_fractoin"):
        load_train_config("tiny", omni_overrides(media_dir) + ["stages=[{steps: 2, data: {image_fractoin: 1.0}}]"])
    with pytest.raises(VistokError, match="steps"):
        load_train_config("tiny", omni_overrides(media_dir) + ["stages=[{steps: 0}]"])
    assert load_train_config("omni-tiny").steps == 300


def test_total_steps_rescale_the_stages():
    """``--steps N`` with staged presets trains N steps, the stages keeping their proportions."""
    cfg = load_train_config("omni-tiny", ["steps=40"])
    assert cfg.steps == 40 and [s.steps for s in cfg.stages] == [20, 20]
    cfg = load_train_config("omni-tiny", ["stages=[{steps: 1}, {steps: 8}, {steps: 1}]", "steps=5"])
    assert [s.steps for s in cfg.stages] == [1, 3, 1]
    same = load_train_config("omni-tiny", ["stages=[{steps: 3}, {steps: 7}]", "steps=10"])
    assert [s.steps for s in same.stages] == [3, 7]
    assert load_train_config("omni-tiny", ["stages=[]"]).steps == 1000  # no stages, no steps: the default
    with pytest.raises(VistokError, match="stages"):
        load_train_config("omni-tiny", ["steps=1"])
    # the later setting wins: stages given after a preset's steps define the total
    assert load_train_config("tiny", ["stages=[{steps: 2}, {steps: 3}]"]).steps == 5
    assert load_train_config("tiny", ["stages=[{steps: 2}, {steps: 3}]", "steps=10"]).steps == 10


def test_stages_use_their_data(media_dir, tmp_path):
    cfg = load_train_config("tiny", omni_overrides(media_dir))
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    frames = [next(trainer.batches).shape[2] for _ in range(5)]
    assert frames[:2] == [1, 1]  # image-only stage
    assert 9 in frames[2:] and 1 in frames[2:]  # joint stage: clips and images
    with pytest.raises(StopIteration):
        next(trainer.batches)
    trainer.close()


@pytest.mark.parametrize("stop", [1, 2, 4])  # inside stage 1, exactly at the boundary, inside stage 2
def test_resume_across_stages_equals_uninterrupted(media_dir, tmp_path, stop):
    cfg = load_train_config("tiny", omni_overrides(media_dir))
    full = train(cfg, tmp_path / "full", quiet=True)
    assert full.step == 5
    part = train(cfg, tmp_path / "part", quiet=True, stop_after=stop)
    assert part.step == stop
    resumed = train(cfg, tmp_path / "part", quiet=True, resume=True)
    assert resumed.step == 5
    assert rows_by_step(tmp_path / "full") == rows_by_step(tmp_path / "part")
    a, b = vistok.load_tokenizer(tmp_path / "full"), vistok.load_tokenizer(tmp_path / "part")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_kl_fine_tune_from_vq(media_dir, tmp_path):
    vq_cfg = load_train_config("tiny", omni_overrides(media_dir))
    vq = train(vq_cfg, tmp_path / "vq", quiet=True)
    kl_cfg = load_train_config(
        "tiny", omni_overrides(media_dir) + ["model.bottleneck=kl", f"init_from={tmp_path / 'vq'}", "stages=[]", "steps=2"]
    )
    trainer = Trainer(kl_cfg, tmp_path / "kl", quiet=True)
    assert trainer.fresh_parameters and all(n.startswith(("encoder.to_latent", "decoder.from_code")) for n in trainer.fresh_parameters)
    src = vistok.load_tokenizer(vq.model_dir).state_dict()
    for k, v in trainer.tokenizer.state_dict().items():
        if k in src and not k.startswith(("encoder.to_latent", "decoder.from_code", "quantizer")):
            assert torch.equal(v, src[k]), k
    res = trainer.fit()
    trainer.close()
    kl = vistok.load_tokenizer(res.model_dir)
    assert kl.vocab_size is None and res.step == 2
    # another architecture is refused
    bad = load_train_config("tiny", omni_overrides(media_dir) + [f"init_from={tmp_path / 'vq'}", "model.dim=64"])
    with pytest.raises(VistokError, match="architectures differ"):
        Trainer(bad, tmp_path / "bad", quiet=True)
    magvit = load_train_config("tiny", tiny_train_overrides(media_dir) + [f"init_from={tmp_path / 'vq'}"])
    with pytest.raises(VistokError, match="cannot initialize"):
        Trainer(magvit, tmp_path / "bad2", quiet=True)


def test_torchrun_two_ranks_image_stage(media_dir, tmp_path):
    """Under DDP an image batch leaves the 4-frame patch embedding and head without gradients; the
    run must go on (not wait for them) and the replicas stay identical."""
    worker = Path(__file__).with_name("train_ddp_worker.py")
    run = run_two_ranks(worker, lambda out: [media_dir, out, "omni"], tmp_path)
    sums = [json.loads((run / f"rank{r}.json").read_text()) for r in range(2)]
    assert sums[0]["params"] == sums[1]["params"] and sums[0]["batches_differ"]
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]
