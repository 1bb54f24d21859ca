"""Run by test_fsdp.py under torchrun on 2 gloo ranks: a tiny run of one trainer under
``distributed=ddp`` or ``fsdp``. The tokenizer run has the GAN discriminator on (both models
wrapped); the classifier run pretrains (pixel targets) and then fine-tunes.

argv: kind data out strategy steps [stop_after|-] [resume] [key=value ...]
kind: tokenizer | lm | classifier"""

import sys
from pathlib import Path

kind, data, out, strategy, steps = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
stop_after = None if len(sys.argv) < 7 or sys.argv[6] == "-" else int(sys.argv[6])
resume = "resume" in sys.argv[7:]
sets = [f"distributed={strategy}", "checkpoint_every=2", *(a for a in sys.argv[7:] if "=" in a)]

if kind == "tokenizer":
    from conftest import tiny_train_overrides
    from vistok.train.config import load_train_config
    from vistok.train.trainer import Trainer

    sets = tiny_train_overrides(data, steps=steps) + ["loss.adversarial_weight=0.1", "loss.gan_start_step=1",
                                                      "discriminator={preset: tiny}"] + sets
    trainer = Trainer(load_train_config("tiny", sets), out, resume=resume, quiet=True)
elif kind == "lm":
    from lm_fixtures import TINY_LM
    from vistok.generate.train import LMTrainer, load_lm_train_config

    trainer = LMTrainer(load_lm_train_config("lm-tiny", TINY_LM + [f"data={data}", f"steps={steps}"] + sets),
                        out, resume=resume, quiet=True)
elif kind == "classifier":
    from test_recognize import SMALL
    from vistok.recognize.config import load_classifier_config
    from vistok.recognize.train import ClassifierTrainer

    cfg = load_classifier_config("tiny", SMALL + [f"data={data}", f"cache_dir={out.parent / 'cache'}", f"steps={steps}",
                                                  "pretrain_steps=2", "model.pretrain=pixels"] + sets)
    trainer = ClassifierTrainer(cfg, out, resume=resume, quiet=True)
else:
    raise SystemExit(f"unknown kind {kind}")
try:
    trainer.fit(stop_after=stop_after)
finally:
    trainer.close()
