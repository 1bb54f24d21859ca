"""Data loading against the model's step rate: can the loader keep a training step fed?

    python bench/data_throughput.py [--data SHARDS_OR_FOLDER] [--preset tiny] [--frames 17] [--size 64]
        [--scale 128] [--batch 2] [--workers 0,1,2] [--batches 40] [--ranks 1,2] [--json out.json]

Three rates, measured in one run, all in clips per second:

* **loader**: the trainer's own batch iterator (``vistok.train.batches.build_batches``, the path
  ``vistok train --data`` takes) over tar shards (``ShardDataset``: a pure tar stream, PyAV decode
  from memory, resize, random crop) or a media folder with the in-memory cache off (``ClipDataset``,
  a PyAV seek and decode per clip), for each ``--workers`` count. The first batch (worker start-up,
  the shuffle buffer filling) is timed apart from the steady rate over the next ``--batches``.
* **per reader under ranks**: with ``--ranks 2``, rank 0 of 2 reads its disjoint half of the
  shards (``assign_shards``), as each process of ``torchrun --nproc_per_node 2`` would.
* **model**: one optimizer step of the ``--preset`` tokenizer (forward, L2 + quantizer losses,
  backward, AdamW) on a batch of the same shape, median of ``--repeats`` after a warm-up, on this
  machine's threads. LPIPS and the GAN (when a recipe turns them on) make the real step slower,
  so this is the harder rate for the loader to meet.

It prints the loader/model ratio for each worker count and the workers a step needs
(``ceil(model rate / one worker's rate)``). On a machine with few cores the workers and the model
compete for them: the figures say what one process does here, not what a GPU node with a core per
worker would see. Without ``--data`` it shards the sample media that ships with the install into a
temporary folder first.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vistok.data.samples import training_files
from vistok.data.shards import write_shards
from vistok.tokenizers.registry import TOKENIZERS
from vistok.train.batches import build_batches
from vistok.train.config import load_train_config
from vistok.train.distributed import DistInfo


def _config(data: str, args, workers: int):
    overrides = [
        f"data.path={data}", f"data.frames={args.frames}", f"data.size={args.size}", f"data.batch_size={args.batch}",
        f"data.num_workers={workers}", "data.cache=false", "data.image_fraction=0.0",
    ]
    if args.scale:
        overrides.append(f"data.scale={args.scale}")
    return load_train_config("tiny", overrides)


def loader_rate(data: str, args, workers: int, rank: int = 0, world_size: int = 1) -> dict:
    cfg = _config(data, args, workers)
    info = DistInfo(rank=rank, world_size=world_size, local_rank=rank, device=torch.device("cpu"))
    t0 = time.perf_counter()
    batches = build_batches(cfg, info)
    first = next(batches)
    t_first = time.perf_counter() - t0
    t1 = time.perf_counter()
    clips = 0
    for _ in range(args.batches):
        clips += next(batches).shape[0]
    steady = time.perf_counter() - t1
    del batches  # stops the workers
    return {
        "workers": workers, "rank": rank, "world_size": world_size, "shape": list(first.shape),
        "first_batch_s": round(t_first, 3), "clips": clips, "clips_per_s": clips / steady,
    }


def model_rate(args) -> dict:
    cls = TOKENIZERS.get("magvit2", where="model_type")
    model = cls(cls.config_class.preset(args.preset)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(video)
        loss = (out.x_hat - video).pow(2).mean() + out.loss
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step()  # warm-up
    times = [step() for _ in range(args.repeats)]
    t = statistics.median(times)
    return {"preset": args.preset, "step_s": t, "clips_per_s": args.batch / t, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a folder of .tar shards or of media files (default: shard the shipped samples)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--scale", type=int, default=0, help="data.scale (0: unset)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--ranks", default="1,2", help="world sizes to read as (rank 0's share)")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            videos = [f for f in training_files() if f.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv", ".webm")]
            data = str(Path(tmp) / "shards")
            write_shards(videos * 8, data, max_count=4)  # enough shards for 2 ranks x 2 workers
            print(f"sharded {len(videos)} sample video(s) x 8 into {data}")
        model = model_rate(args)
        print(f"model {args.preset}: {model['step_s']:.3f} s/step at batch {args.batch} "
              f"({model['clips_per_s']:.2f} clips/s, {model['threads']} threads)")
        rows = []
        for world in [int(w) for w in args.ranks.split(",")]:
            for workers in [int(w) for w in args.workers.split(",")]:
                r = loader_rate(data, args, workers, rank=0, world_size=world)
                r["ratio_to_model"] = r["clips_per_s"] / model["clips_per_s"]
                rows.append(r)
                print(f"loader ranks={world} workers={workers}: {r['clips_per_s']:7.2f} clips/s "
                      f"(first batch {r['first_batch_s']:.2f} s) = {r['ratio_to_model']:.2f} x the model's step rate")
        one = [r for r in rows if r["world_size"] == 1 and r["workers"] <= 1]
        if one:
            per_worker = max(r["clips_per_s"] for r in one)
            need = math.ceil(model["clips_per_s"] / per_worker)
            print(f"one reader decodes {per_worker:.2f} clips/s: a step of {args.preset} needs {need} worker(s) per rank")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "model": model, "loader": rows}, indent=1))


if __name__ == "__main__":
    main()
