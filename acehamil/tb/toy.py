"""Small Slater-Koster s/p tight-binding models with a non-trivial overlap.

Used by tests, doctests and benchmarks of the tight-binding layer (any
structure, any mix of s and p shells).  Hoppings are two-centre
Slater-Koster integrals ``V_{ss sigma}, V_{sp sigma}, V_{pp sigma}, V_{pp pi}``
decaying as ``exp(-decay * (d - d0))`` and tapered smoothly to zero at ``cutoff``;
the overlap has the same form with its own integrals and ``S_ii = 1``.
Real p orbitals are ordered (y, z, x) as in :mod:`acehamil.conventions`.

Examples
--------
>>> from ase.build import bulk
>>> from acehamil.structure import OrbitalBasis
>>> basis = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
>>> H, S = slater_koster(bulk("Si", "diamond", a=5.43), basis, cutoff=4.0)
>>> H.norb, H.hermiticity_error() < 1e-14, S.hermiticity_error() < 1e-14
(8, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..structure import OrbitalBasis, RealSpaceMatrix
from ..structure.neighbours import neighbour_pairs

__all__ = ["SKParams", "slater_koster"]

_P_ORDER = np.array([1, 2, 0])  # real p (m=-1,0,1) = (y, z, x) -> cartesian index


@dataclass(frozen=True)
class SKParams:
    """Slater-Koster parameters (energies eV, lengths Å; overlap integrals dimensionless).

    ``onsite`` maps ``l`` to an on-site energy added per species as
    ``onsite[l] + species_shift * (Z mod 7)`` so different species differ.
    """

    onsite: tuple = (-4.2, 1.7)  # (eps_s, eps_p)
    species_shift: float = 0.3
    hop: tuple = (-1.93, 2.54, 4.47, -1.12)  # ss sigma, sp sigma, pp sigma, pp pi (Harrison, Si)
    ovl: tuple = (0.10, -0.08, -0.12, 0.04)
    d0: float = 2.35
    decay: float = 1.2
    cutoff: float = 4.0
    taper: float = 0.6  # Å: cosine taper to zero over [cutoff - taper, cutoff]


def _two_centre(l1: int, l2: int, u: np.ndarray, v: tuple) -> np.ndarray:
    """Slater-Koster block (2l1+1, 2l2+1) for unit bond vector ``u`` (3,) from orbital 1 to 2."""
    ss, sp, pps, ppp = v
    up = u[_P_ORDER]
    if l1 == 0 and l2 == 0:
        return np.array([[ss]])
    if l1 == 0 and l2 == 1:
        return (up * sp)[None, :]
    if l1 == 1 and l2 == 0:
        return (-up * sp)[:, None]
    if l1 == 1 and l2 == 1:
        return np.outer(up, up) * (pps - ppp) + np.eye(3) * ppp
    raise ValueError(f"toy Slater-Koster model supports s and p shells only, got l = {l1}, {l2}")


def slater_koster(atoms, basis: OrbitalBasis, params: SKParams | None = None, cutoff: float | None = None) -> tuple:
    """Real-space ``H(T)`` (eV) and ``S(T)`` of an s/p Slater-Koster model.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic, mixed or non-periodic.
    basis : OrbitalBasis
        Shells with ``l`` in {0, 1} for every species present.
    params : SKParams, optional
    cutoff : float, optional
        Å; overrides ``params.cutoff``.

    Returns
    -------
    H, S : RealSpaceMatrix
        Same sparsity pattern; Hermitian (``O_ji(-T) = O_ij(T)^T``) exactly.
    """
    p = params or SKParams()
    rc = float(cutoff if cutoff is not None else p.cutoff)
    lay = basis.layout(atoms.numbers)
    nl = neighbour_pairs(atoms, rc)
    norb = lay.norb_per_atom
    ii, jj, ss, hb, sb = [], [], [], [], []
    for a, z in enumerate(atoms.numbers):
        ls = [s.l for s in basis.shells_of(int(z))]
        diag = np.concatenate([np.full(2 * l + 1, p.onsite[l] + p.species_shift * (int(z) % 7)) for l in ls])
        ii.append(a), jj.append(a), ss.append((0, 0, 0)), hb.append(np.diag(diag)), sb.append(np.eye(norb[a]))
    for q in range(len(nl)):
        a, b, d = int(nl.i[q]), int(nl.j[q]), float(nl.dist[q])
        u = nl.vec[q] / d
        x = np.clip((d - (rc - p.taper)) / p.taper, 0.0, 1.0)
        f = np.exp(-p.decay * (d - p.d0)) * 0.5 * (1.0 + np.cos(np.pi * x))  # smooth to zero at the cutoff
        la = [s.l for s in basis.shells_of(int(atoms.numbers[a]))]
        lb = [s.l for s in basis.shells_of(int(atoms.numbers[b]))]
        hrows, srows = [], []
        for l1 in la:
            hrows.append(np.hstack([_two_centre(l1, l2, u, p.hop) * f for l2 in lb]))
            srows.append(np.hstack([_two_centre(l1, l2, u, p.ovl) * f for l2 in lb]))
        ii.append(a), jj.append(b), ss.append(tuple(nl.shift[q])), hb.append(np.vstack(hrows)), sb.append(np.vstack(srows))
    shifts = np.array(ss, dtype=np.int64).reshape(-1, 3)
    H = RealSpaceMatrix.from_blocks(norb, ii, jj, shifts, hb)
    S = RealSpaceMatrix.from_blocks(norb, ii, jj, shifts, sb)
    return H, S
