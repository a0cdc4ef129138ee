"""Text files that must end with a newline: one that does not was cut off, maybe in the middle of a number.

Writers of line-based numeric files (ASE's (extended) XYZ, FHI-aims' ``rs_*.out`` and ``band*.out``) end
every line with a newline.  A file cut off (a copy or a write interrupted, a full disk) mid-number still
parses: ``0.1545667179643495E-05`` cut to ``0.1545667179643495E-0`` is a valid number 1e5 times too large,
and a count check cannot see it.  The missing final newline can.

Examples
--------
>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "v.out")
>>> _ = open(p, "w").write("  0.25E+00\\n  0.1545E-0")
>>> check_not_cut(p, "value")
Traceback (most recent call last):
...
ValueError: ...v.out does not end with a newline: its last value '0.1545E-0' may be cut off mid-number (a truncated file?)
>>> _ = open(p, "a").write("5\\n")
>>> check_not_cut(p, "value")
"""

from __future__ import annotations

import os


def check_not_cut(path, what: str = "line") -> None:
    """Raise ValueError when the non-empty text file ``path`` does not end with a newline.

    Parameters
    ----------
    path : str or Path
    what : str
        What the message calls the last item: ``"line"`` (the whole last line is shown, its end if
        long) or e.g. ``"value"`` (its last whitespace-separated word).
    """
    size = os.path.getsize(path)
    if size == 0:
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 4096))
        tail = f.read()
    if tail.endswith((b"\n", b"\r")) or not tail.strip():
        return
    last = tail.decode("utf-8", "replace").splitlines()[-1].strip()
    if what != "line":
        last = last.split()[-1]
    shown = last if len(last) <= 60 else "..." + last[-57:]
    raise ValueError(f"{path} does not end with a newline: its last {what} {shown!r} may be cut off mid-number "
                     "(a truncated file?)")
