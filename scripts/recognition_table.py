"""Measure the recognition table of docs/recognition.md on one labelled set.

For each seed: pixels from scratch, token inputs, token-target pretraining then fine-tuning, and
pixel-target pretraining then fine-tuning, each fine-tuned with 100 % and with 10 % of the labels
(per class); the two pretrainings run once per seed and serve both fine-tunings (``init_from``).
Every model has the same encoder, the same fine-tuning steps and the same batch; the two
pretrainings have the same steps. Test accuracy, per-class accuracy and parameter counts go to
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

from vistok.recognize.config import load_classifier_config
from vistok.recognize.data import load_recognition_set
from vistok.recognize.model import load_recognizer
from vistok.recognize.predict import Predictions, predict_set
from vistok.recognize.train import PRETRAINED_DIR, train_classifier
from vistok.tokenizers.registry import load_tokenizer

METHODS = {
    "pixels, from scratch": dict(inputs="pixels", pretrain="none"),
    "token inputs": dict(inputs="tokens", pretrain="none"),
    "token targets, then fine-tune": dict(inputs="pixels", pretrain="tokens"),
    "pixel targets, then fine-tune": dict(inputs="pixels", pretrain="pixels"),
}


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
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    low_seeds = [int(s) for s in (a.low_label_seeds or a.seeds).split(",")]
    fractions = [float(f) for f in a.fractions.split(",")]
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
    for seed in seeds + [s for s in low_seeds if s not in seeds]:
        for method, m in METHODS.items():
            for frac in fractions:
                if (frac < 1.0 and seed not in low_seeds) or (frac >= 1.0 and seed not in seeds):
                    continue
                if (method, frac, seed) in done:
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
    (a.out / "table.md").write_text(table(results, a, len(test)))
    print(table(results, a, len(test)))


def table(results: list[dict], a, test_items: int) -> str:
    fracs = sorted({r["fraction"] for r in results}, reverse=True)
    lines = [f"{a.name}: test items {test_items}; size {a.size}, frames {a.frames}; fine-tuning {a.steps} steps, "
             f"pretraining {a.pretrain_steps} steps, batch {a.batch_size}", "",
             "| method | " + " | ".join(f"top-1, {f:.0%} labels" for f in fracs) + " | parameters |",
             "|---|" + "---:|" * (len(fracs) + 1)]
    for method in METHODS:
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
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {params / 1e6:.2f} M |")
    # per-class accuracy at full labels, mean over seeds
    full = [r for r in results if r["fraction"] == max(fracs)]
    if full:
        names = list(full[0]["per_class"])
        lines += ["", f"Per-class top-1 (%) at {max(fracs):.0%} labels, mean over seeds:", "",
                  "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for method in METHODS:
            rs = [r for r in full if r["method"] == method]
            if rs:
                vals = [statistics.mean(r["per_class"][n] for r in rs if r["per_class"][n] is not None) for n in names]
                lines.append(f"| {method} | " + " | ".join(f"{100 * v:.0f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
