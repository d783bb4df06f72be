"""The one exception type that means "the user asked for something we cannot do".

The CLI prints these as a single line (``effnet: error: ...``) instead of a traceback;
anything else escaping the library is a bug in effnet.
"""

from __future__ import annotations

__all__ = ["EffnetError", "out_of_memory_message"]


class EffnetError(Exception):
    """A problem with the user's input (a model name, a file, an option), with a message that says what to do."""


def out_of_memory_message(batch_size: int, device: object) -> str:
    """What to say when a batch does not fit: the batch size that failed and one to try."""
    if batch_size == 1:
        return f"out of memory on {device} even at batch size 1; try a smaller --img-size or --amp bf16"
    return f"out of memory at batch size {batch_size} on {device}; try --batch-size {batch_size // 2}"
