"""FLOPs of a call, shared by the benchmarks (torch's FlopCounterMode, plus the oneDNN convolution
that vistok's eager CPU path calls directly and torch's counter does not know)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def _mkldnn_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` (forward and, if ``fn`` runs it, backward), counting convolutions called
    through ``torch.mkldnn_convolution`` too."""
    mapping = {torch.ops.aten.mkldnn_convolution: _mkldnn_conv_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()
