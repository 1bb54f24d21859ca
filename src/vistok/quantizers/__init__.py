"""Quantizers (bottlenecks) behind one interface: ``latents (b, d, ...) -> QuantizerOutput``."""

from vistok.quantizers.base import Quantizer, QuantizerOutput
from vistok.quantizers.factorize import join_indices, split_indices
from vistok.quantizers.fsq import FSQ
from vistok.quantizers.kl import KL
from vistok.quantizers.lfq import LFQ, EntropyWeightSchedule
from vistok.quantizers.vq import VQ

__all__ = [
    "FSQ",
    "KL",
    "LFQ",
    "VQ",
    "EntropyWeightSchedule",
    "Quantizer",
    "QuantizerOutput",
    "join_indices",
    "split_indices",
]
