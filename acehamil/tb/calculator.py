"""An ASE-calculator-like view of a tight-binding ``H``, ``S``: eigenvalues on a k-grid, Fermi level,
band structure, DOS - with the method names ASE's DFT calculators use, so ASE tools
(``ase.dft.bandgap.bandgap(calc)``, ``ase.dft.dos.DOS``-style code) work on predictions.

Examples
--------
>>> from ase.build import bulk
>>> from acehamil.structure import OrbitalBasis, StructureData
>>> from acehamil.tb.toy import slater_koster
>>> si = bulk("Si", "diamond", a=5.43)
>>> basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
>>> H, S = slater_koster(si, basis)
>>> calc = TBCalculator(StructureData(si, basis, H=(H,), S=S, n_electrons=8), kmesh=(4, 4, 4))
>>> calc.get_number_of_bands(), len(calc.get_ibz_k_points()), bool(calc.get_fermi_level() < calc.get_eigenvalues(0)[4])
(8, 32, True)
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..structure import StructureData

__all__ = ["TBCalculator"]


class TBCalculator:
    """Eigenvalues, Fermi level, bands and DOS of one structure's ``H``, ``S``.

    Parameters
    ----------
    data : StructureData, or a HamiltonianModel together with ``atoms``
        The matrices (a model predicts them for ``atoms``).
    atoms : ase.Atoms, optional
        With a model.
    kmesh : 3 ints, optional
        Monkhorst-Pack grid of :meth:`get_eigenvalues` (time-reversal reduced); default
        :func:`acehamil.tb.kpath.kmesh_for`.
    charge : float
        With a model: net charge (electrons removed) for the electron count.
    width, smearing
        Smearing of the Fermi level for metals (eV; see :mod:`acehamil.tb.smearing`).
    **solver_kw
        ``max_condition``, ``remedy``, ``s_threshold`` (:func:`acehamil.tb.eigen.solve_k`).
    """

    name = "acehamil-tb"

    def __init__(self, data, atoms=None, kmesh=None, charge: float = 0.0, width: float = 0.01,
                 smearing: str = "fermi-dirac", **solver_kw):
        if not isinstance(data, StructureData):
            if atoms is None or not hasattr(data, "predict_structure"):
                raise TypeError("TBCalculator needs a StructureData, or a HamiltonianModel and atoms")
            data = data.predict_structure(atoms, charge=charge)
        elif atoms is not None:
            raise TypeError("give atoms only with a model (a StructureData carries its own)")
        from .kpath import kmesh_for
        from .smearing import _check

        _check(float(width), smearing, 1)  # refused now, not only when a metal needs the smearing
        self.data = data
        self.atoms = data.atoms
        self.kmesh = tuple(kmesh_for(data.atoms) if kmesh is None else (int(n) for n in kmesh))
        self.width, self.smearing, self.solver_kw = float(width), smearing, dict(solver_kw)

    @cached_property
    def _grid(self) -> tuple:
        from .bands import eigenvalues
        from .dos import monkhorst_pack
        from .kpath import effective_pbc

        k, w = monkhorst_pack(self.kmesh, effective_pbc(self.atoms))
        return k, w, eigenvalues(self.data, k, **self.solver_kw)

    def get_ibz_k_points(self) -> np.ndarray:
        """k-points (nk, 3), fractional (Monkhorst-Pack, reduced by time reversal)."""
        return self._grid[0].copy()

    def get_k_point_weights(self) -> np.ndarray:
        """Weights (nk,), sum 1."""
        return self._grid[1].copy()

    def get_number_of_spins(self) -> int:
        return self.data.nspin

    def get_number_of_bands(self) -> int:
        return int(self._grid[2].shape[-1])

    def get_eigenvalues(self, kpt: int = 0, spin: int = 0) -> np.ndarray:
        """Eigenvalues (nbands,) in eV (absolute) at k-point index ``kpt`` of the grid."""
        eps = self._grid[2]
        if not 0 <= spin < eps.shape[0]:
            raise ValueError(f"spin {spin} out of range (0..{eps.shape[0] - 1})")
        if not -eps.shape[1] <= kpt < eps.shape[1]:
            raise ValueError(f"k-point {kpt} out of range (0..{eps.shape[1] - 1})")
        return eps[spin, kpt].copy()

    @cached_property
    def _fermi(self):
        from .smearing import fermi_level

        if self.data.n_electrons is None:
            return None if self.data.fermi_level is None else float(self.data.fermi_level)
        k, w, eps = self._grid
        return fermi_level(eps, w, float(self.data.n_electrons), self.width, self.smearing, 2 if eps.shape[0] == 1 else 1)

    def get_fermi_level(self) -> float:
        """Fermi level (eV) from the electron count on the grid (mid-gap for insulators).

        Raises
        ------
        ValueError
            Neither an electron count nor a stored Fermi level is known.
        """
        if self._fermi is None:
            raise ValueError("no electron count and no stored Fermi level: predict with a model that stores "
                             "valence electrons, or set n_electrons")
        return float(self._fermi)

    def band_structure(self, path: str | None = None, npoints: int = 200, **kw):
        """ASE ``BandStructure`` along ``path`` (default: the lattice's standard path), reference = E_F."""
        from .bands import band_structure

        return band_structure(self.data, path=path, npoints=npoints, fermi_level=self._fermi, **self.solver_kw,
                              **kw).band_structure

    def get_dos(self, **kw):
        """:func:`acehamil.tb.dos.density_of_states` of the structure (keywords passed on)."""
        from .dos import density_of_states

        kw.setdefault("kmesh", self.kmesh)
        kw.setdefault("fermi_level", self._fermi)
        return density_of_states(self.data, **{**self.solver_kw, **kw})
