"""The one exception type for mistakes a user can fix (bad files, bad flags, bad text).

The CLI prints these as a single line and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class SmaltoError(Exception):
    """A user-facing error: the message names the file, line or field at fault."""


class ContextLengthError(SmaltoError):
    """The text or conversation does not fit in the model's context."""
