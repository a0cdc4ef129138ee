"""A fixed (not fitted) short-range pair repulsion for site-energy potentials.

Data-driven potentials know nothing about distances shorter than those in the
training set; without a core, atoms pushed together may collapse.  This term is
zero (with two continuous derivatives) beyond a core radius ``r_core`` chosen
below the shortest training distance, so it does not disturb the fit::

    phi(r) = strength * (r_core - r)^3 / r      for r < r_core,  0 otherwise

and ``E_rep = 1/2 sum_{i != j} phi(r_ij)`` over directed pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RepulsionSpec:
    """Core repulsion parameters.

    Attributes
    ----------
    r_core : tuple of ((int, int), float)
        Per unordered species pair ``(Z1, Z2)`` with ``Z1 <= Z2``, the core radius in Å.
    strength : float
        eV Å^-2; ``phi(r) = strength (r_core - r)^3 / r``.

    Examples
    --------
    >>> rep = RepulsionSpec(r_core=(((14, 14), 1.9),), strength=10.0)
    >>> phi, dphi = rep.pair(np.array([14]), np.array([14]), np.array([1.0]))
    >>> round(float(phi[0]), 3), bool(dphi[0] < 0)
    (7.29, True)
    """

    r_core: tuple = ()
    strength: float = 10.0

    def __post_init__(self):
        pairs = []
        for item in self.r_core:
            (z1, z2), r = item
            if not (np.isfinite(r) and r > 0):
                raise ValueError(f"core radius for pair {(z1, z2)} must be positive, got {r}")
            pairs.append(((min(int(z1), int(z2)), max(int(z1), int(z2))), float(r)))
        object.__setattr__(self, "r_core", tuple(sorted(pairs)))
        if not (np.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"repulsion strength must be finite and >= 0, got {self.strength}")

    @property
    def max_radius(self) -> float:
        """Largest core radius, Å (0 when empty)."""
        return max((r for _, r in self.r_core), default=0.0)

    def radius_table(self, species) -> np.ndarray:
        """Core radii as a (n_species, n_species) table in the order of ``species`` (0 where absent)."""
        species = list(species)
        table = np.zeros((len(species), len(species)))
        for (z1, z2), r in self.r_core:
            if z1 in species and z2 in species:
                a, b = species.index(z1), species.index(z2)
                table[a, b] = table[b, a] = r
        return table

    def pair(self, zi, zj, dist) -> tuple[np.ndarray, np.ndarray]:
        """Pair energy and its radial derivative.

        Parameters
        ----------
        zi, zj : ndarray of int, shape (P,)
        dist : ndarray of float, shape (P,), Å

        Returns
        -------
        phi : ndarray, shape (P,), eV
        dphi_dr : ndarray, shape (P,), eV/Å
        """
        zi, zj, dist = np.asarray(zi), np.asarray(zj), np.asarray(dist, dtype=float)
        rc = np.zeros(dist.shape)
        lo, hi = np.minimum(zi, zj), np.maximum(zi, zj)
        for (z1, z2), r in self.r_core:
            rc[(lo == z1) & (hi == z2)] = r
        x = np.clip(rc - dist, 0.0, None)
        phi = self.strength * x**3 / dist
        dphi = self.strength * (-3.0 * x**2 / dist - x**3 / dist**2)
        return phi, dphi

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"r_core": [[list(p), r] for p, r in self.r_core], "strength": self.strength}

    @classmethod
    def from_dict(cls, d: dict) -> "RepulsionSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(r_core=tuple((tuple(p), float(r)) for p, r in d["r_core"]), strength=float(d["strength"]))
