"""Exception classes that separate a user's mistake from a bug in acehamil.

:class:`UserError` is raised on purpose for bad input (a wrong file, option or setting); it
subclasses :class:`ValueError`, so API callers that catch ``ValueError`` keep working.  The
command line prints it as one line (exit code 2); anything else that escapes a command is
treated as a bug and shown with its traceback (exit code 1).  See ``docs/files-and-safety.md``.
"""

from __future__ import annotations

__all__ = ["UserError", "OutputExistsError", "check_type"]


class UserError(ValueError):
    """Bad input, option or file: the message says what is wrong and how to fix it."""


class OutputExistsError(UserError, FileExistsError):
    """An output file exists and the command was not told to replace, append to or resume it."""


def check_type(name: str, value, default, source: str = "") -> None:
    """Raise UserError (naming the key and file) unless ``value`` has the kind of ``default``.

    Numbers accept int and float (booleans are never numbers); lists must hold numbers when
    the default does; strings and booleans must match.

    Examples
    --------
    >>> check_type("[h_onsite] r_cut", "six", 5.0, "fit.toml")
    Traceback (most recent call last):
    ...
    acehamil.errors.UserError: fit.toml: [h_onsite] r_cut must be a number, got 'six' (a string)
    """
    where = f"{source}: " if source else ""

    def kind(x):
        if isinstance(x, bool):
            return "a boolean (true/false)"
        if isinstance(x, (int, float)):
            return "a number"
        if isinstance(x, str):
            return "a string"
        if isinstance(x, (list, tuple)):
            return "a list"
        return "a table" if isinstance(x, dict) else type(x).__name__

    if default is None:
        return
    want, got = kind(default), kind(value)
    if want != got:
        raise UserError(f"{where}{name} must be {want}, got {value!r} ({got})")
    if isinstance(value, (tuple, list)):
        numeric = not default or all(isinstance(x, (int, float)) for x in default)
        bad = [x for x in value if isinstance(x, bool) or not isinstance(x, (int, float) if numeric else (int, float, str))]
        if bad:
            raise UserError(f"{where}{name} must be a list of numbers, got {list(value)!r}")
