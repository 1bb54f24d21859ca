"""Tokenizers behind one interface (:class:`Tokenizer`): MAGVIT-v2 and OmniTokenizer."""

from vistok.tokenizers.base import TOKENIZERS, Tokenizer, TokenizerOutput, split_clip
from vistok.tokenizers.magvit2 import MAGVIT2_PRESETS, Magvit2Config, Magvit2Tokenizer
from vistok.tokenizers.omni import OMNI_PRESETS, OmniConfig, OmniTokenizer
from vistok.tokenizers.registry import load_tokenizer

__all__ = [
    "MAGVIT2_PRESETS",
    "OMNI_PRESETS",
    "Magvit2Config",
    "Magvit2Tokenizer",
    "OmniConfig",
    "OmniTokenizer",
    "TOKENIZERS",
    "Tokenizer",
    "TokenizerOutput",
    "load_tokenizer",
    "split_clip",
]
