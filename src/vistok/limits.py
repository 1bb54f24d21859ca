"""Limits shared across packages, defined once."""

#: Largest LFQ token width in bits: the exact codebook entropy keeps a 2^K mean distribution
#: (2^30 floats = 4 GiB), and the .vtok container stores at most this many bit planes.
MAX_BITS = 30

#: Highest frame rate vistok writes or accepts in a token file or .vtok header (a header claiming
#: 4294967295 fps would otherwise pass until the video writer overflows).
MAX_FPS = 1000
