"""Positive-definiteness check of an overlap matrix ``S(k)`` (model-agnostic).

A fitted or predicted S must be positive definite before any generalized
eigen-solve; :func:`overlap_check` reports its smallest eigenvalue over a few
k-points (dense up to ``dense_limit`` orbitals, sparse Lanczos at Gamma beyond).
"""

from __future__ import annotations

import numpy as np

from ..structure import RealSpaceMatrix
from ..threads import with_inner_threads
from .bloch import BlochAssembler


def overlap_check_kpts(atoms, norb: int) -> np.ndarray:
    """k-points at which a predicted S(k) is checked, shape (nk, 3), fractional.

    Gamma for clusters; for periodic cells a Gamma-centred grid along the periodic axes with
    4 points per axis (2 above 300 orbitals, Gamma and the zone boundary only above 2000),
    which contains Gamma, the zone-boundary points 1/2 and the points in between.
    """
    if not np.any(atoms.pbc):
        return np.zeros((1, 3))
    n = 4 if norb <= 300 else 2 if norb <= 2000 else 1
    axes = [np.arange(n) / n if p else np.zeros(1) for p in atoms.pbc]
    k = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    if n == 1:
        k = np.vstack([k, [[0.5 * p for p in atoms.pbc]]])
    return k


@with_inner_threads
def overlap_check(S: RealSpaceMatrix, atoms, kpts=None, dense_limit: int = 4000) -> tuple:
    """Smallest eigenvalue of ``S(k)`` over ``kpts`` (default :func:`overlap_check_kpts`).

    Returns
    -------
    (float, list of float, int)
        Smallest eigenvalue (dimensionless), its fractional k-point, number of k-points checked.
        Above ``dense_limit`` orbitals: a sparse Lanczos estimate at Gamma only (1 k-point).
    """
    periodic = bool(np.any(atoms.pbc))
    kpts = overlap_check_kpts(atoms, S.norb) if kpts is None else np.asarray(kpts, dtype=float).reshape(-1, 3)
    if not periodic:
        kpts = np.zeros((1, 3))
    if S.norb <= dense_limit:
        # one assembler (the sparse grouping of S is built once), k-points in chunks, stacked eigvalsh
        asm = BlochAssembler(S)
        chunk = max(1, 2**26 // max(1, 16 * S.norb * S.norb))
        smallest = []
        for k0 in range(0, len(kpts), chunk):
            Sk = asm.dense(kpts[k0:k0 + chunk])
            Sk = 0.5 * (Sk + Sk.conj().transpose(0, 2, 1))
            smallest.extend(np.linalg.eigvalsh(Sk)[:, 0].tolist())
        q = int(np.argmin(smallest))
        return smallest[q], [float(x) for x in kpts[q]], len(kpts)
    import scipy.sparse as sps
    import scipy.sparse.linalg as spl

    rows, cols, vals, _ = S.coo()
    M = sps.csr_matrix((vals, (rows, cols)), shape=(S.norb, S.norb))
    M = 0.5 * (M + M.T)
    return float(spl.eigsh(M, k=1, which="SA", tol=1e-6, maxiter=5000, return_eigenvectors=False)[0]), [0.0, 0.0, 0.0], 1


def overlap_min_eigenvalue(S: RealSpaceMatrix, atoms, kpts=None, dense_limit: int = 4000) -> float:
    """Smallest eigenvalue of ``S(k)`` over the checked k-points (see :func:`overlap_check`)."""
    return overlap_check(S, atoms, kpts, dense_limit)[0]
