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

Slabs (and wires): along an axis with ``pbc`` False the structure is a slab in a periodic box with vacuum
(the DFT code still sees three periodic axes).  Both meshes are 1 along it (a 2D k-mesh), and a bond
through the vacuum is longer than ``r_cut`` when the vacuum gap is (:func:`vacuum_gaps`,
:func:`check_vacuum`); the in-plane condition is the one above for the 2D lattice of the periodic axes.

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
>>> slab = np.diag([3.84, 3.84, 30.0])            # a Si(001) 1x1 slab cell, vacuum along z
>>> fourier_kmesh_for(slab, 12.0, pbc=(True, True, False)), scf_kmesh_for(slab, pbc=(True, True, False))
((7, 7, 1), (3, 3, 1))
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


def _pbc(pbc) -> np.ndarray:
    """``pbc`` as a (3,) bool array (None: periodic along all three axes); at least one axis periodic."""
    p = np.ones(3, bool) if pbc is None else np.broadcast_to(np.asarray(pbc, bool), (3,)).copy()
    if not p.any():
        raise ValueError("a k-mesh needs at least one periodic axis (pbc all False: use a molecule calculation)")
    return p


def _mesh(mesh) -> np.ndarray:
    m = np.asarray(mesh)
    if m.shape != (3,) or np.any(m != np.rint(m)) or np.any(m < 1):
        raise ValueError(f"a k-mesh is three positive integers, got {mesh!r}")
    return m.astype(np.int64)


def shortest_vector(lattice) -> float:
    """Length of the shortest non-zero vector of the lattice spanned by the rows of ``lattice`` (Å).

    ``lattice``: shape (d, 3), d = 1, 2 or 3 independent rows (a slab's in-plane lattice has d = 2).
    Exact: every integer combination ``m`` with ``|m @ lattice| <= R`` has ``|m_i| <= R |b_i|``
    (``b_i`` the dual rows in the lattice's span, no 2 pi), so a finite search with ``R`` = the shortest
    row suffices.
    """
    lat = np.asarray(getattr(lattice, "array", lattice), dtype=float)
    if lat.shape == (3, 3):
        lat = _cell(lat)
    elif lat.ndim != 2 or lat.shape[1] != 3 or not 1 <= lat.shape[0] <= 3 or np.linalg.matrix_rank(lat) < lat.shape[0]:
        raise ValueError(f"lattice must be 1-3 independent rows of 3 components (Å), got shape {lat.shape}")
    R = np.linalg.norm(lat, axis=1).min()
    recip = np.linalg.pinv(lat).T
    bound = np.floor(R * np.linalg.norm(recip, axis=1) + 1e-9).astype(int)
    ranges = [np.arange(-b, b + 1) for b in bound]
    m = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, len(lat))
    m = m[np.any(m != 0, axis=1)]
    return float(np.linalg.norm(m @ lat, axis=1).min())


def max_r_cut(cell, mesh, pbc=None) -> float:
    """Largest ``r_cut`` (Å) whose bonds are all unique shortest images on this Fourier mesh (half the
    shortest Fourier-supercell vector; for a slab, of its periodic axes: the vacuum is checked by
    :func:`check_vacuum`)."""
    p = _pbc(pbc)
    return 0.5 * shortest_vector((_mesh(mesh)[:, None] * _cell(cell))[p])


def fourier_kmesh_for(cell, r_cut: float, pbc=None) -> tuple:
    """Smallest Gamma-centred Fourier mesh (fewest k-points) whose supercell holds the ``r_cut`` sphere.

    Parameters
    ----------
    cell : array, shape (3, 3), Å (rows are lattice vectors), or ase.Cell
    r_cut : float
        Bond cutoff, Å.
    pbc : (3,) bool, optional
        Periodic axes (default all); the mesh is 1 along the others (slab: vacuum).

    Returns
    -------
    tuple of 3 int
        ``n`` with shortest non-zero vector of ``diag(n) @ cell`` (its periodic rows) > ``2 r_cut``;
        among equally small meshes the most isotropic one.
    """
    c = _cell(cell)
    p = _pbc(pbc)
    if not r_cut > 0:
        raise ValueError(f"r_cut must be positive, got {r_cut}")
    need = 2.0 * float(r_cut) + 1e-6
    cp = c[p]
    lo = np.floor(need / np.linalg.norm(cp, axis=1)).astype(int) + 1  # n_i |a_i| > 2 r_cut is necessary
    hi = np.floor(need * np.linalg.norm(np.linalg.pinv(cp).T, axis=1)).astype(int) + 1  # plane spacing: sufficient
    best = None
    for n in itertools.product(*[range(a, max(a, b) + 1) for a, b in zip(lo, hi)]):
        key = (int(np.prod(n)), max(n) - min(n), n)
        if best is not None and key >= best[0]:
            continue
        if shortest_vector(np.asarray(n)[:, None] * cp) > need:
            best = (key, n)
    full = np.ones(3, int)
    full[p] = best[1]
    return tuple(int(x) for x in full)


def check_fourier_kmesh(cell, mesh, r_cut: float, pbc=None) -> None:
    """Refuse a Fourier mesh on which some bond ``<= r_cut`` is not the unique shortest image.

    Raises
    ------
    ValueError
        With the mesh that is needed and the ``r_cut`` this mesh can hold.
    """
    m = _mesh(mesh)
    reach = max_r_cut(cell, m, pbc)
    if reach <= r_cut:
        need = fourier_kmesh_for(cell, r_cut, pbc)
        raise ValueError(
            f"Fourier k-mesh {'x'.join(map(str, m))} is too coarse for r_cut {r_cut:g} Å: its supercell's shortest "
            f"vector is {2 * reach:.2f} Å, so bonds longer than {reach:.2f} Å alias onto other images (missing or "
            f"wrong blocks). Use --fourier-kmesh {' '.join(map(str, need))} (or auto), or --r-cut {np.floor(reach * 100) / 100:.2f}"
        )


def scf_kmesh_for(cell, length: float = SCF_LENGTH, pbc=None) -> tuple:
    """Gamma-including Monkhorst-Pack mesh with the same k-density for every cell.

    ``n_i = ceil(length / h_i)`` with ``h_i`` the cell's spacing of lattice planes normal to ``b_i``
    (so the Born-von Karman supercell's plane spacing is >= ``length``); 1 along non-periodic axes.

    Returns
    -------
    tuple of 3 int
    """
    c = _cell(cell)
    p = _pbc(pbc)
    if not length > 0:
        raise ValueError(f"length must be positive, got {length}")
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(c).T, axis=1)
    return tuple(int(max(1, np.ceil(length / h - 1e-9))) if per else 1 for h, per in zip(spacing, p))


def vacuum_gaps(cell, positions, pbc) -> dict:
    """Width (Å) of the empty layer along each non-periodic axis: ``{axis: gap}``.

    The gap is measured normal to the lattice planes of the other two axes (plane spacing times the
    largest empty interval of the atoms' fractional coordinates, modulo 1, so a slab that straddles the
    cell boundary is measured correctly).  Every bond through the vacuum is at least this long.
    """
    c = _cell(cell)
    p = _pbc(pbc)
    frac = np.linalg.solve(c.T, np.asarray(positions, float).reshape(-1, 3).T).T
    out = {}
    for ax in np.nonzero(~p)[0]:
        h = 1.0 / np.linalg.norm(np.linalg.inv(c).T[ax])
        f = np.sort(frac[:, ax] % 1.0)
        gaps = np.diff(np.concatenate([f, [f[0] + 1.0]])) if len(f) else np.array([1.0])
        out[int(ax)] = float(h * gaps.max())
    return out


def check_vacuum(cell, positions, pbc, r_cut: float) -> None:
    """Refuse a slab whose vacuum gap is not longer than ``r_cut`` (a kept bond would cross it).

    Raises
    ------
    ValueError
        Naming the axis, the gap and what fixes it.
    """
    for ax, gap in vacuum_gaps(cell, positions, pbc).items():
        if gap <= r_cut:
            raise ValueError(
                f"vacuum along non-periodic axis {ax + 1} is {gap:.2f} Å, not longer than r_cut {r_cut:g} Å: bonds "
                f"through the vacuum would be kept as if the axis were periodic; add vacuum (> {r_cut:g} Å) or lower --r-cut")
