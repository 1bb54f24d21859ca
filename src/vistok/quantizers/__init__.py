"""Quantizers (bottlenecks) behind one interface: ``latents (b, d, ...) -> QuantizerOutput``."""

from vistok.quantizers.base import Quantizer, QuantizerOutput
from vistok.quantizers.factorize import join_indices, split_indices
from vistok.quantizers.lfq import LFQ, EntropyWeightSchedule

__all__ = ["LFQ", "EntropyWeightSchedule", "Quantizer", "QuantizerOutput", "join_indices", "split_indices"]
