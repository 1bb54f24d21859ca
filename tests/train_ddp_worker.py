"""Run by test_train.py (and test_progressive.py with ``omni``) under torchrun: train 4 steps on 2
ranks, record a parameter checksum."""

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from conftest import tiny_train_overrides
from vistok.train.config import load_train_config
from vistok.train.trainer import Trainer

data_dir, out = sys.argv[1], Path(sys.argv[2])
overrides = tiny_train_overrides(data_dir, steps=4)
if sys.argv[3:] == ["omni"]:  # progressive: 2 image-only steps (the 4-frame patch layers unused), 2 joint
    overrides += ["model_type=omni", "preset=omni-tiny",
                  "model={dim: 32, heads: 2, encoder_depth: 1, decoder_depth: 1, codebook_size: 64}",
                  "stages=[{steps: 2, data: {image_fraction: 1.0}}, {steps: 2, data: {image_fraction: 0.5}}]"]
cfg = load_train_config("tiny", overrides)
trainer = Trainer(cfg, out, quiet=True)
first = next(iter(trainer.batches))
trainer.batches = iter([first] + [b for _, b in zip(range(3), trainer.batches)])
trainer.fit()
h = hashlib.sha256()
for v in trainer.tokenizer.state_dict().values():
    h.update(v.detach().float().numpy().tobytes())
gathered = [None, None]
dist.all_gather_object(gathered, first[0].sum().item())
rank = dist.get_rank()
(out / f"rank{rank}.json").write_text(json.dumps({"params": h.hexdigest(), "batches_differ": gathered[0] != gathered[1]}))
trainer.close()
