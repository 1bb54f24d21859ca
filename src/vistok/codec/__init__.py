"""Tokens as a compressed format (``.vtok``): entropy-coded LFQ tokens in a checked container.

    data = compress(tokenizer, video)            # video (1 c t h w) in [-1, 1] -> bytes
    video = decompress(data)                     # model found from the file's model id
    video = decompress(data, tokenizer)          # or given (refused if it is another model)

See ``docs/codec.md`` for the byte layout, :mod:`vistok.codec.entropy` for the two entropy models,
:mod:`vistok.codec.rd` for rate-distortion comparisons against x264 / x265.
"""

from vistok.codec.codec import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_MAX_PIXELS,
    CompressStats,
    compress,
    compress_indices,
    decompress,
    decompress_indices,
    find_tokenizer,
    iter_compress,
    iter_decompress,
    iter_decompress_indices,
    kept_mask,
    make_header,
    read_header,
)
from vistok.codec.container import Header, ModelMismatchError, VistokFormatError
from vistok.codec.entropy import ContextBitModel, StaticBitModel

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
    "DEFAULT_MAX_PIXELS",
    "CompressStats",
    "ContextBitModel",
    "Header",
    "ModelMismatchError",
    "StaticBitModel",
    "VistokFormatError",
    "compress",
    "compress_indices",
    "decompress",
    "decompress_indices",
    "find_tokenizer",
    "iter_compress",
    "iter_decompress",
    "iter_decompress_indices",
    "kept_mask",
    "make_header",
    "read_header",
]
