"""vistok: images and videos to discrete tokens and back.

Layout convention everywhere: pixels and latents are ``b c t h w`` float tensors, pixels in
[-1, 1]; an image is a clip with ``t = 1``.
"""

from vistok.errors import VistokError

__version__ = "0.1.0"

__all__ = ["VistokError", "__version__", "load_tokenizer"]


def load_tokenizer(path_or_name, **kwargs):
    """Load a tokenizer saved by ``save_pretrained`` (a directory) or a shipped one by name
    (``"default"``, ``"tiny-codec"``, ``"omni"``; see ``vistok.tokenizers.registry.SHIPPED_MODELS``)."""
    from vistok.tokenizers.registry import load_tokenizer as _load

    return _load(path_or_name, **kwargs)
