"""The one solver seam of the tight-binding layer: dense diagonalisation for small systems,
sparse methods (KPM, shift-invert) for large ones, chosen by size or forced.

* :func:`dos` - ``method="dense"``: every eigenvalue on a Monkhorst-Pack grid
  (:func:`acehamil.tb.dos.density_of_states`, O(nk norb^3)); ``"kpm"``: kernel polynomial
  method (:mod:`acehamil.tb.kpm`, O(nk n_moments n_vectors nnz)) with error bars, PDOS,
  integrated DOS and the Fermi level from the electron count; ``"auto"`` (default): dense up
  to :data:`DENSE_MAX_NORB` orbitals, KPM above.
* :func:`eigenpairs` - the ``n`` eigenpairs nearest an energy at one k: ``"dense"`` (all
  eigenvalues, then the nearest) or ``"shift-invert"`` (:func:`acehamil.tb.sparse.eigs_near`);
  ``"auto"``: dense up to :data:`DENSE_MAX_NORB` orbitals.
* ``supercell=(N1, N2, N3)`` (both): the structure tiled ``N1 x N2 x N3`` times, from the cell's
  blocks only (:mod:`acehamil.tb.tiled`: KPM on the FFT operator; exact eigenpairs per tile wave
  vector), for cells too large to hold as matrices.

Examples
--------
>>> choose_dos_method(100), choose_dos_method(100_000), choose_dos_method(100_000, "dense")
('dense', 'kpm', 'dense')
"""

from __future__ import annotations

import time

import numpy as np

from ..structure import StructureData
from .bloch import as_kpts

__all__ = ["DENSE_MAX_NORB", "LU_MAX_NORB", "choose_dos_method", "choose_eigs_method", "choose_s_method", "dos",
           "eigenpairs", "resolve_energy"]

#: Largest system (orbitals) ``"auto"`` solves densely: a dense generalized solve of 3000
#: orbitals takes ~10 s and 0.3 GB per k-point on one core; KPM's cost grows linearly.
DENSE_MAX_NORB = 3000
#: Largest system whose S^-1 (KPM) is applied by sparse LU under ``s_method="auto"``; above,
#: preconditioned CG (LU fill-in grows superlinearly for 3D structures).
LU_MAX_NORB = 20_000
DOS_METHODS = ("auto", "dense", "kpm")
EIGS_METHODS = ("auto", "dense", "shift-invert")


def choose_dos_method(norb: int, method: str = "auto") -> str:
    """``"dense"`` or ``"kpm"`` for a system of ``norb`` orbitals."""
    if method not in DOS_METHODS:
        raise ValueError(f"DOS method must be one of {DOS_METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "dense" if norb <= DENSE_MAX_NORB else "kpm"


def choose_eigs_method(norb: int, method: str = "auto") -> str:
    """``"dense"`` or ``"shift-invert"``."""
    if method not in EIGS_METHODS:
        raise ValueError(f"eigen-solver method must be one of {EIGS_METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "dense" if norb <= DENSE_MAX_NORB else "shift-invert"


def choose_s_method(norb: int, method: str = "auto") -> str:
    """How KPM applies ``S^-1``: ``"lu"`` or ``"cg"``."""
    if method not in ("auto", "lu", "cg"):
        raise ValueError(f"S^-1 method must be 'auto', 'lu' or 'cg', got {method!r}")
    if method != "auto":
        return method
    return "lu" if norb <= LU_MAX_NORB else "cg"


def _check(data):
    if not isinstance(data, StructureData):
        raise TypeError(f"data must be a StructureData, got {type(data).__name__}")
    if not data.H:
        raise ValueError("structure has no Hamiltonian (H is empty)")


def dos(data: StructureData, method: str = "auto", kmesh=None, *, width: float = 0.05, smearing: str = "gaussian",
        energies=None, npoints=None, pdos=None, fermi_level=None, n_moments: int = 1024, n_vectors: int = 16,
        kernel: str = "jackson", seed: int = 0, s_method: str = "auto", bounds=None, drop_tol: float = 0.0,
        gamma_centred: bool = False, progress=None, supercell=None, **dense_kw):
    """Density of states by the method the size calls for (or ``method``).

    Parameters
    ----------
    data : StructureData
    method : {"auto", "dense", "kpm"}
    kmesh : 3 ints, optional
        Monkhorst-Pack grid; default :func:`acehamil.tb.kpath.dos_kmesh` (scaled with the cell) for dense,
        (1, 1, 1) (Gamma) for KPM.
    width, smearing, npoints, fermi_level, gamma_centred, **dense_kw
        Dense method, see :func:`acehamil.tb.dos.density_of_states`.
    energies : array (ne,), eV, optional
        KPM default: 4001 points over the Chebyshev interval (or ``npoints``).
    pdos : None or {"species", "shell", "l"}
    n_moments, n_vectors, kernel, seed, bounds
        KPM settings (:mod:`acehamil.tb.kpm`); ``bounds`` (eV) skips the Lanczos estimate.
    s_method : {"auto", "lu", "cg"}
        How KPM applies ``S^-1``.
    drop_tol : float
        KPM: drop real-space entries with ``|value| <= drop_tol`` (see :func:`acehamil.tb.sparse.bloch_csr`).
    supercell : 3 ints, optional
        The DOS of ``data`` tiled ``supercell`` times (states/eV per supercell; ``kmesh`` then
        samples the supercell's zone), by KPM on :class:`acehamil.tb.tiled.TiledOperator`, built
        from the cell's blocks only (no supercell matrix; no PDOS).

    Returns
    -------
    acehamil.tb.dos.DOSResult (dense) or acehamil.tb.kpm.KPMResult (KPM)
    """
    _check(data)
    if supercell is not None:
        from ..structure.supercell import check_reps

        check_reps(supercell, data.atoms.pbc)
        if method == "dense":
            raise ValueError("the dense DOS of a tiled cell is the cell's DOS on a k-mesh multiplied by the tiling: "
                             "use method='dense' on the cell with that kmesh")
        if pdos is not None:
            raise ValueError("no PDOS for a tiled supercell (its operator is L^-1 H L^-H, not S^-1 H); "
                             "compute the PDOS of the cell")
        return _kpm_dos(data, (1, 1, 1) if kmesh is None else kmesh, energies, npoints, None, fermi_level, n_moments,
                        n_vectors, kernel, seed, s_method, bounds, drop_tol, gamma_centred, progress, supercell)
    which = choose_dos_method(data.H[0].norb, method)
    if which == "dense":
        from .dos import density_of_states

        return density_of_states(data, kmesh=kmesh, width=width, smearing=smearing,
                                 energies=energies, npoints=npoints, pdos=pdos, fermi_level=fermi_level,
                                 gamma_centred=gamma_centred, **dense_kw)
    return _kpm_dos(data, (1, 1, 1) if kmesh is None else kmesh, energies, npoints, pdos, fermi_level, n_moments, n_vectors,
                    kernel, seed, s_method, bounds, drop_tol, gamma_centred, progress)


def _kpm_dos(data, kmesh, energies, npoints, pdos, fermi_level, n_moments, n_vectors, kernel, seed, s_method, bounds, drop_tol,
             gamma_centred, progress, supercell=None):
    from .dos import monkhorst_pack, orbital_groups
    from .kpm import BOUNDS_MARGIN, assemble_result, kpm_moments
    from .kpm_operator import SInverse, spectral_bounds
    from .sparse import bloch_csr

    t0 = time.perf_counter()
    kpts, weights = monkhorst_pack(kmesh, data.atoms.pbc, gamma_centred=gamma_centred)
    groups = None if pdos is None else orbital_groups(data.layout, pdos)
    gl = None if groups is None else list(groups.values())
    norb = data.H[0].norb
    sm = choose_s_method(norb, s_method)
    g_s = 2 if len(data.H) == 1 else 1
    rng = np.random.default_rng(seed)
    mats = []
    lo, hi = np.inf, -np.inf
    # pass 1: matrices and spectral bounds (one interval for all k and spins: one energy grid)
    for h in data.H:
        for q, k in enumerate(kpts):
            if supercell is not None:
                from .tiled import TiledOperator

                Hk, Sk = TiledOperator(h, data.S, supercell, k), None
                inv = SInverse(None)
            else:
                Hk, Sk = bloch_csr(h, data.S, k, drop_tol)
                inv = SInverse(Sk, sm, atom_offsets=data.S.atom_offsets if data.S is not None else None)
            if bounds is None:
                e0, e1 = spectral_bounds(Hk, Sk, inv)
                lo, hi = min(lo, e0), max(hi, e1)
            mats.append((Hk, Sk, inv, weights[q]))
    if bounds is None:
        pad = BOUNDS_MARGIN * (hi - lo) + 1e-3
        bounds = (lo - pad, hi + pad)
    moments, wts = [], []
    for m, (Hk, Sk, inv, w) in enumerate(mats):
        prog = None if progress is None else (lambda d, t, m=m: progress(m * n_moments + d, len(mats) * n_moments))
        moments.append(kpm_moments(Hk, Sk, n_moments, n_vectors, bounds, rng, gl, inv, prog))
        wts.append(w)
    if energies is None:
        energies = np.linspace(bounds[0], bounds[1], int(npoints or 4001))
    n_el = None if fermi_level is not None else data.n_electrons
    if n_el is not None and supercell is not None:
        n_el = n_el * int(np.prod(supercell))
    res = assemble_result(moments, np.array(wts), kpts, energies, kernel, g_s, n_el, None if groups is None else list(groups),
                          bounds, time.perf_counter() - t0)
    if fermi_level is not None or (n_el is None and data.fermi_level is not None):
        from dataclasses import replace

        res = replace(res, fermi_level=float(fermi_level if fermi_level is not None else data.fermi_level), fermi_window=None)
    return res


def resolve_energy(data: StructureData, near, **kpm_kw) -> float:
    """An energy (eV) from a number or ``"fermi"``: the stored Fermi level, else the KPM
    Fermi level from ``data.n_electrons`` (dense for small systems)."""
    if isinstance(near, (int, float, np.floating)):
        return float(near)
    if near != "fermi":
        raise ValueError(f"near must be an energy in eV or 'fermi', got {near!r}")
    if data.fermi_level is not None:
        return float(data.fermi_level)
    if data.n_electrons is None:
        raise ValueError("no Fermi level: the structure has neither fermi_level nor n_electrons; give an energy")
    kw = {"n_moments": 512, "n_vectors": 8, **kpm_kw}
    res = dos(data, **({"kmesh": (1, 1, 1)} if choose_dos_method(data.H[0].norb) == "kpm" else {}), **kw) \
        if choose_dos_method(data.H[0].norb) == "kpm" else dos(data, "dense", kmesh=(4, 4, 4))
    return float(res.fermi_level)


def eigenpairs(data: StructureData, near="fermi", n: int = 20, kpt=(0.0, 0.0, 0.0), method: str = "auto",
               eigenvectors: bool = False, tol: float = 1e-12, spin: int = 0, drop_tol: float = 0.0, supercell=None,
               factorization: str = "superlu"):
    """The ``n`` generalized eigenpairs nearest an energy at one k-point.

    Parameters
    ----------
    data : StructureData
    near : float (eV) or "fermi"
        See :func:`resolve_energy`.
    n : int
    kpt : 3 floats, fractional
    method : {"auto", "dense", "shift-invert"}
    eigenvectors : bool
        Return ``S``-orthonormal eigenvectors (norb, n).
    tol : float
        Shift-invert relative accuracy.
    spin : int
        Spin channel.
    factorization : {"superlu", "pardiso"}
        Shift-invert only: see :func:`acehamil.tb.sparse.eigs_near`.
    supercell : 3 ints, optional
        Eigenpairs of ``data`` tiled ``supercell`` times at supercell k-point ``kpt``, exactly
        from the cell's blocks (:func:`acehamil.tb.tiled.tiled_eigs`, method "tiled-bloch");
        ``near="fermi"`` without a stored Fermi level uses the supercell's mid-gap level from the
        electron count (one spin channel).

    Returns
    -------
    acehamil.tb.sparse.EigsResult (energies ascending)
    """
    _check(data)
    if not 0 <= spin < len(data.H):
        raise ValueError(f"spin channel {spin} out of range (structure has {len(data.H)})")
    if supercell is not None:
        from ..structure.supercell import check_reps
        from .tiled import tiled_eigs

        reps = check_reps(supercell, data.atoms.pbc)
        if method == "shift-invert":
            raise ValueError("a tiled supercell is solved exactly per tile wave vector (method 'auto' or 'dense')")
        if near == "fermi" and data.fermi_level is None:
            if data.n_electrons is None or len(data.H) != 1:
                raise ValueError("no Fermi level: give an energy (near) or a structure with one spin channel and n_electrons")
            near = None
        sigma = resolve_energy(data, near) if near is not None else None
        n_el = None if sigma is not None else data.n_electrons * int(np.prod(reps))
        return tiled_eigs(data.H[spin], data.S, reps, sigma, n, kpt, eigenvectors, n_electrons=n_el)
    sigma = resolve_energy(data, near)
    k = as_kpts(kpt)[0]
    if not data.periodic and np.any(k):
        raise ValueError("a non-periodic structure has only k = 0")
    H = data.H[spin]
    which = choose_eigs_method(H.norb, method)
    from .sparse import EigsResult, bloch_csr, eigs_near

    if which == "dense":
        from .eigen import solve

        n = int(n)
        if not 1 <= n <= H.norb:
            raise ValueError(f"n must be between 1 and norb = {H.norb}, got {n}")
        w, v = solve(H, data.S, k[None], eigenvectors=True)
        w, v = w[0], v[0]
        near_idx = np.sort(np.argsort(np.abs(w - sigma), kind="stable")[:n])
        w, v = w[near_idx], v[:, near_idx]
        Hk, Sk = bloch_csr(H, data.S, k)
        from .sparse import _residual

        res = _residual(Hk, Sk, w, v)
        return EigsResult(w, v if eigenvectors else None, sigma, k, res, "dense")
    Hk, Sk = bloch_csr(H, data.S, k, drop_tol)
    return eigs_near(Hk, Sk, sigma, n, eigenvectors, tol, k, factorization)
