"""ASE-style structure selections (``--index 3``, ``0:5``, ``::2``) that refuse to be empty.

Examples
--------
>>> select_indices("1:3", 5)
[1, 2]
>>> select_indices("-1", 5)
[4]
>>> select_indices("50:60", 40, "--index", "data.h5")
Traceback (most recent call last):
...
acehamil.errors.UserError: --index 50:60 selects no structure of data.h5 (it holds 40, indices 0..39)
"""

from __future__ import annotations

from ..errors import UserError

__all__ = ["parse_selection", "select_indices"]


def parse_selection(index: str):
    """``int`` or ``slice`` from an ASE-style selection string (UserError when malformed)."""
    text = str(index).strip()
    try:
        parts = [int(x) if x.strip() else None for x in text.split(":")] if ":" in text else [int(text)]
    except ValueError:
        parts = []
    if not parts or len(parts) > 3:
        raise UserError(f"cannot read the selection {index!r}: give an index (3, -1) or a slice (0:5, ::2)")
    if len(parts) == 1 and ":" not in text:
        return parts[0]
    if len(parts) == 3 and parts[2] == 0:
        raise UserError(f"selection {index!r}: step must not be 0")
    return slice(*parts)


def select_indices(index: str, n: int, option: str = "--index", source: str = "the input") -> list:
    """Indices selected by ``index`` among ``n`` structures; UserError when out of range or empty."""
    sel = parse_selection(index)
    held = f"it holds {n}" + (f", indices 0..{n - 1}" if n else "")
    if isinstance(sel, int):
        if not -n <= sel < n:
            raise UserError(f"{option} {index} is out of range: {source} " + ("holds no structure" if n == 0 else
                            f"holds {n} (indices 0..{n - 1})"))
        return [sel % n]
    idx = list(range(n))[sel]
    if not idx:
        raise UserError(f"{option} {index} selects no structure of {source} ({held})")
    return idx
