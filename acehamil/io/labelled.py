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
    """
    import ase.io

    frames = ase.io.read(str(path), index=index)
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"{path} holds no structures")
    out = []
    for k, atoms in enumerate(frames):
        try:
            out.append(config_from_atoms(atoms))
        except ValueError as err:
            raise ValueError(f"{path}, frame {k}: {err}") from None
    return out
