"""Measure the recognition table of docs/recognition.md on one labelled set.

For each seed: pixels from scratch, token inputs, token-target pretraining then fine-tuning, and
pixel-target pretraining then fine-tuning, each fine-tuned with 100 % and with 10 % of the labels
(per class); the two pretrainings run once per seed and serve both fine-tunings (``init_from``).
Every model has the same encoder, the same fine-tuning steps and the same batch; the two
pretrainings have the same steps. ``--methods ...,i3d`` adds the external baseline for clips:
Kinetics-400 I3D's pooled features (``vistok weights install i3d-k400``) read by a linear probe
fitted on the same labelled items, its penalty chosen by cross-validation on them
(:mod:`vistok.recognize.probe`). Test accuracy, per-class accuracy and parameter counts go to
``OUT/results.json``; ``OUT/table.md`` is the Markdown table (mean +- std over seeds).

    python scripts/recognition_table.py --name fashion-mnist --train FM --test FM --size 32 --limit 10000 \\
        --tokenizer default --seeds 0,1,2 --out runs/rec-fm
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from vistok.metrics.i3d import load_i3d
from vistok.metrics.store import require_weights
from vistok.recognize.config import load_classifier_config
from vistok.recognize.data import labelled_items, load_recognition_set
from vistok.recognize.model import load_recognizer
from vistok.recognize.predict import Predictions, predict_set
from vistok.recognize.probe import choose_weight_decay, fit_linear_probe, i3d_clip_features
from vistok.recognize.train import PRETRAINED_DIR, train_classifier
from vistok.tokenizers.registry import load_tokenizer

METHODS = {
    "pixels, from scratch": dict(inputs="pixels", pretrain="none", key="scratch"),
    "token inputs": dict(inputs="tokens", pretrain="none", key="token-inputs"),
    "token targets, then fine-tune": dict(inputs="pixels", pretrain="tokens", key="token-targets"),
    "pixel targets, then fine-tune": dict(inputs="pixels", pretrain="pixels", key="pixel-targets"),
}
I3D_PROBE = "I3D features, linear probe"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--limit", type=int, help="training items (IDX) or per class (trees)")
    p.add_argument("--test-limit", type=int)
    p.add_argument("--tokenizer", default="default")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--low-label-seeds", help="seeds of the 10 %% rows (default: --seeds)")
    p.add_argument("--fractions", default="1.0,0.1")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--pretrain-steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--cache-dir")
    p.add_argument("--methods", default=",".join(m["key"] for m in METHODS.values()),
                   help="comma list of " + ", ".join(m["key"] for m in METHODS.values()) + " and i3d (the I3D "
                        "linear probe, clips of 9+ frames)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    low_seeds = [int(s) for s in (a.low_label_seeds or a.seeds).split(",")]
    fractions = [float(f) for f in a.fractions.split(",")]
    keys = set(a.methods.split(","))
    unknown = keys - {m["key"] for m in METHODS.values()} - {"i3d"}
    if unknown:
        p.error(f"unknown method(s) {', '.join(sorted(unknown))}")
    tok = load_tokenizer(a.tokenizer)
    common = [f"size={a.size}", f"frames={a.frames}", f"batch_size={a.batch_size}", f"steps={a.steps}",
              f"tokenizer={a.tokenizer}", f"data={a.train}", "log_every=50", "checkpoint_every=100000",
              "picture_every=100000", *a.set]
    if a.limit:
        common.append(f"limit={a.limit}")
    if a.cache_dir:
        common.append(f"cache_dir={a.cache_dir}")
    test = load_recognition_set(a.test, size=a.size, frames=a.frames, split="test", limit=a.test_limit, tokenizer=tok,
                                cache_dir=a.cache_dir)
    results_path = a.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["method"], r["fraction"], r["seed"]) for r in results}
    for seed, frac in planned_rows(seeds, low_seeds, fractions):
        for method, m in METHODS.items():
            if (method, frac, seed) in done or m["key"] not in keys:
                continue
            run = a.out / f"{m['inputs']}-{m['pretrain']}-f{frac:g}-s{seed}"
            sets = common + [f"model.inputs={m['inputs']}", f"seed={seed}", f"label_fraction={frac}"]
            pre = a.out / f"pretrain-{m['pretrain']}-s{seed}"
            if m["pretrain"] != "none":
                if not (pre / PRETRAINED_DIR).exists():  # pretrain once per seed (and one token fine-tuning step)
                    cfg = load_classifier_config(a.preset, sets + [f"model.pretrain={m['pretrain']}",
                                                                  f"pretrain_steps={a.pretrain_steps}", "steps=1"])
                    t0 = time.time()
                    train_classifier(cfg, pre, quiet=True)
                    print(f"pretrained {pre.name} in {time.time() - t0:.0f} s", file=sys.stderr)
                sets += [f"init_from={pre / PRETRAINED_DIR}", f"model.pretrain={m['pretrain']}", "pretrain_steps=0"]
            else:
                sets += ["pretrain_steps=0"]
            cfg = load_classifier_config(a.preset, sets)
            t0 = time.time()
            train_classifier(cfg, run, quiet=True)
            seconds = time.time() - t0
            model = load_recognizer(run)
            pred, conf = predict_set(model, test)
            pr = Predictions(test.paths, pred, conf, model.config.class_names, test.labels.numpy())
            row = {"method": method, "fraction": frac, "seed": seed, "accuracy": pr.accuracy,
                   "per_class": pr.per_class_accuracy(), "parameters": model.num_parameters(),
                   "encoder_parameters": model.num_parameters(encoder_only=True),
                   "finetune_seconds": round(seconds, 1), "steps": a.steps,
                   "pretrain_steps": a.pretrain_steps if m["pretrain"] != "none" else 0}
            results.append(row)
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{a.name} | {method} | {frac:.0%} | seed {seed} | {pr.accuracy:.4f} | {seconds:.0f} s", file=sys.stderr)
    if "i3d" in keys:
        i3d_rows(a, tok, test, seeds, low_seeds, fractions, results, results_path)
    (a.out / "table.md").write_text(table(results, a, len(test)))
    print(table(results, a, len(test)))


def planned_rows(seeds: list[int], low_seeds: list[int], fractions: list[float]) -> list[tuple[int, float]]:
    """``(seed, fraction)`` of every row: full-label fractions for ``seeds``, lower ones for ``low_seeds``."""
    return [(seed, frac) for seed in seeds + [s for s in low_seeds if s not in seeds] for frac in fractions
            if seed in (seeds if frac >= 1.0 else low_seeds)]


def cached_i3d_features(a, data, name: str):
    """I3D features of ``data``, kept in ``OUT/i3d-NAME.pt`` with the item paths they belong to."""
    import torch

    path = a.out / f"i3d-{name}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["paths"] == data.paths:
            return saved["features"]
    i3d = load_i3d(require_weights("i3d-k400"))
    done, t0 = 0, time.time()

    def progress(n: int) -> None:
        nonlocal done
        done += n
        print(f"\ri3d {name}: {done}/{len(data)} clips, {time.time() - t0:.0f} s", end="", file=sys.stderr)

    features = i3d_clip_features(i3d, data, progress=progress)
    print(file=sys.stderr)
    torch.save({"paths": data.paths, "features": features}, path)
    return features


def i3d_rows(a, tok, test, seeds, low_seeds, fractions, results, results_path) -> None:
    train = load_recognition_set(a.train, size=a.size, frames=a.frames, split="train", limit=a.limit, tokenizer=tok,
                                 cache_dir=a.cache_dir)
    fx, tx = cached_i3d_features(a, train, "train"), cached_i3d_features(a, test, "test")
    done = {(r["method"], r["fraction"], r["seed"]) for r in results}
    for seed, frac in planned_rows(seeds, low_seeds, fractions):
        if (I3D_PROBE, frac, seed) in done:
            continue
        t0 = time.time()
        items = labelled_items(train.labels, frac, seed)  # the trained rows' labelled items
        x, y = fx[items], train.labels[items]
        classes = len(train.class_names)
        wd = choose_weight_decay(x, y, classes, seed=seed)
        probe = fit_linear_probe(x, y, classes, wd)
        pred, conf = probe.predict(tx)
        pr = Predictions(test.paths, pred.numpy(), conf.numpy(), train.class_names, test.labels.numpy())
        row = {"method": I3D_PROBE, "fraction": frac, "seed": seed, "accuracy": pr.accuracy,
               "per_class": pr.per_class_accuracy(), "parameters": probe.weight.numel() + probe.bias.numel(),
               "encoder_parameters": 0, "weight_decay": wd, "finetune_seconds": round(time.time() - t0, 1)}
        results.append(row)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{a.name} | {I3D_PROBE} | {frac:.0%} | seed {seed} | {pr.accuracy:.4f} | weight decay {wd:g}",
              file=sys.stderr)


def table(results: list[dict], a, test_items: int) -> str:
    fracs = sorted({r["fraction"] for r in results}, reverse=True)
    lines = [f"{a.name}: test items {test_items}; size {a.size}, frames {a.frames}; fine-tuning {a.steps} steps, "
             f"pretraining {a.pretrain_steps} steps, batch {a.batch_size}", "",
             "| method | " + " | ".join(f"top-1, {f:.0%} labels" for f in fracs) + " | parameters |",
             "|---|" + "---:|" * (len(fracs) + 1)]
    for method in [m for m in [*METHODS, I3D_PROBE] if any(r["method"] == m for r in results)]:
        cells = []
        for f in fracs:
            accs = [r["accuracy"] for r in results if r["method"] == method and r["fraction"] == f]
            if not accs:
                cells.append("–")
            elif len(accs) == 1:
                cells.append(f"{100 * accs[0]:.1f} (1 seed)")
            else:
                cells.append(f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f} ({len(accs)} seeds)")
        params = next((r["parameters"] for r in results if r["method"] == method), 0)
        size = f"{params / 1e3:.1f} k on frozen I3D (12.3 M)" if method == I3D_PROBE else f"{params / 1e6:.2f} M"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {size} |")
    # per-class accuracy at full labels, mean over seeds
    full = [r for r in results if r["fraction"] == max(fracs)]
    if full:
        names = list(full[0]["per_class"])
        lines += ["", f"Per-class top-1 (%) at {max(fracs):.0%} labels, mean over seeds:", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for method in [*METHODS, I3D_PROBE]:
            rs = [r for r in full if r["method"] == method]
            if rs:
                vals = [statistics.mean(r["per_class"][n] for r in rs if r["per_class"][n] is not None) for n in names]
                lines.append(f"| {method} | " + " | ".join(f"{100 * v:.0f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
