"""ASE calculator for ACE site-energy potentials.

Examples
--------
A tiny model with made-up coefficients (a fitted one comes from
``ACECalculator.from_file("potential.h5")``):

>>> from ase.build import bulk
>>> from acehamil.models.potential.model import ACEPotential, feature_degrees
>>> from acehamil.models.potential.config import make_basis
>>> basis = make_basis((14,), r_cut=4.0, n_max=3, max_nu=2, max_degree=(4, 4))
>>> coef = 1e-2 * np.ones((1, len(feature_degrees(basis))))
>>> atoms = bulk("Si", "diamond", a=5.43)
>>> atoms.calc = ACECalculator(ACEPotential(basis, (14,), [-4.0], coef))
>>> bool(abs(atoms.get_forces()).max() < 1e-10), atoms.get_stress().shape
(True, (6,))
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes


class ACECalculator(Calculator):
    """ASE calculator wrapping an :class:`~acehamil.models.potential.ACEPotential` or
    :class:`~acehamil.models.potential.embedded.EmbeddedACEPotential` or
    :class:`~acehamil.models.potential.multilayer.MultilayerACEPotential`.

    Properties: ``energy``, ``free_energy`` (eV, equal: no electronic entropy),
    ``energies`` (natoms,) eV, ``forces`` (natoms, 3) eV/Å and ``stress`` (6,) eV/Å^3
    (Voigt xx yy zz yz xz xy, ASE sign; only for cells periodic in all three
    directions).  Works for periodic, mixed and non-periodic systems.

    With a ``posterior`` (:class:`~acehamil.models.potential.uncertainty.PotentialPosterior`,
    from a BLR fit) the results also hold ``energy_sigma`` (eV, standard deviation of the
    total energy) and ``forces_sigma`` ((natoms, 3) eV/Å, of each force component), calibrated
    on the training folds (``docs/uncertainty.md``).

    Parameters
    ----------
    potential : ACEPotential, EmbeddedACEPotential or MultilayerACEPotential
    chunk_atoms : int
        Centres per basis call (memory bound for large systems).
    posterior : PotentialPosterior, optional
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential, chunk_atoms: int = 256, posterior=None, **kwargs):
        from .models.potential.embedded import EmbeddedACEPotential
        from .models.potential.model import ACEPotential
        from .models.potential.multilayer import MultilayerACEPotential

        if not isinstance(potential, (ACEPotential, EmbeddedACEPotential, MultilayerACEPotential)):
            raise TypeError(f"expected an ACEPotential, EmbeddedACEPotential or MultilayerACEPotential, got {type(potential).__name__}")
        if isinstance(chunk_atoms, bool) or int(chunk_atoms) != chunk_atoms or chunk_atoms < 1:
            raise ValueError(f"chunk_atoms must be an integer >= 1, got {chunk_atoms!r}")
        super().__init__(**kwargs)
        self.potential = potential
        self.chunk_atoms = int(chunk_atoms)
        self.posterior = posterior

    @classmethod
    def from_file(cls, path, uncertainty: bool = False, **kwargs) -> "ACECalculator":
        """Load a potential file written by :func:`acehamil.io.potential_file.save_potential`.

        With ``uncertainty=True`` the posterior stored in the file is used (``energy_sigma``,
        ``forces_sigma`` in the results); a file without one raises ``ValueError``.
        """
        from .io.potential_file import load_posterior, load_potential

        if uncertainty:
            if kwargs.get("posterior") is not None:
                raise ValueError("pass either uncertainty=True or a posterior, not both")
            kwargs["posterior"] = load_posterior(path)
            if kwargs["posterior"] is None:
                raise ValueError(f"{path} stores no posterior: fit with solver = \"blr\" (linear or multilayer model)")
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
        if self.posterior is not None:
            from .models.potential.uncertainty import predict_sigma

            self.results.update(predict_sigma(self.potential, self.posterior, self.atoms))
