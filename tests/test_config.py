"""The one config mechanism: typed building, coercion, unknown keys, presets, legacy spellings,
and every trainer's ``--set`` refusing bad values with one line and exit status 2."""

import json

import pytest

from lm_fixtures import TINY_LM, token_set
from vistok.cli import main
from vistok.configuration import Config, from_dict
from vistok.errors import VistokError
from vistok.generate.train import load_lm_train_config
from vistok.quantizers.config import QuantizerConfig
from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer, OmniConfig
from vistok.train.config import load_train_config

from conftest import tiny_train_overrides


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("vistok: error:"), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_coercion_and_unknown_keys():
    q = from_dict(QuantizerConfig, {"entropy_weight": "1e-2", "bits": 12.0, "vq_ema": True})
    assert q.entropy_weight == 0.01 and q.bits == 12 and isinstance(q.bits, int)
    cfg = Magvit2Config.from_dict({"channel_multipliers": [1, 2], "temporal_downsample": [True], "norm_groups": 8})
    assert cfg.channel_multipliers == (1, 2) and cfg.temporal_downsample == (True,)
    with pytest.raises(VistokError, match=r"unknown config key\(s\) \['nonexistent'\]; valid: .*quantizer"):
        Magvit2Config.from_dict({"nonexistent": 3})
    with pytest.raises(VistokError, match="quantizer.entropy_weight: expected a number"):
        Magvit2Config.from_dict({"quantizer": {"entropy_weight": "abc"}})
    with pytest.raises(VistokError, match="expected one of"):
        QuantizerConfig.from_dict({"kind": "fsq"})
    with pytest.raises(VistokError, match="bits must be in"):
        QuantizerConfig.from_dict({"bits": 31})
    with pytest.raises(VistokError, match="quantizer.kind must be 'lfq'"):
        Magvit2Config.from_dict({"quantizer": {"kind": "vq"}})


def test_presets_merge_nested_overrides_and_legacy_flat_keys():
    cfg = Magvit2Config.preset("tiny", {"quantizer": {"bits": 10}})
    assert cfg.quantizer.bits == 10 and cfg.quantizer.entropy_anneal_steps == 200  # the preset's other field kept
    assert Magvit2Config.preset("tiny", bits=10) == cfg  # the flat spelling older files use
    omni = OmniConfig.preset("omni-paper", {"quantizer": {"codebook_size": 1024}})
    assert (omni.quantizer.kind, omni.quantizer.codebook_size, omni.quantizer.commitment_weight) == ("vq", 1024, 1.0)
    assert OmniConfig.from_dict({"bottleneck": "kl", "latent_dim": 4}).quantizer.kind == "kl"
    with pytest.raises(VistokError, match="unknown MAGVIT-v2 preset 'huge'"):
        Magvit2Config.preset("huge")
    assert isinstance(cfg, Config) and cfg.replace(norm_groups=4).norm_groups == 4


def test_model_identity_ignores_training_only_settings():
    a = Magvit2Tokenizer(Magvit2Config.preset("tiny", {"quantizer": {"bits": 8}}))
    b = Magvit2Tokenizer(Magvit2Config.preset("tiny", {"quantizer": {"bits": 8, "entropy_weight": 0.5, "bit_dropout": 0.3}}))
    b.load_state_dict(a.state_dict())
    assert a.model_id() == b.model_id()


@pytest.mark.parametrize("preset", ["tiny", "omni-tiny"])
@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.quantizer.entropy_weight=abc", "model.quantizer.entropy_weight: expected a number"),
        ("model.entropy_weight=abc", "model.quantizer.entropy_weight: expected a number"),
        ("model.nonexistent=3", "model.nonexistent"),
        ("model.quantizer.nonexistent=3", "model.quantizer.nonexistent"),
        ("model.heads=two", "model.heads"),
        ("optim.lr=-1", "optim.lr must be a positive number"),
        ("ema_decay=2", "ema_decay must be in [0, 1)"),
        ("data.num_workers=-1", "data.num_workers"),
        ("precision=fp8", "precision: expected one of"),
        ("discriminator.width=wide", "discriminator.width"),
    ],
)
def test_tokenizer_train_set_errors_are_one_line(capsys, tmp_path, preset, override, needle):
    if preset == "tiny" and override.startswith("model.heads"):
        needle = "model.heads"  # MAGVIT-v2 has no heads: unknown key
    code, _, err = run(capsys, "train", preset, "--set", override, "--out", tmp_path / "run")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.dim=abc", "model.dim: expected an integer"),
        ("model.nonexistent=3", "model.nonexistent"),
        ("model.kind=rnn", "model.kind: expected one of"),
        ("optim.lr=-1", "optim.lr must be a positive number"),
        ("ema_decay=2", "ema_decay must be in [0, 1)"),
        ("batch_size=0", "batch_size must be >= 1"),
    ],
)
def test_lm_train_set_errors_are_one_line(capsys, tmp_path, override, needle):
    data = token_set(tmp_path / "set.npz")
    code, _, err = run(capsys, "train-lm", "lm-tiny", "--data", data, "--set", override, "--out", tmp_path / "run")
    assert_one_line_error(code, err, needle)


def test_yaml_model_section_is_validated(capsys, tmp_path):
    yml = tmp_path / "bad.yaml"
    yml.write_text("base: tiny\nmodel:\n  quantizer: {bits: many}\n")
    code, _, err = run(capsys, "train", yml, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "model.quantizer.bits: expected an integer")


def test_valid_model_override_reaches_saved_config(media_dir, tmp_path):
    from vistok.train.trainer import train

    cfg = load_train_config("tiny", tiny_train_overrides(media_dir, steps=1) + ["model.quantizer.entropy_weight=2e-2"])
    assert cfg.tokenizer_config().quantizer.entropy_weight == 0.02
    res = train(cfg, tmp_path / "run", quiet=True)
    saved = json.loads((res.model_dir / "config.json").read_text())
    assert saved["config"]["quantizer"]["entropy_weight"] == 0.02
    assert saved["config"]["quantizer"]["bits"] == 10  # the fixture's model override, flat spelling


def test_lm_model_override_validated_when_config_loads():
    cfg = load_lm_train_config("lm-tiny", TINY_LM + ["model.kind=ar"])
    assert cfg.model["kind"] == "ar"
    with pytest.raises(VistokError, match="model.depth: expected an integer"):
        load_lm_train_config("lm-tiny", ["model.depth=1.5"])
