"""Training: the shared loop (loop.py), the tokenizer trainer, its config, data batches,
checkpoints, EMA, distribution and logging. The token-LM trainer lives in vistok.generate.train."""
