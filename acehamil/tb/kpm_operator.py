"""The operator ``A = S^-1 H`` of the generalized eigenproblem, for the kernel polynomial method.

:class:`SInverse` applies ``S^-1`` (sparse LU, or block-Jacobi preconditioned conjugate
gradients); :func:`spectral_bounds` estimates the extreme eigenvalues of ``A`` by Lanczos
in the ``S`` inner product, which :mod:`acehamil.tb.kpm` maps into ``(-1, 1)``.

Examples
--------
>>> import numpy as np, scipy.sparse as sp
>>> S = sp.identity(3, format="csr") * 2.0
>>> SInverse(S, "cg", atom_offsets=[0, 1, 2, 3])(np.ones(3)).tolist()
[0.5, 0.5, 0.5]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["SInverse", "spectral_bounds"]


class SInverse:
    """``x = S^-1 b`` for a sparse Hermitian positive definite ``S`` (or identity for ``None``).

    Parameters
    ----------
    S : sparse (norb, norb) or None
    method : {"lu", "cg"}
        ``"lu"``: SuperLU factorisation once (fast solves; memory grows with fill-in).
        ``"cg"``: conjugate gradients, all right-hand sides at once, preconditioned by the
        inverse of the diagonal ``block`` x ``block`` blocks of ``S``; relative residual ``tol``.
    atom_offsets : array of int, optional
        Orbital offsets of the atoms: the block-Jacobi blocks (default: blocks of ``block``).
    """

    def __init__(self, S, method: str = "lu", tol: float = 1e-9, atom_offsets=None, maxiter: int = 1000):
        if method not in ("lu", "cg"):
            raise ValueError(f"S^-1 method must be 'lu' or 'cg', got {method!r}")
        self.S, self.method, self.tol, self.maxiter = S, method, float(tol), int(maxiter)
        self.iterations = 0
        if S is None:
            return
        if method == "lu":
            import scipy.sparse.linalg as spl

            self._lu = spl.splu(sp.csc_matrix(S), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        else:
            n = S.shape[0]
            off = np.asarray(atom_offsets if atom_offsets is not None else np.arange(0, n + 1, 1), dtype=np.int64)
            self._blocks = self._jacobi(S, off)

    @staticmethod
    def _jacobi(S, off):
        """Inverse diagonal blocks grouped by size: list of (orbital index (nb, m), inverse (nb, m, m))."""
        sizes = np.diff(off)
        Sc = sp.csr_matrix(S)
        out = []
        for m in np.unique(sizes):
            at = np.nonzero(sizes == m)[0]
            idx = off[at][:, None] + np.arange(m)[None, :]
            rows = np.repeat(idx, m, axis=1).reshape(-1)
            cols = np.tile(idx, (1, m)).reshape(-1)
            blocks = np.asarray(Sc[rows, cols]).reshape(len(at), m, m)
            out.append((idx, np.linalg.inv(blocks)))
        if len(out) == 1 and np.array_equal(out[0][0].reshape(-1), np.arange(S.shape[0])):
            return out[0][1]  # one block size covering 0..n-1 in order: reshape, no gathers
        return out

    def _precondition(self, r):
        if not isinstance(self._blocks, list):
            inv = self._blocks
            nb, m, _ = inv.shape
            return np.matmul(inv, r.reshape(nb, m, -1)).reshape(r.shape)
        z = np.empty_like(r)
        for idx, inv in self._blocks:
            z[idx] = np.matmul(inv, r[idx])
        return z

    def __call__(self, b: np.ndarray) -> np.ndarray:
        if self.S is None:
            return b
        if self.method == "lu":
            return self._lu.solve(b)
        return self._cg(b)

    def _cg(self, b):
        """Preconditioned CG, every column independently (vectorised over columns)."""
        S = self.S
        two = b.ndim == 2
        B = b if two else b[:, None]
        x = np.zeros_like(B)
        r = B.copy()
        z = self._precondition(r)
        p = z.copy()
        rz = np.real(np.sum(np.conj(r) * z, axis=0))
        bnorm = np.linalg.norm(B, axis=0)
        bnorm[bnorm == 0] = 1.0
        for it in range(self.maxiter):
            if np.all(np.linalg.norm(r, axis=0) <= self.tol * bnorm):
                break
            q = S @ p
            alpha = rz / np.real(np.sum(np.conj(p) * q, axis=0))
            x += p * alpha
            r -= q * alpha
            z = self._precondition(r)
            rz_new = np.real(np.sum(np.conj(r) * z, axis=0))
            p = z + p * (rz_new / rz)
            rz = rz_new
        else:
            raise RuntimeError(f"CG for S^-1 did not reach the relative residual {self.tol:g} in {self.maxiter} iterations"
                               " (S ill-conditioned?)")
        self.iterations += it
        return x if two else x[:, 0]


def spectral_bounds(Hk, Sk, s_inverse: SInverse | None = None, steps: int = 40, seed: int = 12345) -> tuple:
    """Smallest and largest generalized eigenvalue (eV), from ``steps`` Lanczos steps on
    ``A = S^-1 H`` in the ``S`` inner product (full reorthogonalisation), each extreme Ritz
    value moved outwards by its residual norm ``|beta_k y_k|``.

    Cost: ``steps`` products with ``H`` and ``S`` and ``steps`` solves with ``S`` (single vectors),
    far less than ARPACK's convergence to tight tolerance; KPM adds a margin
    (:data:`BOUNDS_MARGIN`) on top.  Small matrices (<= 200) are diagonalised.

    Returns
    -------
    (emin, emax) : floats, eV
    """
    n = Hk.shape[0]
    if n <= 200:
        import scipy.linalg as sla

        w = sla.eigh(Hk.toarray(), None if Sk is None else Sk.toarray(), eigvals_only=True)
        return float(w[0]), float(w[-1])
    inv = s_inverse if s_inverse is not None else SInverse(Sk, "lu")
    S = (lambda x: x) if Sk is None else (lambda x: Sk @ x)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(n).astype(Hk.dtype)
    q /= np.sqrt(np.real(np.vdot(q, S(q))))
    Q, SQ = [q], [S(q)]
    alpha, beta = [], []
    m = min(int(steps), n - 1)
    for j in range(m):
        u = inv(Hk @ Q[j])
        a = float(np.real(np.vdot(SQ[j], u)))
        alpha.append(a)
        for qq, sq in zip(Q, SQ):  # full reorthogonalisation in the S inner product
            u = u - qq * np.vdot(sq, u)
        su = S(u)
        b = float(np.sqrt(max(np.real(np.vdot(u, su)), 0.0)))
        beta.append(b)
        if b < 1e-12 or j == m - 1:
            break
        Q.append(u / b)
        SQ.append(su / b)
    k = len(alpha)
    T = np.diag(alpha) + np.diag(beta[:k - 1], 1) + np.diag(beta[:k - 1], -1)
    theta, y = np.linalg.eigh(T)
    res = np.abs(beta[k - 1] * y[-1, :])
    return float(theta[0] - res[0]), float(theta[-1] + res[-1])
