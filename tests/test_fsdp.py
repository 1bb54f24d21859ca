"""FSDP2, activation checkpointing and compile (issue 16): the same training under another memory
layout. On 2 gloo ranks an FSDP2 run's losses match DDP's step for step, its sharded checkpoint
resumes to the uninterrupted run's weights, and its export is the same single-file format DDP's is."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import TINY_MODEL, tiny_train_overrides
from torchrun_launch import run_two_ranks
from vistok.train.distributed import checkpoint_activations, model_blocks
from vistok.train.logging import read_metrics

WORKER = Path(__file__).with_name("fsdp_worker.py")


def _run(data, base: Path, strategy: str, steps: int, *rest: str, kind: str = "tokenizer") -> Path:
    return run_two_ranks(WORKER, lambda out: [kind, data, out, strategy, steps, *rest], base)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(model_dir.glob("*.safetensors"))
    assert len(files) == 1
    with safe_open(str(files[0]), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def ddp_and_fsdp(media_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("fsdp")
    return _run(media_dir, base / "ddp", "ddp", 4), _run(media_dir, base / "fsdp", "fsdp", 4)


def test_fsdp_losses_match_ddp_and_export_the_same_format(ddp_and_fsdp):
    ddp, fsdp = ddp_and_fsdp
    rows_d, rows_f = read_metrics(ddp / "metrics.jsonl"), read_metrics(fsdp / "metrics.jsonl")
    assert [r["step"] for r in rows_f] == [1, 2, 3, 4]
    assert "d_loss" in rows_f[-1]  # the sharded discriminator trained too
    # step 1 is bit-identical; float rounding (a reduce-scatter sums in another order than an
    # all-reduce) then grows through Adam about tenfold a step: up to 2e-5 in the losses by step 4
    # and 2e-4 in the gradient norm, the most sensitive figure
    assert rows_f[0]["loss"] == rows_d[0]["loss"]
    for a, b in zip(rows_d, rows_f):
        for key, rel in (("loss", 1e-4), ("recon", 1e-4), ("d_loss", 1e-4), ("grad_norm", 5e-3)):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=rel), (a["step"], key)
    # the same files, config and tensor names/shapes/dtypes; the values agree to float tolerance
    assert sorted(p.name for p in (ddp / "model").iterdir()) == sorted(p.name for p in (fsdp / "model").iterdir())
    configs = [json.loads((run / "model" / "config.json").read_text()) for run in (ddp, fsdp)]
    for c in configs:
        c.pop("model_id")  # a hash of the weights, which agree to float tolerance only
    assert configs[0] == configs[1]
    wd, wf = _weights(ddp / "model"), _weights(fsdp / "model")
    assert wd.keys() == wf.keys()
    for k in wd:
        assert wd[k].dtype == wf[k].dtype and wd[k].shape == wf[k].shape, k
        torch.testing.assert_close(wf[k], wd[k], rtol=1e-3, atol=1e-5, msg=k)
    # the checkpoint is sharded: one folder of shards, the step's, beside checkpoint.pt
    assert [p.name for p in fsdp.glob("checkpoint-shards-*")] == ["checkpoint-shards-00000004"]


def test_fsdp_resume_equals_uninterrupted(media_dir, ddp_and_fsdp, tmp_path):
    _, whole = ddp_and_fsdp
    run = _run(media_dir, tmp_path / "a", "fsdp", 4, "2")  # killed after step 2 (its checkpoint)
    assert not (run / "model").exists() and (run / "checkpoint-shards-00000002").is_dir()
    run_two_ranks(WORKER, lambda _: ["tokenizer", media_dir, run, "fsdp", 4, "-", "resume"], tmp_path / "b")
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]
    resumed, uninterrupted = _weights(run / "model"), _weights(whole / "model")
    for k in uninterrupted:
        assert torch.equal(resumed[k], uninterrupted[k]), k
    assert [p.name for p in run.glob("checkpoint-shards-*")] == ["checkpoint-shards-00000004"]


@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_lm_and_classifier_train_the_same_under_fsdp(kind, tmp_path):
    if kind == "lm":
        from lm_fixtures import token_set

        data = token_set(tmp_path / "set.npz", n=16)
    else:
        from test_recognize import toy_tree

        data = toy_tree(tmp_path / "tree", n=8)
    ddp = _run(data, tmp_path / "ddp", "ddp", 4, kind=kind)
    fsdp = _run(data, tmp_path / "fsdp", "fsdp", 4, kind=kind)
    rows_d, rows_f = read_metrics(ddp / "metrics.jsonl"), read_metrics(fsdp / "metrics.jsonl")
    assert [r["step"] for r in rows_f] == list(range(1, 5 + (2 if kind == "classifier" else 0)))  # + 2 pretraining
    for a, b in zip(rows_d, rows_f, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
    wd, wf = _weights(ddp / "model"), _weights(fsdp / "model")
    assert wd.keys() == wf.keys()
    for k in wd:
        torch.testing.assert_close(wf[k], wd[k], rtol=1e-3, atol=1e-5, msg=k)
    if kind == "classifier":  # the encoder as pretraining left it, saved at the phase change
        pre_d, pre_f = _weights(ddp / "pretrained"), _weights(fsdp / "pretrained")
        assert pre_d.keys() == pre_f.keys()


def test_export_of_an_fsdp_run_loads_in_one_process(ddp_and_fsdp, media_dir):
    import vistok

    tok = vistok.load_tokenizer(str(ddp_and_fsdp[1] / "model"))
    video = torch.zeros(1, 3, 9, 32, 32)
    assert tok(video).x_hat.shape == video.shape


def test_model_blocks_are_the_repeated_units():
    from vistok.tokenizers.magvit2 import Magvit2Config, Magvit2Tokenizer

    tok = Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL))
    blocks = model_blocks(tok)
    names = {type(b).__name__ for b in blocks}
    assert names == {"Sequential", "AdaptiveResBlock", "DepthToSpaceUpsample"}  # encoder stages; decoder blocks (a list of lists) and up-samplers
    assert all(not isinstance(b, torch.nn.ModuleList) for b in blocks)


def test_activation_checkpointing_gives_the_same_gradients():
    from vistok.tokenizers.magvit2 import Magvit2Config, Magvit2Tokenizer

    torch.manual_seed(0)
    plain = Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL))
    recomputed = Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL))
    recomputed.load_state_dict(plain.state_dict())
    assert checkpoint_activations(recomputed) == len(model_blocks(plain))
    video = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    for model in (plain, recomputed):
        out = model(video)
        ((out.x_hat - video).pow(2).mean() + out.loss).backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():  # inference runs the blocks as they are
        torch.testing.assert_close(recomputed(video).x_hat, plain(video).x_hat)


@pytest.mark.slow
def test_compiled_training_step_matches_eager(media_dir, tmp_path):
    """compile=true changes speed, not the run: the first steps' losses agree with eager ones."""
    from vistok.train.config import load_train_config
    from vistok.train.trainer import train

    rows = {}
    for flag in ("false", "true"):
        cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=2) + [f"compile={flag}", "ema_decay=0"])
        train(cfg, tmp_path / flag, quiet=True)
        rows[flag] = read_metrics(tmp_path / flag / "metrics.jsonl")
    for a, b in zip(rows["false"], rows["true"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
