"""Limits shared across packages, defined once."""

#: Largest LFQ token width in bits: the exact codebook entropy keeps a 2^K mean distribution
#: (2^30 floats = 4 GiB), and the .vtok container stores at most this many bit planes.
MAX_BITS = 30

#: Highest frame rate vistok writes or accepts in a token file or .vtok header (a header claiming
#: 4294967295 fps would otherwise pass until the video writer overflows).
MAX_FPS = 1000

#: Frames larger than this are refused before any work by every command that decodes pixels
#: (reconstruct, encode, compress, decode, decompress): the network's activations grow with the
#: pixels (a 12-megapixel photo drove the tiny model past 10 GB). Full HD fits in a few GB; resize
#: larger media (--size) or raise the budget where the user trusts the file.
DEFAULT_MAX_FRAME_PIXELS = 1920 * 1088
