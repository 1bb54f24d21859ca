"""LM trainer: resume equals uninterrupted, outputs written, config checks, 2-rank torchrun."""

import json
from pathlib import Path

import pytest
from torchrun_launch import run_two_ranks
import torch

from lm_fixtures import TINY_LM, tiny_tokenizer, token_set
from vistok.errors import VistokError
from vistok.generate import load_lm
from vistok.generate.train import LMTrainer, TrainingDiverged, load_lm_train_config, train_lm
from vistok.train.logging import read_metrics


def cfg_for(data, *extra):
    return load_lm_train_config("lm-tiny", TINY_LM + [f"data={data}", *extra])


def per_step(out):
    return {r["step"]: (r["loss"], r["accuracy"], r["grad_norm"]) for r in read_metrics(Path(out) / "metrics.jsonl")}


@pytest.mark.parametrize("kind", ["mlm", "ar"])
def test_resume_equals_uninterrupted(tmp_path, kind):
    data = token_set(tmp_path / "set.npz", grid=(2, 2, 3))  # 12 grids / batch 4: epochs turn over twice
    cfg = cfg_for(data, "steps=7", "ema_decay=0.9", f"model.kind={kind}", "model.frame_condition_prob=0.5")
    full = train_lm(cfg, tmp_path / "full", quiet=True)
    assert full.step == 7
    part = train_lm(cfg, tmp_path / "part", quiet=True, stop_after=3)  # "killed" after the step-3 checkpoint
    assert part.step == 3 and not (tmp_path / "part" / "model").exists()
    resumed = train_lm(cfg, tmp_path / "part", quiet=True, resume=True)
    assert resumed.step == 7
    a, b = per_step(tmp_path / "full"), per_step(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 8))
    assert a == b  # bit-identical loss, accuracy and gradient norm on every step
    la, lb = load_lm(full.model_dir), load_lm(resumed.model_dir)
    for (k, va), vb in zip(la.state_dict().items(), lb.state_dict().values()):
        assert torch.equal(va, vb), k


def test_outputs_samples_and_export(tmp_path):
    tok, tok_dir = tiny_tokenizer(tmp_path / "tok")
    data = token_set(tmp_path / "set.npz", model_id=tok.model_id(), n=16)
    res = train_lm(cfg_for(data, "steps=6", f"tokenizer={tok_dir}", "optim.lr=0.003"), tmp_path / "run", quiet=True)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "lr", "grad_norm", "steps_per_s"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert len(list((tmp_path / "run" / "samples").glob("step_*.png"))) == 2
    assert (tmp_path / "run" / "samples_latest.png").stat().st_size > 0
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0
    lm = load_lm(res.model_dir)
    assert lm.config.tokenizer_id == tok.model_id() and lm.config.class_names == ["class0", "class1", "class2"]
    assert lm.config.max_grid == (1, 4, 4) and lm.config.vocab_size == 64 and lm.config.num_classes == 3
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["steps"] == 6


def test_time_budget_checkpoints_and_exports(tmp_path):
    data = token_set(tmp_path / "set.npz")
    res = train_lm(cfg_for(data, "steps=50"), tmp_path / "run", quiet=True, time_budget=1e-9)
    assert res.step == 1 and (res.model_dir / "model.safetensors").is_file()
    resumed = train_lm(cfg_for(data, "steps=2"), tmp_path / "run", quiet=True, resume=True)
    assert resumed.step == 2


def test_refusals(tmp_path):
    tok, tok_dir = tiny_tokenizer(tmp_path / "tok")
    data = token_set(tmp_path / "set.npz", model_id="another-tokenizer")
    with pytest.raises(VistokError, match="learned the tokens of tokenizer"):
        LMTrainer(cfg_for(data, f"tokenizer={tok_dir}"), tmp_path / "a")
    with pytest.raises(VistokError, match="fewer than one batch"):
        LMTrainer(cfg_for(data, "batch_size=64"), tmp_path / "b")
    with pytest.raises(VistokError, match="vocabulary"):
        LMTrainer(cfg_for(data, "model.vocab_size=128"), tmp_path / "c")
    unlabelled = token_set(tmp_path / "u.npz", classes=0)
    with pytest.raises(VistokError, match="no labels"):
        LMTrainer(cfg_for(unlabelled, "model.num_classes=3"), tmp_path / "d")
    with pytest.raises(VistokError, match="--data"):
        LMTrainer(load_lm_train_config("lm-tiny"), tmp_path / "e")
    train_lm(cfg_for(data, "steps=1"), tmp_path / "f", quiet=True)
    with pytest.raises(VistokError, match="--resume"):
        train_lm(cfg_for(data, "steps=1"), tmp_path / "f", quiet=True)
    with pytest.raises(VistokError, match="model config differs"):
        train_lm(cfg_for(data, "steps=2", "model.depth=3"), tmp_path / "f", quiet=True, resume=True)
    with pytest.raises(VistokError, match="unknown config key"):
        load_lm_train_config("lm-tiny", ["optim.lrr=1"])
    with pytest.raises(VistokError, match="neither an LM preset"):
        load_lm_train_config("lm-huge")


def test_unconditional_bf16_training_and_yaml_config(tmp_path):
    data = token_set(tmp_path / "u.npz", classes=0)
    yml = tmp_path / "lm.yaml"
    yml.write_text("base: lm-tiny\nsteps: 2\nmodel: {dim: 32, depth: 1, heads: 2}\nbatch_size: 4\n")
    cfg = load_lm_train_config(yml, [f"data={data}", "precision=bf16"])
    res = train_lm(cfg, tmp_path / "run", quiet=True)
    lm = load_lm(res.model_dir)
    assert lm.num_classes == 0 and lm.config.depth == 1
    assert lm.generate(num_samples=2).shape == (2, 1, 4, 4)


def test_non_finite_loss_is_reported_with_its_step(tmp_path, monkeypatch):
    import vistok.generate.train as train_mod

    original = train_mod.factorized_cross_entropy
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss, acc = original(*args)
        return (loss * float("nan") if calls["n"] == 3 else loss), acc

    monkeypatch.setattr(train_mod, "factorized_cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match="step 2"):
        train_lm(cfg_for(token_set(tmp_path / "s.npz"), "steps=5"), tmp_path / "run", quiet=True)


def test_torchrun_two_ranks_stay_in_sync(tmp_path):
    data = token_set(tmp_path / "set.npz", n=16)
    worker = Path(__file__).with_name("lm_ddp_worker.py")
    run = run_two_ranks(worker, lambda out: [data, out], tmp_path)
    sums = [json.loads((run / f"rank{r}.json").read_text()) for r in range(2)]
    assert sums[0]["params"] == sums[1]["params"]  # DDP kept the replicas identical
    assert sums[0]["batches_differ"]  # ... while each rank trained on its own items
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3]
