"""End-to-end jobs built from the library's parts: reconstruct a media file, tokenize a labelled
set, evaluate tokenizers, the demo. The CLI is a thin layer over these."""
