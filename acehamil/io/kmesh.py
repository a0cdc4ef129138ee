"""k-point meshes for periodic DFT data generation, chosen from the cell (pure geometry, no DFT code).

Two meshes matter when a DFT code's ``H(k)`` is turned into real-space blocks ``H(T)``:

* the **Fourier mesh** ``n1 x n2 x n3`` (Gamma-centred): ``H(T) = 1/N sum_k H(k) exp(-2 pi i k.T)`` is
  periodic on the *Fourier supercell* spanned by ``n_i a_i``, so a bond vector ``d`` and its images
  ``d + L`` (``L`` a supercell vector) share one number.  Every bond with ``|d| <= r_cut`` is the unique
  shortest of its images, and no second image is also within ``r_cut``, exactly when the shortest
  non-zero supercell vector is longer than ``2 r_cut`` (then ``|d + L| >= |L| - |d| > r_cut``): the
  Wigner-Seitz cell of the Fourier supercell contains the ``r_cut`` sphere.  This is a property of the
  cell alone, so it holds however the atoms move.  :func:`fourier_kmesh_for` picks the smallest such
  mesh, :func:`check_fourier_kmesh` refuses a coarser one with the numbers.
* the **SCF mesh** (Monkhorst-Pack with Gamma): :func:`scf_kmesh_for` gives every cell the same
  k-density, measured as the Born-von Karman supercell's smallest plane spacing (>= ``length`` Å).  A
  Gamma-only SCF of an ``n x n x n`` supercell samples exactly the k-points of an ``n x n x n`` mesh of
  the small cell, so a 64-atom 2x2x2 diamond supercell gets ``1 x 1 x 1`` where its 8-atom cell gets
  ``2 x 2 x 2``.

Examples
--------
>>> import numpy as np
>>> cubic = 5.43 * np.eye(3)                      # 8-atom diamond Si cell
>>> fourier_kmesh_for(cubic, 12.0), scf_kmesh_for(cubic)
((5, 5, 5), (2, 2, 2))
>>> fourier_kmesh_for(2 * cubic, 12.0), scf_kmesh_for(2 * cubic)   # 64-atom supercell
((3, 3, 3), (1, 1, 1))
>>> round(max_r_cut(cubic, (4, 4, 4)), 3)        # what a 4x4x4 mesh can hold
10.86
"""

from __future__ import annotations

import itertools

import numpy as np

#: SCF k-density: the Born-von Karman supercell's plane spacing is at least this (Å); gives 2x2x2 for
#: the 8-atom 5.43 Å Si cell (the shipped data's setting) and 1x1x1 for its 2x2x2 supercell.
SCF_LENGTH = 10.0


def _cell(cell) -> np.ndarray:
    c = np.asarray(getattr(cell, "array", cell), dtype=float)
    if c.shape != (3, 3):
        raise ValueError(f"cell must be a 3x3 matrix (rows are lattice vectors, Å), got shape {c.shape}")
    if abs(np.linalg.det(c)) < 1e-8:
        raise ValueError("cell is singular (a periodic structure needs three independent lattice vectors)")
    return c


def _mesh(mesh) -> np.ndarray:
    m = np.asarray(mesh)
    if m.shape != (3,) or np.any(m != np.rint(m)) or np.any(m < 1):
        raise ValueError(f"a k-mesh is three positive integers, got {mesh!r}")
    return m.astype(np.int64)


def shortest_vector(lattice) -> float:
    """Length of the shortest non-zero vector of the lattice spanned by the rows of ``lattice`` (Å).

    Exact: every integer combination ``m`` with ``|m @ lattice| <= R`` has ``|m_i| <= R |b_i|``
    (``b_i`` the reciprocal rows, no 2 pi), so a finite search with ``R`` = the shortest row suffices.
    """
    lat = _cell(lattice)
    R = np.linalg.norm(lat, axis=1).min()
    recip = np.linalg.inv(lat).T
    bound = np.floor(R * np.linalg.norm(recip, axis=1) + 1e-9).astype(int)
    ranges = [np.arange(-b, b + 1) for b in bound]
    m = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    m = m[np.any(m != 0, axis=1)]
    return float(np.linalg.norm(m @ lat, axis=1).min())


def max_r_cut(cell, mesh) -> float:
    """Largest ``r_cut`` (Å) whose bonds are all unique shortest images on this Fourier mesh (half the
    shortest Fourier-supercell vector)."""
    return 0.5 * shortest_vector(_mesh(mesh)[:, None] * _cell(cell))


def fourier_kmesh_for(cell, r_cut: float) -> tuple:
    """Smallest Gamma-centred Fourier mesh (fewest k-points) whose supercell holds the ``r_cut`` sphere.

    Parameters
    ----------
    cell : array, shape (3, 3), Å (rows are lattice vectors), or ase.Cell
    r_cut : float
        Bond cutoff, Å.

    Returns
    -------
    tuple of 3 int
        ``n`` with shortest non-zero vector of ``diag(n) @ cell`` > ``2 r_cut``; among equally small
        meshes the most isotropic one.
    """
    c = _cell(cell)
    if not r_cut > 0:
        raise ValueError(f"r_cut must be positive, got {r_cut}")
    need = 2.0 * float(r_cut) + 1e-6
    lo = np.floor(need / np.linalg.norm(c, axis=1)).astype(int) + 1  # n_i |a_i| > 2 r_cut is necessary
    hi = np.floor(need * np.linalg.norm(np.linalg.inv(c).T, axis=1)).astype(int) + 1  # plane spacing: sufficient
    best = None
    for n in itertools.product(*[range(a, max(a, b) + 1) for a, b in zip(lo, hi)]):
        key = (int(np.prod(n)), max(n) - min(n), n)
        if best is not None and key >= best[0]:
            continue
        if shortest_vector(np.asarray(n)[:, None] * c) > need:
            best = (key, n)
    return tuple(int(x) for x in best[1])


def check_fourier_kmesh(cell, mesh, r_cut: float) -> None:
    """Refuse a Fourier mesh on which some bond ``<= r_cut`` is not the unique shortest image.

    Raises
    ------
    ValueError
        With the mesh that is needed and the ``r_cut`` this mesh can hold.
    """
    m = _mesh(mesh)
    reach = max_r_cut(cell, m)
    if reach <= r_cut:
        need = fourier_kmesh_for(cell, r_cut)
        raise ValueError(
            f"Fourier k-mesh {'x'.join(map(str, m))} is too coarse for r_cut {r_cut:g} Å: its supercell's shortest "
            f"vector is {2 * reach:.2f} Å, so bonds longer than {reach:.2f} Å alias onto other images (missing or "
            f"wrong blocks). Use --fourier-kmesh {' '.join(map(str, need))} (or auto), or --r-cut {np.floor(reach * 100) / 100:.2f}"
        )


def scf_kmesh_for(cell, length: float = SCF_LENGTH) -> tuple:
    """Gamma-including Monkhorst-Pack mesh with the same k-density for every cell.

    ``n_i = ceil(length / h_i)`` with ``h_i`` the cell's spacing of lattice planes normal to ``b_i``
    (so the Born-von Karman supercell's plane spacing is >= ``length``).

    Returns
    -------
    tuple of 3 int
    """
    c = _cell(cell)
    if not length > 0:
        raise ValueError(f"length must be positive, got {length}")
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(c).T, axis=1)
    return tuple(int(max(1, np.ceil(length / h - 1e-9))) for h in spacing)
