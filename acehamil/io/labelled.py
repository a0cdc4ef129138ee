"""Labelled structures (energies, forces, stresses) for potentials, read with ASE.

Extended XYZ with energies and forces (and optionally stresses) is the common
case; anything ``ase.io.read`` understands works if it carries a
``SinglePointCalculator`` or ``info['energy']`` / ``arrays['forces']``.
Units are ASE's (eV, Å), the package's own.
"""

from __future__ import annotations

from ..models.potential.data import Config, config_from_atoms


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
