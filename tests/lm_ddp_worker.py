"""Run by test_generate_train.py under torchrun: train an LM 3 steps on 2 ranks, record checksums."""

import hashlib
import json
import sys
from pathlib import Path

import torch.distributed as dist

from lm_fixtures import TINY_LM
from vistok.generate.train import LMTrainer, load_lm_train_config

data, out = sys.argv[1], Path(sys.argv[2])
cfg = load_lm_train_config("lm-tiny", TINY_LM + [f"data={data}", "steps=3"])
trainer = LMTrainer(cfg, out, quiet=True)
first = trainer.batch(0)[0]
trainer.fit()
h = hashlib.sha256()
for v in trainer.lm.state_dict().values():
    h.update(v.detach().float().numpy().tobytes())
gathered = [None, None]
dist.all_gather_object(gathered, first.tolist())
rank = dist.get_rank()
(out / f"rank{rank}.json").write_text(json.dumps({"params": h.hexdigest(), "batches_differ": gathered[0] != gathered[1]}))
trainer.close()
