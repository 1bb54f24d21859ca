"""Exception types raised on bad user input.

`VistokError` subclasses `ValueError`, so callers that catch `ValueError` (the Python convention for
bad arguments) catch ours too.
"""


class VistokError(ValueError):
    """Bad input to a public vistok entry point; the message says what was expected."""
