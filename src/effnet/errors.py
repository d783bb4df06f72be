"""The one exception type that means "the user asked for something we cannot do".

The CLI prints these as a single line (``effnet: error: ...``) instead of a traceback;
anything else escaping the library is a bug in effnet.
"""

from __future__ import annotations


class EffnetError(Exception):
    """A problem with the user's input (a model name, a file, an option), with a message that says what to do."""
