"""Generation from tokens: a MaskGIT-style masked token model and an autoregressive baseline,
factorized sub-token embeddings/heads, the shared masking schedule, token-set files and the
trainer. See docs/generation.md."""

from vistok.generate.autoregressive import ARSample, AutoregressiveTokenModel
from vistok.generate.base import LMBatch, TokenLM, build_lm, guide, load_lm
from vistok.generate.config import LM_PRESETS, LMConfig, lm_config
from vistok.generate.masked_lm import MaskedTokenModel
from vistok.generate.sampling import maskgit_decode, sample_subtokens
from vistok.generate.schedule import mask_ratio
from vistok.generate.tokens import TokenFactorization


__all__ = [
    "ARSample",
    "AutoregressiveTokenModel",
    "LMBatch",
    "LMConfig",
    "LM_PRESETS",
    "MaskedTokenModel",
    "TokenFactorization",
    "TokenLM",
    "build_lm",
    "guide",
    "lm_config",
    "load_lm",
    "mask_ratio",
    "maskgit_decode",
    "sample_subtokens",
]
