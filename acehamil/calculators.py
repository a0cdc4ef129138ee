"""ASE calculator for ACE site-energy potentials.

Examples
--------
>>> calc = ACECalculator.from_file("potential.h5")  # doctest: +SKIP
>>> atoms.calc = calc                                # doctest: +SKIP
>>> atoms.get_potential_energy(), atoms.get_forces() # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes


class ACECalculator(Calculator):
    """ASE calculator wrapping an :class:`~acehamil.models.potential.ACEPotential`.

    Properties: ``energy``, ``free_energy`` (eV, equal: no electronic entropy),
    ``energies`` (natoms,) eV, ``forces`` (natoms, 3) eV/Å and ``stress`` (6,) eV/Å^3
    (Voigt xx yy zz yz xz xy, ASE sign; only for cells periodic in all three
    directions).  Works for periodic, mixed and non-periodic systems.

    Parameters
    ----------
    potential : ACEPotential
    chunk_atoms : int
        Centres per basis call (memory bound for large systems).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential, chunk_atoms: int = 256, **kwargs):
        from .models.potential import ACEPotential

        if not isinstance(potential, ACEPotential):
            raise TypeError(f"expected an ACEPotential, got {type(potential).__name__}")
        super().__init__(**kwargs)
        self.potential = potential
        self.chunk_atoms = int(chunk_atoms)

    @classmethod
    def from_file(cls, path, **kwargs) -> "ACECalculator":
        """Load a potential file written by :func:`acehamil.io.potential_file.save_potential`."""
        from .io.potential_file import load_potential

        return cls(load_potential(path), **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        periodic = bool(np.all(self.atoms.pbc))
        if want_stress and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        res = self.potential.compute(
            self.atoms, forces=True, stress=want_stress or periodic, chunk_atoms=self.chunk_atoms
        )
        self.results = {
            "energy": res["energy"],
            "free_energy": res["energy"],
            "energies": res["energies"],
            "forces": res["forces"],
        }
        if "stress" in res:
            self.results["stress"] = res["stress"]
