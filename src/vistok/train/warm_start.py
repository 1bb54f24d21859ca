"""Initialize a tokenizer from another saved tokenizer's weights (``TrainConfig.init_from``).

The use the OmniTokenizer paper makes of it: fine-tune a KL (continuous) tokenizer from a trained
VQ one. Every weight is copied by name, except the bottleneck: the quantizer's own parameters and
the two adapter layers around it (``encoder.to_latent``, ``decoder.from_code`` -- their sizes
depend on the latent channels) start fresh when their shapes differ. Any other missing or
mis-shaped weight means the architectures differ, and is an error.
"""

from __future__ import annotations

import logging

from vistok.errors import VistokError
from vistok.pretrained import WEIGHTS_NAME, load_weights, read_config_json
from vistok.tokenizers.base import Tokenizer
from vistok.tokenizers.registry import resolve_model_dir

logger = logging.getLogger(__name__)

ADAPTERS = ("encoder.to_latent.", "decoder.from_code.", "quantizer.")


def warm_start(tok: Tokenizer, source: str) -> list[str]:
    """Load the weights of the tokenizer saved at ``source`` into ``tok``; returns the names of the
    parameters left at their fresh initialization."""
    d = resolve_model_dir(source)
    meta = read_config_json(d)
    if meta["model_type"] != tok.model_type:
        raise VistokError(f"init_from {d}: a {meta['model_type']!r} tokenizer cannot initialize a {tok.model_type!r} one")
    saved = load_weights(d / WEIGHTS_NAME)
    own = tok.state_dict()
    load, fresh, bad = {}, [], []
    for name, value in own.items():
        other = saved.get(name)
        if other is not None and other.shape == value.shape:
            load[name] = other.to(value.dtype)
        elif name.startswith(ADAPTERS):
            fresh.append(name)
        else:
            bad.append(f"{name} ({'missing' if other is None else f'{tuple(other.shape)} vs {tuple(value.shape)}'})")
    if bad:
        raise VistokError(f"init_from {d}: the architectures differ beyond the bottleneck: {', '.join(bad[:5])}")
    tok.load_state_dict(load, strict=False)
    if fresh:
        logger.warning("init_from %s: %d tensors start fresh (bottleneck): %s", d, len(fresh), ", ".join(fresh[:6]))
    return fresh
