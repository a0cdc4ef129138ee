"""The cell-level energy zero of a predicted H: ``H -> H + V S`` with ``V`` from the species densities.

A local model cannot know the constant that periodic DFT puts into absolute levels (the
cell-averaged electrostatic potential is set to zero); :class:`EnergyZero` restores it and
:func:`add_overlap` adds it to a predicted H.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...structure import RealSpaceMatrix


@dataclass(frozen=True)
class EnergyZero:
    """Energy zero of predicted H for fully periodic cells: ``V = v0 + sum_Z beta_Z N_Z / Omega`` (eV), ``H -> H + V S``.

    Periodic DFT sets the cell-averaged electrostatic potential to zero, so its absolute
    levels carry a constant that depends on the whole cell, not on any one environment: to
    first order a sum of atomic contributions divided by the cell volume (the G = 0 terms of
    the pseudopotentials, ``sum_I alpha_I / Omega``, and the mean inner potential).  A local
    model cannot know it; this term restores it from the species number densities
    ``N_Z / Omega`` (Å^-3).  It is fitted to the per-structure energy zeros ``V_s`` found by
    the energy-zero fit (``fit.energy_zero_model = "density"``).  Clusters and slabs (not
    periodic along all three axes) get ``V = 0`` (the training average).

    Attributes
    ----------
    v0 : float
        eV.
    beta : tuple of (int, float)
        ``(Z, beta_Z)`` pairs, eV Å^3.

    Examples
    --------
    >>> from ase.build import bulk
    >>> ez = EnergyZero(v0=-1.0, beta=((14, 20.0),))
    >>> round(ez.value(bulk("Si", "diamond", a=5.43, cubic=True)), 4)   # 8 atoms in 160.1 Å^3
    -0.0006
    """

    v0: float = 0.0
    beta: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "v0", float(self.v0))
        object.__setattr__(self, "beta", tuple((int(z), float(b)) for z, b in self.beta))
        if not all(np.isfinite([self.v0] + [b for _, b in self.beta])):
            raise ValueError(f"energy zero parameters must be finite, got v0={self.v0}, beta={self.beta}")

    def value(self, atoms) -> float:
        """``V`` of ``atoms`` in eV (0 unless periodic along all three axes)."""
        if not np.all(atoms.pbc):
            return 0.0
        vol = abs(float(np.linalg.det(atoms.cell.array)))
        if not vol > 0:
            raise ValueError("periodic cell with zero volume")
        numbers = np.asarray(atoms.numbers)
        return float(self.v0 + sum(b * np.count_nonzero(numbers == z) / vol for z, b in self.beta))

    def to_dict(self) -> dict:
        return {"v0_eV": self.v0, "beta_eV_A3": {str(z): b for z, b in self.beta}}

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyZero":
        return cls(v0=d["v0_eV"], beta=tuple((int(z), b) for z, b in d["beta_eV_A3"].items()))


def add_overlap(H: RealSpaceMatrix, S: RealSpaceMatrix, V: float) -> RealSpaceMatrix:
    """``H + V S`` on the pattern of ``H`` (blocks of ``S`` outside it are left out), eV.

    Examples
    --------
    >>> S = RealSpaceMatrix.from_dense([1, 1], [[0, 0, 0]], [np.array([[1.0, 0.5], [0.5, 1.0]])])
    >>> add_overlap(S.with_data(np.zeros(S.data.size)), S, 0.1).data.tolist()
    [0.1, 0.05, 0.05, 0.1]
    """
    if V == 0.0:
        return H
    # a new data array on H's (read-only, shared) index arrays: one matrix-sized temporary, not three
    if H.same_pattern(S):
        data = V * S.data
    else:
        data = V * S.on_pattern(H)[0]
    data += H.data
    return RealSpaceMatrix.adopt(H.norb_per_atom, H.i, H.j, H.shift, data)
