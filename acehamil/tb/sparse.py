"""Sparse Bloch matrices and eigenpairs near an energy (shift-invert) for large systems.

``H(k)``, ``S(k)`` are assembled as scipy CSR matrices straight from the
block-sparse real-space data: **real** (float64) where every Bloch phase
``exp(2 pi i k.T)`` of the matrix's cell shifts is real (Gamma, non-periodic
structures, and zone-boundary points such as ``k = (1/2, 0, 0)``), complex
otherwise.  Memory: ``nnz * (8 or 16 + 4)`` bytes per matrix (int32 indices
when they fit).

:func:`eigs_near` finds the ``n`` generalized eigenpairs ``H c = eps S c``
closest to an energy by shift-invert Lanczos (``scipy.sparse.linalg.eigsh``
with ``sigma``): one sparse LU factorisation of ``H - sigma S`` (SuperLU),
then a few dozen solves.  Its cost is dominated by the fill-in of that
factorisation (grows faster than linearly with the number of orbitals for
3D structures); see ``docs/tb.md``.

Examples
--------
>>> import numpy as np
>>> from acehamil.structure import RealSpaceMatrix
>>> sh = [[0, 0, 0], [1, 0, 0], [-1, 0, 0]]
>>> H = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], sh, [np.zeros((1, 1)), -np.ones((1, 1)), -np.ones((1, 1))])
>>> Hk, _ = bloch_csr(H, None, [0, 0, 0])
>>> Hk.dtype.name, Hk.toarray().tolist()
('float64', [[-2.0]])
>>> bloch_csr(H, None, [0.25, 0, 0])[0].dtype.name
'complex128'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..structure import RealSpaceMatrix
from .bloch import as_kpts, check_pair

__all__ = ["bloch_csr", "real_at", "dropped_norm_bound", "EigsResult", "eigs_near"]


def real_at(matrix: RealSpaceMatrix, kpt) -> bool:
    """True when every Bloch phase ``exp(2 pi i k.T)`` of the matrix's shifts is real (+-1)."""
    k = as_kpts(kpt)[0]
    if matrix.nblocks == 0:
        return True
    x = 2.0 * (matrix.shifts @ k)  # phase = exp(i pi x): real iff x integer
    return bool(np.all(np.abs(x - np.rint(x)) < 1e-12))


def _csr(rows, cols, vals, n) -> sp.csr_matrix:
    """COO -> CSR, duplicates summed, int32 indices when they fit."""
    idx = np.int32 if max(n, len(vals)) < 2**31 - 1 else np.int64
    m = sp.coo_matrix((vals, (rows.astype(idx, copy=False), cols.astype(idx, copy=False))), shape=(n, n))
    out = m.tocsr()
    out.sum_duplicates()
    return out


def _block_coo(matrix: RealSpaceMatrix, kpt, real: bool, chunk_blocks: int = 1 << 18):
    """COO triplets of ``O(k)``, assembled in chunks of blocks (bounded temporaries)."""
    k = as_kpts(kpt)[0]
    nj = matrix.norb_per_atom[matrix.j]
    ni = matrix.norb_per_atom[matrix.i]
    rows_l, cols_l, vals_l = [], [], []
    for b0 in range(0, matrix.nblocks, chunk_blocks):
        b = np.arange(b0, min(b0 + chunk_blocks, matrix.nblocks))
        sizes = ni[b] * nj[b]
        bi = np.repeat(b, sizes)
        local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        lo, hi = matrix.offsets[b[0]], matrix.offsets[b[-1] + 1]
        nc = nj[bi]
        rows_l.append((matrix.atom_offsets[matrix.i[bi]] + local // nc).astype(np.int64))
        cols_l.append((matrix.atom_offsets[matrix.j[bi]] + local % nc).astype(np.int64))
        v = matrix.data[lo:hi]
        ph = np.exp(2j * np.pi * (matrix.shift[b] @ k))
        if real:
            vals_l.append(v * np.rint(ph.real)[bi - b0])
        else:
            vals_l.append(v * ph[bi - b0])
    if not rows_l:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.float64 if real else np.complex128)
    return np.concatenate(rows_l), np.concatenate(cols_l), np.concatenate(vals_l)


def bloch_csr(H: RealSpaceMatrix, S: RealSpaceMatrix | None, kpt=(0.0, 0.0, 0.0), drop_tol: float = 0.0) -> tuple:
    """Sparse ``H(k)`` and ``S(k)`` at one k-point.

    Parameters
    ----------
    H : RealSpaceMatrix
        eV.
    S : RealSpaceMatrix or None
        Dimensionless; ``None`` for an orthonormal basis (``S(k)`` returned as ``None``).
    kpt : array, shape (3,), fractional
    drop_tol : float
        Drop real-space entries with ``|value| <= drop_tol`` (eV for H, same
        number for S) before assembly; 0 keeps everything.  A dropped set
        ``E`` perturbs eigenvalues by at most ``||E||_2 <= max row sum of |E|``
        (reported by :func:`dropped_norm_bound`).

    Returns
    -------
    Hk, Sk : scipy.sparse.csr_matrix, shape (norb, norb)
        float64 when :func:`real_at` holds for both, else complex128; Hermitian.
    """
    check_pair(H, S)
    if not (np.isfinite(drop_tol) and drop_tol >= 0):
        raise ValueError(f"drop_tol must be >= 0, got {drop_tol}")
    real = real_at(H, kpt) and (S is None or real_at(S, kpt))
    out = []
    for m in (H, S):
        if m is None:
            out.append(None)
            continue
        r, c, v = _block_coo(m, kpt, real)
        if drop_tol > 0:
            keep = np.abs(v) > drop_tol
            r, c, v = r[keep], c[keep], v[keep]
        out.append(_csr(r, c, v, m.norb))
    return out[0], out[1]


def dropped_norm_bound(matrix: RealSpaceMatrix, drop_tol: float) -> float:
    """Upper bound on ``||E||_2`` of the entries dropped by ``drop_tol``: the largest
    absolute row sum of the dropped part (eV for H)."""
    rows, _, vals, _ = matrix.coo()
    small = np.abs(vals) <= drop_tol
    return float(np.bincount(rows[small], np.abs(vals[small]), minlength=matrix.norb).max(initial=0.0))


@dataclass(frozen=True)
class EigsResult:
    """Generalized eigenpairs near an energy.

    Attributes
    ----------
    energies : ndarray, shape (n,), eV, ascending
    vectors : ndarray, shape (norb, n), or None
        ``S``-orthonormal columns (``C^H S C = 1``).
    sigma : float
        Shift (eV) the pairs are nearest to.
    kpt : ndarray, shape (3,), fractional
    residual : float
        ``max_n ||H c_n - eps_n S c_n|| / ||c_n||`` (eV), or NaN without vectors.
    method : str
        "shift-invert" or "dense".
    """

    energies: np.ndarray
    vectors: np.ndarray | None
    sigma: float
    kpt: np.ndarray
    residual: float
    method: str

    def to_json(self) -> dict:
        return {"energies": self.energies.tolist(), "sigma": self.sigma, "kpt": self.kpt.tolist(),
                "residual_eV": None if not np.isfinite(self.residual) else self.residual, "method": self.method,
                "units": {"energies": "eV", "kpt": "fractional (reciprocal lattice)"}}


def _residual(Hk, Sk, w, v) -> float:
    if v is None:
        return float("nan")
    sv = v if Sk is None else Sk @ v
    r = Hk @ v - sv * w[None, :]
    return float((np.linalg.norm(r, axis=0) / np.linalg.norm(v, axis=0)).max(initial=0.0))


def eigs_near(Hk, Sk, sigma: float, n: int = 20, eigenvectors: bool = False, tol: float = 1e-12,
              kpt=(0.0, 0.0, 0.0), factorization: str = "superlu") -> EigsResult:
    """The ``n`` eigenpairs of ``H c = eps S c`` closest to ``sigma`` (shift-invert Lanczos).

    Parameters
    ----------
    Hk, Sk : sparse (norb, norb), Hermitian (``Sk`` positive definite or None)
    sigma : float, eV
        Should not be an eigenvalue (the factorisation of ``H - sigma S`` is then singular).
    n : int
        Number of pairs, ``1 <= n < norb``.
    eigenvectors : bool
    tol : float
        Relative accuracy of the Ritz values (ARPACK ``tol``).
    factorization : {"superlu", "pardiso"}
        How ``H - sigma S`` is factorised: SuperLU (scipy, the reference) or MKL PARDISO's
        ``L D L^T`` (optional ``pypardiso``; real matrices only; :mod:`acehamil.tb.pardiso`).

    Returns
    -------
    EigsResult
    """
    import scipy.sparse.linalg as spl

    norb = Hk.shape[0]
    if not 1 <= int(n) < norb:
        raise ValueError(f"n must be between 1 and norb - 1 = {norb - 1}, got {n}")
    if not np.isfinite(sigma):
        raise ValueError(f"sigma must be a finite energy in eV, got {sigma}")
    if factorization not in ("superlu", "pardiso"):
        raise ValueError(f"factorization must be 'superlu' or 'pardiso', got {factorization!r}")
    opinv = None
    if factorization == "pardiso":
        from .pardiso import pardiso_inverse

        opinv = pardiso_inverse(Hk - float(sigma) * (sp.identity(norb, format="csr") if Sk is None else Sk))
    ncv = min(norb, max(2 * int(n) + 1, int(n) + 20))
    w, v = spl.eigsh(Hk, k=int(n), M=Sk, sigma=float(sigma), which="LM", tol=tol, ncv=ncv, return_eigenvectors=True,
                     OPinv=opinv)
    order = np.argsort(w)
    w, v = w[order], v[:, order]
    res = _residual(Hk, Sk, w, v)
    return EigsResult(w, v if eigenvectors else None, float(sigma), as_kpts(kpt)[0], res,
                      "shift-invert" if factorization == "superlu" else "shift-invert (pardiso)")
