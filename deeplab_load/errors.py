"""Errors a user can act on.

A :class:`UserError` says what is wrong with an input the user gave (a flag, a file, a data set,
a checkpoint, a run directory) and how to fix it, naming the flag or file. The command-line entry
points print its message in one or two lines and exit non-zero, without a traceback; anything
else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake in the user's flags, files or data; the message names it and the fix."""


class FlagError(UserError, ValueError):
    """One or more flags are invalid (the message lists every bad flag with its valid range)."""


class DamagedFileError(UserError, ValueError):
    """A file the run wrote or reads is unreadable (truncated, corrupt); the message names it."""


class NonFiniteError(UserError, FloatingPointError):
    """A loss, metric or model output is NaN or infinite; the message names where and why."""


def first_line(error):
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
