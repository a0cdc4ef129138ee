"""Exception classes that separate a user's mistake from a bug in acehamil.

:class:`UserError` is raised on purpose for bad input (a wrong file, option or setting); it
subclasses :class:`ValueError`, so API callers that catch ``ValueError`` keep working.  The
command line prints it as one line (exit code 2); anything else that escapes a command is
treated as a bug and shown with its traceback (exit code 1).  See ``docs/files-and-safety.md``.
"""

from __future__ import annotations

__all__ = ["UserError", "OutputExistsError"]


class UserError(ValueError):
    """Bad input, option or file: the message says what is wrong and how to fix it."""


class OutputExistsError(UserError, FileExistsError):
    """An output file exists and the command was not told to replace, append to or resume it."""
