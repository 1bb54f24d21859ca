"""Recognition: the classifier learns a separable set from pixels and from tokens, masked
pretraining runs with token and pixel targets, a resumed run equals an uninterrupted one, the
CLI's round trip and refusals, and the camera-motion clips move the way their names say."""

import json

import numpy as np
import pytest
import torch

from vistok.cli import main
from vistok.data import write_image
from vistok.errors import VistokError
from vistok.recognize.config import RecognizerConfig, load_classifier_config
from vistok.recognize.data import label_subset, load_recognition_set
from vistok.recognize.model import Recognizer, load_recognizer
from vistok.recognize.motion import MOTIONS, motion_clip
from vistok.recognize.predict import classify
from vistok.recognize.train import ClassifierTrainer, train_classifier

SMALL = ["model.dim=32", "model.depth=1", "model.heads=2", "batch_size=8", "log_every=1", "checkpoint_every=4",
         "optim.warmup_steps=2", "pretrain_optim.warmup_steps=2"]


def toy_tree(root, n=12, size=32, seed=0):
    """Two classes any model (and any tokenizer, even an untrained one) separates: a red or a blue
    picture under faint noise."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(["blue", "red"]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 16, (size, size, 3)).astype(np.uint8)
            img[..., 2 if label == 0 else 0] += 220
            write_image(d / f"{i}.png", img)
    return root


def cfg_for(tmp_path, data, *extra, tokenizer=None):
    sets = SMALL + [f"data={data}", f"cache_dir={tmp_path / 'cache'}", *extra]
    if tokenizer is not None:
        sets.append(f"tokenizer={tokenizer}")
    return load_classifier_config("tiny", sets)


@pytest.mark.parametrize("inputs", ["pixels", "tokens"])
def test_tiny_runs_learn_a_separable_set(tmp_path, model_dir, inputs):
    train, test = toy_tree(tmp_path / "train"), toy_tree(tmp_path / "test", n=6, seed=1)
    cfg = cfg_for(tmp_path, train, f"model.inputs={inputs}", "model.num_subtokens=5", "steps=40", "pretrain_steps=0", "optim.lr=3e-3",
                  tokenizer=model_dir if inputs == "tokens" else None)
    res = train_classifier(cfg, tmp_path / "run", quiet=True)
    model = load_recognizer(res.out_dir)
    tok = None
    if inputs == "tokens":
        from vistok.tokenizers.registry import load_tokenizer

        tok = load_tokenizer(str(model_dir))
    preds = classify(model, test, tokenizer=tok)
    assert preds.accuracy == 1.0, preds.confusion()


@pytest.mark.parametrize("target", ["tokens", "pixels"])
def test_resume_equals_uninterrupted_across_the_phase_change(tmp_path, model_dir, target):
    data = toy_tree(tmp_path / "train")
    cfg = cfg_for(tmp_path, data, f"model.pretrain={target}", "steps=4", "pretrain_steps=4", "label_fraction=0.5", "checkpoint_every=1",
                  tokenizer=model_dir)
    whole = train_classifier(cfg, tmp_path / "a", quiet=True)
    train_classifier(cfg, tmp_path / "b", quiet=True, stop_after=3)  # killed mid-pretraining ...
    train_classifier(cfg, tmp_path / "b", resume=True, quiet=True, stop_after=2)  # ... and across the phase change
    resumed = train_classifier(cfg, tmp_path / "b", resume=True, quiet=True)
    assert whole.step == resumed.step == 8
    a, b = load_recognizer(whole.out_dir), load_recognizer(resumed.out_dir)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["pretraining"] for r in rows] == [1.0] * 4 + [0.0] * 4
    assert (tmp_path / "a" / "pretrained" / "model.safetensors").is_file()
    # the pretrained encoder starts another fine-tuning
    again = cfg_for(tmp_path, data, "steps=2", "pretrain_steps=0", f"init_from={tmp_path / 'a' / 'pretrained'}")
    start = ClassifierTrainer(again, tmp_path / "c", quiet=True)
    try:
        src = load_recognizer(tmp_path / "a" / "pretrained")
        assert torch.equal(start.recognizer.transformer.blocks[0].attn.qkv.weight, src.transformer.blocks[0].attn.qkv.weight)
    finally:
        start.close()


def test_masked_pretraining_masks_the_asked_share_and_grids_match_the_tokenizer(model_dir):
    from vistok.tokenizers.registry import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    cfg = RecognizerConfig(pretrain="tokens", dim=32, depth=1, heads=2, num_classes=3, max_grid=(3, 4, 4), frames=9,
                           size=32, vocab_size=tok.vocab_size, mask_ratio=0.25)
    model = Recognizer(cfg)
    video = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    assert model.grid_of(9, 32, 32) == tuple(tok.encode(video).shape[1:])
    mask = model.random_mask(5, 48, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert mask.sum(1).tolist() == [12] * 5
    loss, stats = model(video, pretrain=True, tokens=tok.encode(video), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and 0 <= stats["accuracy"] <= 1
    assert model(video).shape == (2, 3)


def test_label_subset_is_per_class_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 10)
    sub = label_subset(labels, 0.1, seed=3)
    assert torch.bincount(labels[sub]).tolist() == [5, 1]
    assert torch.equal(sub, label_subset(labels, 0.1, seed=3)) and not torch.equal(sub, label_subset(labels, 0.1, seed=4))


def test_cli_round_trip_and_refusals(tmp_path, model_dir, capsys):
    train, test = toy_tree(tmp_path / "train"), toy_tree(tmp_path / "test", n=4, seed=1)
    out = tmp_path / "run"
    sets = [x for s in SMALL + [f"cache_dir={tmp_path / 'cache'}"] for x in ("--set", s)]
    assert main(["train-classifier", "tiny", "--data", str(train), "--tokenizer", str(model_dir), "--inputs", "tokens",
                 "--steps", "30", "--pretrain-steps", "0", "--out", str(out), "--quiet", *sets]) == 0
    capsys.readouterr()
    assert main(["classify", str(out), str(test), "--out", str(tmp_path / "p" / "preds.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 8
    path, label, conf = lines[0].split("\t")
    assert label in ("blue", "red") and 0.5 <= float(conf) <= 1.0 and path.endswith(".png")
    report = json.loads((tmp_path / "p" / "confusion.json").read_text())
    assert np.array(report["confusion"]).sum() == 8 and (tmp_path / "p" / "confusion.png").is_file()
    assert (tmp_path / "p" / "preds.csv").read_text().startswith("path,label,confidence,true\n")
    # one unlabelled file
    assert main(["classify", str(out), str(test / "red" / "0.png")]) == 0
    assert capsys.readouterr().out.count("\t") == 2

    def fails(argv, words):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert all(w in err[-1] for w in words), err

    # a tokenizer other than the run's
    from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer
    from tests.conftest import TINY_MODEL

    torch.manual_seed(1)
    other = Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL)).save_pretrained(tmp_path / "other")
    fails(["classify", str(out), str(test), "--tokenizer", str(other)], ["does not match the run"])
    # an empty class, one class only, a class the model does not know
    (train / "empty").mkdir()
    fails(["train-classifier", "tiny", "--data", str(train), "--out", str(tmp_path / "r2"), *sets], ["'empty'", "no usable media"])
    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    write_image(single / "only" / "a.png", np.zeros((32, 32, 3), np.uint8))
    fails(["train-classifier", "tiny", "--data", str(single), "--out", str(tmp_path / "r3"), *sets], ["at least two"])
    (test / "middle").mkdir()
    write_image(test / "middle" / "a.png", np.zeros((32, 32, 3), np.uint8))
    fails(["classify", str(out), str(test)], ["does not know", "'middle'"])
    fails(["train-classifier", "tiny", "--data", str(train), "--inputs", "tokens", "--out", str(tmp_path / "r4")],
          ["needs a tokenizer"])
    fails(["train-classifier", "tiny", "--data", str(train), "--inputs", "tokens", "--pretrain", "pixels",
           "--tokenizer", str(model_dir), "--out", str(tmp_path / "r5")], ["masked pretraining trains a pixel encoder"])


def test_recognition_set_cache_is_reused_and_keyed_by_the_data(tmp_path):
    data = toy_tree(tmp_path / "d", n=3)
    a = load_recognition_set(data, size=32, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1
    b = load_recognition_set(data, size=32, cache_dir=tmp_path / "c")
    assert torch.equal(a.pixels, b.pixels) and a.paths == b.paths
    write_image(data / "red" / "new.png", np.zeros((32, 32, 3), np.uint8))
    c = load_recognition_set(data, size=32, cache_dir=tmp_path / "c")
    assert len(c) == len(a) + 1 and len(list((tmp_path / "c").glob("*.npz"))) == 2


def test_motion_clips_move_as_their_names_say():
    # a photo whose red is its x coordinate and green its y: a frame's colours tell where the window is
    ys, xs = np.mgrid[:300, :400]
    photo = np.stack([xs * 255 / 399, ys * 255 / 299, np.full_like(xs, 128)], axis=-1).round().astype(np.uint8)
    seen = {}
    for m in MOTIONS:
        clip = motion_clip(photo, m, frames=5, size=64, rng=np.random.default_rng(0)).astype(float)
        assert clip.shape == (5, 64, 64, 3)
        first, last = clip[0], clip[-1]
        rows = np.arange(64)[:, None]
        seen[m] = dict(dx=last[..., 0].mean() - first[..., 0].mean(), dy=last[..., 1].mean() - first[..., 1].mean(),
                       spread=last[..., 0].std() / first[..., 0].std(),
                       red_down_rows=np.polyfit(np.broadcast_to(rows, (64, 64)).ravel(), last[..., 0].ravel(), 1)[0])
    assert seen["pan-left"]["dx"] < -3 and seen["pan-right"]["dx"] > 3  # the window moves; the picture slides the other way
    assert seen["pan-up"]["dy"] < -3 and seen["pan-down"]["dy"] > 3
    assert abs(seen["pan-left"]["dy"]) < 1 and abs(seen["pan-up"]["dx"]) < 1
    assert seen["zoom-in"]["spread"] < 0.85 and seen["zoom-out"]["spread"] > 1.15
    # the window turned clockwise (y down): going down its rows runs leftwards in the photo
    assert seen["roll-cw"]["red_down_rows"] < -0.2 and seen["roll-ccw"]["red_down_rows"] > 0.2
    assert max(abs(seen["static"]["dx"]), abs(seen["static"]["dy"]), abs(seen["static"]["spread"] - 1)) < 1e-6
    with pytest.raises(VistokError):
        motion_clip(photo, "dolly", frames=5, size=64, rng=np.random.default_rng(0))


def test_linear_probe_is_the_exact_minimiser():
    """L-BFGS stops where the gradient of the strictly convex objective vanishes, and a separable
    set is classified correctly; the same call twice gives the same probe."""
    from vistok.recognize.probe import fit_linear_probe, probe_objective

    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 7, generator=g) * 0.3 + torch.nn.functional.one_hot(y, 7).float() * 2 + 5
    p = fit_linear_probe(x, y, 3, 1e-2)
    w = p.weight.clone().requires_grad_(True)
    b = p.bias.clone().requires_grad_(True)
    probe_objective(w, b, (x.double() - p.mean) / p.std, y, 1e-2).backward()
    assert w.grad.abs().max() < 1e-6 and b.grad.abs().max() < 1e-6
    pred, conf = p.predict(x)
    assert torch.equal(pred, y) and ((conf > 1 / 3) & (conf <= 1)).all()
    assert torch.equal(fit_linear_probe(x, y, 3, 1e-2).weight, p.weight)
    with pytest.raises(VistokError, match="positive"):
        fit_linear_probe(x, y, 3, 0.0)


def test_probe_folds_and_weight_decay_choice():
    from vistok.recognize.probe import WEIGHT_DECAYS, choose_weight_decay, stratified_folds

    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    folds = stratified_folds(y, 3, seed=1)
    assert torch.equal(torch.cat(folds).sort().values, torch.arange(20))  # a partition
    for f in folds:  # every class spread over the folds
        assert (y[f] == 2).sum() == 1 and 3 <= (y[f] == 0).sum() <= 4
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0)) + y[:, None].float()
    wd = choose_weight_decay(x, y, 3, seed=0)
    assert wd in WEIGHT_DECAYS and wd == choose_weight_decay(x, y, 3, seed=0)


def test_i3d_clip_features_batching_and_short_clips():
    from vistok.metrics.i3d import I3D
    from vistok.recognize.data import RecognitionSet
    from vistok.recognize.probe import i3d_clip_features

    torch.manual_seed(0)
    i3d = I3D().eval()
    pixels = torch.randint(0, 256, (3, 3, 9, 24, 24), dtype=torch.uint8)
    data = RecognitionSet(pixels, torch.tensor([0, 1, 0]), None, ["a", "b"], ["x", "y", "z"])
    seen = []
    f = i3d_clip_features(i3d, data, size=32, batch_size=2, progress=seen.append)
    assert f.shape == (3, 1024) and seen == [2, 1]
    with torch.no_grad():
        one = i3d.pooled_features(torch.nn.functional.interpolate(
            data.video(torch.tensor([2]))[0].transpose(0, 1), size=(32, 32), mode="bilinear")
            .transpose(0, 1)[None])
    torch.testing.assert_close(f[2:], one, rtol=1e-4, atol=1e-5)
    short = RecognitionSet(pixels[:, :, :5], data.labels, None, ["a", "b"], data.paths)
    with pytest.raises(VistokError, match="at least 9 frames"):
        i3d_clip_features(i3d, short)
