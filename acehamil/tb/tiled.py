"""Spectra of a periodic cell tiled ``n1 x n2 x n3`` times, from the cell's blocks only.

The matrices of a tiled cell (:func:`acehamil.structure.supercell.tile_matrix`) at a supercell
k-point ``K`` are block-circulant over the tiles: with the tile index ``m`` (image-major, as
``ase.Atoms.repeat``), ``(O_big x)[m] = sum_T O(T) x~[m + T]`` (``x~`` the Bloch extension of
``x``).  A discrete Fourier transform over ``m`` makes them block-diagonal: tile wave vector
``kappa`` sees the cell's Bloch matrix ``O(k)`` at ``k = (kappa + K) / reps`` (our convention
``O(k) = sum_T O(T) exp(+2 pi i k.T)``, numpy's forward FFT).  So, without ever forming the
``(norb_cell * prod(reps))``-sized matrices:

* :class:`TiledOperator` applies ``B = L^-1 H L^-H`` of the whole supercell (``S(k) = L L^H``
  per ``kappa``; similar to ``S^-1 H``, so the same spectrum and ``Tr f(B) = Tr f(S^-1 H)``)
  by one FFT over the tiles and one dense ``norb_cell``-sized product per ``kappa``: memory
  ``nkappa * norb_cell^2 * 16`` bytes (``nkappa`` = half the tiles at ``K = 0``, by the real
  FFT), time per product ``O(N log ntiles + N norb_cell)`` for ``N`` supercell orbitals.  KPM
  (:func:`acehamil.tb.kpm.kpm_moments`) runs on it unchanged: the stochastic trace of the
  supercell, at 10^6 orbitals and more.
* :func:`tiled_eigs` gives the eigenpairs of the supercell nearest an energy exactly: the union
  over ``kappa`` of the cell's dense levels, eigenvectors ``x[m] = exp(2 pi i k.m) c(k) / sqrt(ntiles)``.

Both are exact for a tiled periodic cell (tested against the explicitly tiled sparse matrices);
a disordered large cell that is not a tiling needs the real-space solvers of
:mod:`acehamil.tb.solvers` (see docs/tb.md for their cost).

Examples
--------
>>> import numpy as np
>>> from acehamil.structure import RealSpaceMatrix
>>> chain = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], [[0, 0, 0], [1, 0, 0], [-1, 0, 0]],
...                                     [np.zeros((1, 1)), -np.ones((1, 1)), -np.ones((1, 1))])
>>> op = TiledOperator(chain, None, (8, 1, 1))
>>> x = np.zeros(8); x[0] = 1.0
>>> (np.round(op @ x, 12) + 0.0).tolist()  # hopping -1 to both neighbours of a ring of 8 sites
[0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
>>> r = tiled_eigs(chain, None, (8, 1, 1), sigma=0.0, n=2)
>>> (np.round(r.energies, 12) + 0.0).tolist()   # -2 cos(2 pi k), k = 1/4, 3/4
[0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from ..structure import RealSpaceMatrix
from ..structure.supercell import check_reps
from .bloch import BlochAssembler, as_kpts, check_pair

__all__ = ["TiledOperator", "tiled_eigs", "tile_kpoints"]

#: Bytes of complex (nk, norb, norb) work arrays per chunk of tile wave vectors.
_CHUNK_BYTES = 1 << 27


def tile_kpoints(reps, kpt=(0.0, 0.0, 0.0), half: bool = False) -> tuple:
    """The cell k-points ``(kappa + K) / reps`` that a ``reps`` tiling at supercell k-point ``K`` sees.

    Parameters
    ----------
    reps : 3 ints
    kpt : 3 floats, fractional in the supercell's reciprocal lattice
    half : bool
        Only the real-FFT half ``kappa_3 <= reps_3 // 2`` (for ``K = 0`` and real vectors).

    Returns
    -------
    kappa : ndarray of int, shape (nkappa, 3), C order over the three axes
    k : ndarray of float, shape (nkappa, 3), fractional in the cell's reciprocal lattice

    >>> kappa, k = tile_kpoints((2, 1, 3), half=True)
    >>> kappa.tolist(), k[-1].tolist()
    ([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]], [0.5, 0.0, 0.3333333333333333])
    """
    r = check_reps(reps)
    K = as_kpts(kpt)[0]
    last = r[2] // 2 + 1 if half else r[2]
    kappa = np.stack(np.meshgrid(np.arange(r[0]), np.arange(r[1]), np.arange(last), indexing="ij"), -1).reshape(-1, 3)
    return kappa, (kappa + K[None, :]) / r[None, :]


class TiledOperator:
    """``B = L^-1 H L^-H`` of a cell tiled ``reps`` times, at supercell k-point ``kpt``, applied by FFT.

    Parameters
    ----------
    H : RealSpaceMatrix
        The cell's Hamiltonian blocks, eV.
    S : RealSpaceMatrix or None
        The cell's overlap blocks (None: orthonormal basis, ``B = H``).
    reps : 3 ints
        Tiling; the supercell has ``H.norb * prod(reps)`` orbitals in the order of
        :func:`acehamil.structure.supercell.tile_matrix`.
    kpt : 3 floats
        Supercell k-point (fractional); Gamma gives real vectors and uses half the tiles' wave
        vectors (real FFT).
    progress : callable(done, total), optional
        Called while the per-``kappa`` matrices are built.
    precision : {"double", "single"}
        Storage and products of the per-``kappa`` blocks: complex128, or complex64 (half the
        memory; the FFTs stay in double precision).  Measured on the example model's 64-atom
        cell: KPM moments (1024, 4 vectors) change by 8e-7 x N, the DOS by 6e-6 of its peak;
        the CPU per product did not drop (0.064 vs 0.068 s at 131,072 orbitals, 4 vectors).

    Attributes
    ----------
    shape : (N, N), N = H.norb * prod(reps)
    dtype : float64 at Gamma, complex128 otherwise
    nbytes : int, memory of the stored per-``kappa`` matrices

    Notes
    -----
    ``op @ X`` takes ``X`` of shape (N,) or (N, R).  The spectrum of ``B`` is that of the
    generalized problem ``H_big c = eps S_big c``; ``B`` is Hermitian, so KPM and Lanczos use the
    Euclidean inner product (the Mulliken PDOS, which needs ``S^-1 H`` itself, is not provided).
    ``S(k)`` must be positive definite at every ``k`` of :func:`tile_kpoints`; else ValueError
    naming ``k``.
    """

    def __init__(self, H: RealSpaceMatrix, S: RealSpaceMatrix | None, reps, kpt=(0.0, 0.0, 0.0), progress=None,
                 precision: str = "double"):
        check_pair(H, S)
        if precision not in ("double", "single"):
            raise ValueError(f"precision must be 'double' or 'single', got {precision!r}")
        self.reps = check_reps(reps)
        self.kpt = as_kpts(kpt)[0]
        self.real = not np.any(self.kpt)
        self.nc = int(H.norb)
        self.ntiles = int(np.prod(self.reps))
        n = self.nc * self.ntiles
        self.shape = (n, n)
        self.dtype = np.dtype(np.float64 if self.real else np.complex128)
        _, k = tile_kpoints(self.reps, self.kpt, half=self.real)
        nk = len(k)
        ah = BlochAssembler(H)
        as_ = None if S is None else BlochAssembler(S)
        B = np.empty((nk, self.nc, self.nc), np.complex128 if precision == "double" else np.complex64)
        chunk = max(1, _CHUNK_BYTES // (16 * self.nc * self.nc))
        for s in range(0, nk, chunk):
            kc = k[s:s + chunk]
            hk = ah.dense(kc)
            if as_ is not None:
                sk = as_.dense(kc)
                try:
                    L = np.linalg.cholesky(sk)
                except np.linalg.LinAlgError:
                    bad = next(q for q in range(len(kc)) if np.linalg.eigvalsh(sk[q])[0] <= 0)
                    raise ValueError(f"S(k) is not positive definite at cell k = {kc[bad].tolist()} (smallest eigenvalue "
                                     f"{np.linalg.eigvalsh(sk[bad])[0]:.3e})") from None
                Li = np.linalg.inv(L)
                hk = Li @ hk @ np.conj(np.swapaxes(Li, 1, 2))
            B[s:s + len(kc)] = 0.5 * (hk + np.conj(np.swapaxes(hk, 1, 2)))
            if progress is not None:
                progress(min(s + chunk, nk), nk)
        self._B = B
        if not self.real:
            m = np.stack(np.meshgrid(*[np.arange(x) for x in self.reps], indexing="ij"), -1).reshape(-1, 3)
            self._twist = np.exp(2j * np.pi * (m @ (self.kpt / self.reps)))  # (ntiles,)

    @property
    def nbytes(self) -> int:
        return int(self._B.nbytes)

    def toarray(self) -> np.ndarray:
        """The dense ``(N, N)`` matrix (small systems and tests only)."""
        return self @ np.eye(self.shape[0], dtype=self.dtype)

    def __matmul__(self, X):
        X = np.asarray(X)
        one = X.ndim == 1
        Xm = X[:, None] if one else X
        if Xm.shape[0] != self.shape[1]:
            raise ValueError(f"vector length {Xm.shape[0]} does not match the operator's {self.shape[1]}")
        R = Xm.shape[1]
        r0, r1, r2 = (int(x) for x in self.reps)
        x = Xm.reshape(r0, r1, r2, self.nc, R)
        if self.real:
            if np.iscomplexobj(x):  # real operator: apply to both parts
                y = (self @ Xm.real) + 1j * (self @ Xm.imag)
                return y[:, 0] if one else y
            F = np.fft.rfftn(x, axes=(0, 1, 2))
            shp = F.shape
            Y = np.matmul(self._B, F.reshape(-1, self.nc, R).astype(self._B.dtype, copy=False)).reshape(shp)
            y = np.fft.irfftn(Y.astype(np.complex128, copy=False), s=(r0, r1, r2), axes=(0, 1, 2))
        else:
            tw = self._twist.reshape(r0, r1, r2, 1, 1)
            F = np.fft.fftn(x * np.conj(tw), axes=(0, 1, 2))
            shp = F.shape
            Y = np.matmul(self._B, F.reshape(-1, self.nc, R).astype(self._B.dtype, copy=False)).reshape(shp)
            y = np.fft.ifftn(Y.astype(np.complex128, copy=False), axes=(0, 1, 2)) * tw
        y = y.reshape(-1, R)
        return y[:, 0] if one else y


def tiled_eigs(H: RealSpaceMatrix, S: RealSpaceMatrix | None, reps, sigma: float | None, n: int = 20, kpt=(0.0, 0.0, 0.0),
               eigenvectors: bool = False, n_electrons: float | None = None):
    """The ``n`` eigenpairs nearest ``sigma`` of the cell tiled ``reps`` times, at supercell k-point ``kpt``.

    Exact (dense per tile wave vector; cost ``prod(reps)`` dense solves of the cell, memory one
    chunk of them).  Ties at equal distance are broken by energy, as the dense solver.

    Parameters
    ----------
    H, S : RealSpaceMatrix (S may be None)
    reps : 3 ints
    sigma : float (eV) or None
        None: the supercell's Fermi level from ``n_electrons`` (spin-degenerate levels filled
        at T = 0; the middle of the gap when the count fills a level exactly).
    n : int, ``1 <= n < norb``
    kpt : 3 floats, supercell k-point (fractional)
    eigenvectors : bool
        Return ``S_big``-orthonormal eigenvectors of the supercell (complex; a pair ``k, -k`` of a
        real problem gives complex Bloch waves).

    Returns
    -------
    acehamil.tb.sparse.EigsResult with method "tiled-bloch" (``residual`` from the cell's
    ``||H(k) c - eps S(k) c||``, equal to the supercell's for the normalised Bloch vectors).
    """
    from .eigen import solve, solve_k
    from .sparse import EigsResult

    check_pair(H, S)
    r = check_reps(reps)
    N = H.norb * int(np.prod(r))
    if not 1 <= int(n) < N:
        raise ValueError(f"n must be between 1 and norb - 1 = {N - 1}, got {n}")
    if sigma is None and n_electrons is None:
        raise ValueError("give sigma (eV) or n_electrons")
    if sigma is not None and not np.isfinite(sigma):
        raise ValueError(f"sigma must be a finite energy in eV, got {sigma}")
    kappa, k = tile_kpoints(r, kpt)
    eps = solve(H, S, k)  # (ntiles, nc)
    nk, nc = eps.shape
    flat = eps.reshape(-1)
    if sigma is None:
        levels = np.sort(flat)
        occ = float(n_electrons) / 2.0
        if not 0 < occ < len(levels):
            raise ValueError(f"{n_electrons} electrons do not fit in {len(levels)} spin-degenerate levels")
        nv = int(np.ceil(occ - 1e-9))
        sigma = 0.5 * (levels[nv - 1] + levels[nv]) if abs(occ - round(occ)) < 1e-9 else float(levels[nv - 1])
    order = np.lexsort((flat, np.abs(flat - sigma)))[: int(n)]
    order = order[np.argsort(flat[order], kind="stable")]
    w = flat[order]
    q, b = np.divmod(order, nc)
    vecs, res = None, float("nan")
    if eigenvectors:
        ah, as_ = BlochAssembler(H), None if S is None else BlochAssembler(S)
        uq = np.unique(q)
        hk = ah.dense(k[uq])
        sk = None if as_ is None else as_.dense(k[uq])
        wk, vk = solve_k(hk, sk, k[uq], eigenvectors=True)
        m = np.stack(np.meshgrid(*[np.arange(x) for x in r], indexing="ij"), -1).reshape(-1, 3)
        vecs = np.empty((N, len(order)), np.complex128)
        resid = []
        for c, (qq, bb) in enumerate(zip(q, b)):
            u = int(np.searchsorted(uq, qq))
            v = vk[u][:, bb]
            phase = np.exp(2j * np.pi * (m @ k[qq])) / np.sqrt(len(m))
            vecs[:, c] = (phase[:, None] * v[None, :]).reshape(-1)
            sv = v if sk is None else sk[u] @ v
            resid.append(np.linalg.norm(hk[u] @ v - wk[u][bb] * sv) / np.linalg.norm(v))
        res = float(max(resid))
    return EigsResult(w, vecs, float(sigma), as_kpts(kpt)[0], res, "tiled-bloch")
