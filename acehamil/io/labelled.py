"""Labelled structures (energies, forces, stresses) for potentials, read with ASE.

Extended XYZ with energies and forces (and optionally stresses) is the common
case; anything ``ase.io.read`` understands works if it carries a
``SinglePointCalculator`` or ``info['energy']`` / ``arrays['forces']``.
Units are ASE's (eV, Å), the package's own.
"""

from __future__ import annotations

import re

from ..models.potential.data import Config, config_from_atoms


#: Formats whose writers end every line with a newline: a last line without one was cut off.
_LINE_FORMATS = ("xyz", "extxyz")


def check_not_cut(path) -> None:
    """Refuse an (extended) XYZ file whose last line has no newline: it was cut off, maybe mid-number.

    ASE reads ``1.40743818`` cut to ``1.407`` as a valid, shorter number, so a truncated file (a
    copy or a write interrupted) would give silently wrong positions, energies or forces
    (:func:`acehamil.io.text_files.check_not_cut`).  Other formats are ASE's to check.

    Raises
    ------
    UserError
        Naming the file and its last line.

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "cut.xyz")
    >>> _ = open(p, "w").write("1\\n\\nSi 0.0 0.0 1.40")
    >>> check_not_cut(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    acehamil.errors.UserError: ...cut.xyz does not end with a newline: its last line 'Si 0.0 0.0 1.40' may be cut off mid-number (a truncated file?); if the file is complete, end it with a newline
    >>> _ = open(p, "a").write("\\n")
    >>> check_not_cut(p)
    """
    import os

    from ase.io.formats import filetype

    from ..errors import UserError
    from .text_files import check_not_cut as check_text

    if os.path.getsize(path) == 0:
        return
    try:
        fmt = filetype(str(path), read=True, guess=True)
    except Exception:  # noqa: BLE001 - unknown formats are ASE's to report
        return
    if fmt not in _LINE_FORMATS:
        return
    try:
        check_text(path)
    except ValueError as err:
        raise UserError(f"{err}; if the file is complete, end it with a newline") from None
    check_xyz_counts(path)


def check_xyz_counts(path) -> None:
    """Refuse an (extended) XYZ file whose frame header asks more atoms than the file has lines left.

    ASE skips a frame's atom lines one by one before it parses them: a header of ``99999999999`` atoms
    (a corrupted count) kept it reading past the end for hours.  One pass over the file's lines; a header
    that is not an integer is left to ASE's own message.

    Raises
    ------
    UserError
        Naming the file, the frame, its count and the lines left.

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "big.xyz")
    >>> _ = open(p, "w").write("99999999999\\n\\nSi 0 0 0\\n")
    >>> check_xyz_counts(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    acehamil.errors.UserError: ...big.xyz: frame 0 (line 1) says 99999999999 atoms, but only 1 lines follow its comment line (a wrong atom count or a truncated file?)
    """
    from ..errors import UserError

    with open(path, "rb") as f:
        total = sum(1 for _ in f)
    with open(path, "rb") as f:
        line_no, frame = 0, 0
        for raw in f:
            line_no += 1
            if not raw.strip():
                return
            try:
                n = int(raw)
            except ValueError:
                return  # not a count line: ASE names it
            left = total - line_no - 1
            if n < 0 or n > left:
                raise UserError(f"{path}: frame {frame} (line {line_no}) says {n} atoms, but only {max(left, 0)} lines "
                                f"follow its comment line (a wrong atom count or a truncated file?)")
            _check_pbc_flags(next(f), path, frame, line_no + 1)
            for _ in range(n):  # the atoms
                next(f)
            line_no += n + 1
            frame += 1


_PBC = re.compile(rb"""(?:^|\s)pbc\s*=\s*(?:"([^"]*)"|'([^']*)'|(\S+))""", re.IGNORECASE)
_FLAGS = {b"t", b"f", b"true", b"false"}


def _check_pbc_flags(comment: bytes, path, frame: int, line_no: int) -> None:
    """UserError unless an extended XYZ comment line's ``pbc=`` holds 3 flags T/F (True/False), or one for all: ASE
    read ``pbc="T X T"`` as periodic along all three axes, without a word."""
    m = _PBC.search(comment)
    if m is None:
        return
    value = next(g for g in m.groups() if g is not None)
    flags = value.split()
    if len(flags) not in (1, 3) or any(x.lower() not in _FLAGS for x in flags):
        from ..errors import UserError

        raise UserError(f"{path}: frame {frame} (line {line_no}): pbc={value.decode(errors='replace')!r} is not three "
                        "flags T or F (one per cell vector), nor one for all three")


def read_configs(path, index: str = ":") -> list[Config]:
    """Read labelled structures with ``ase.io.read(path, index=index)``.

    Parameters
    ----------
    path : str or Path
    index : str
        ASE index string (default all frames).

    Returns
    -------
    list of Config

    Raises
    ------
    UserError
        A missing, empty or unreadable file; a frame without labels or with non-finite ones
        (:func:`~acehamil.models.potential.data.config_from_atoms`); a frame with non-finite
        positions or cell, unknown species or atoms on top of each other (the message names
        the file and frame).
    """
    import os

    import ase.io

    from ..errors import UserError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such structure file: {path}")
    if os.path.getsize(path) == 0:
        raise UserError(f"{path} is empty: no labelled structures")
    check_not_cut(path)
    try:
        frames = ase.io.read(str(path), index=index)
    except Exception as err:  # noqa: BLE001 - ASE's parsers raise anything on foreign input
        raise UserError(f"{path}: ASE cannot read labelled structures from it ({type(err).__name__}: {err}); "
                        f"give an extended XYZ (or other ASE-readable) file with energies and forces") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise UserError(f"{path} holds no structures")
    from ..structure.validate import check_atoms

    out = []
    for k, atoms in enumerate(frames):
        try:
            out.append(config_from_atoms(atoms))
        except ValueError as err:
            raise UserError(f"{path}, frame {k}: {err}") from None
        check_atoms(atoms, f"{path}, frame {k}")  # finite, known species, no atoms on top of each other
    return out
