"""One structure with its electronic-structure matrices: the unit that flows
between readers, the dataset file, models and the tight-binding layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from .blocks import RealSpaceMatrix
from .orbitals import OrbitalBasis, OrbitalLayout


@dataclass(frozen=True, eq=False)
class StructureData:
    """Atoms, orbital basis, and real-space H and S (acehamil conventions, eV and Å).

    Attributes
    ----------
    atoms : ase.Atoms
        Positions in Å; ``cell``/``pbc`` define periodicity (a cluster has no pbc).
    basis : OrbitalBasis
    H : tuple of RealSpaceMatrix
        One per spin channel (1 or 2), eV.  May be empty (S-only data).
    S : RealSpaceMatrix or None
        Overlap, dimensionless.
    fermi_level : float or None
        eV.
    energy : float or None
        Total energy, eV.
    forces : ndarray, shape (natoms, 3), or None
        eV/Å.
    reference_bands : tuple (kpts (nk, 3) fractional, eps (nk, nbands) eV) or None
        The DFT code's own eigenvalues, absolute energies in eV.
    n_electrons : float or None
        Valence electrons per cell counted by the basis (for Fermi levels).
    info : dict
        Free-form provenance (source code, file names, method).
    H_draws : ndarray, float, shape (K, H[0].data.size), or None
        Posterior draws of a predicted H minus the prediction (same layout as
        ``H[0].data``), eV: the model's predictive uncertainty, calibrated
        (``docs/uncertainty.md``).  The spread of an entry is ``sqrt(mean(H_draws**2, 0))``.
    """

    atoms: Atoms
    basis: OrbitalBasis
    H: tuple = ()
    S: RealSpaceMatrix | None = None
    fermi_level: float | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    reference_bands: tuple | None = None
    n_electrons: float | None = None
    info: dict = field(default_factory=dict)
    H_draws: np.ndarray | None = None

    def __post_init__(self):
        pos = self.atoms.get_positions()
        if not np.all(np.isfinite(pos)):
            raise ValueError("atomic positions contain NaN or inf")
        lay = self.layout  # raises for unknown species
        object.__setattr__(self, "H", tuple(self.H))
        for name, m in [("S", self.S)] + [(f"H[{s}]", h) for s, h in enumerate(self.H)]:
            if m is None:
                continue
            if not np.array_equal(m.norb_per_atom, lay.norb_per_atom):
                raise ValueError(
                    f"{name}: orbitals per atom {m.norb_per_atom.tolist()[:8]} do not match the basis "
                    f"{lay.norb_per_atom.tolist()[:8]} (basis mismatch)"
                )
        if len(self.H) > 2:
            raise ValueError(f"at most 2 spin channels, got {len(self.H)}")
        if self.H_draws is not None:
            d = np.asarray(self.H_draws)
            if not self.H or d.ndim != 2 or d.shape[1] != self.H[0].data.size or d.shape[0] < 1:
                raise ValueError(f"H_draws must have shape (K, {self.H[0].data.size if self.H else 0}), got {d.shape}")
            if not np.all(np.isfinite(d)):
                raise ValueError("H_draws contain NaN or inf")

    @property
    def layout(self) -> OrbitalLayout:
        return self.basis.layout(self.atoms.numbers)

    @property
    def periodic(self) -> bool:
        return bool(np.any(self.atoms.pbc))

    @property
    def nspin(self) -> int:
        return len(self.H)
