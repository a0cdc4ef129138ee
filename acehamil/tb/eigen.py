"""Generalized Hermitian eigen-solves ``H(k) c = eps S(k) c`` with overlap checks.

Every k-point's ``S(k)`` is checked: for ``norb <= BATCH_NORB`` against its exact
spectrum (stacked over k; computed only where a bound from the Cholesky factor does not already
settle it, see :func:`_batched_solve`); above, it is
Cholesky-factorised (``S = L L^H``) and its 1-norm condition number estimated
from the factor (LAPACK ``pocon``, O(norb^2)).
When ``S(k)`` is not positive definite, or its condition number exceeds
``max_condition``, an :class:`OverlapError` names the k-point and the smallest
eigenvalue of ``S(k)`` and points to the remedy - never silent nonsense.

Remedy ``remedy="project"``: at every k, diagonalise ``S(k) = U s U^H``, drop the
directions with ``s <= s_threshold`` (absolute; S is dimensionless with unit-ish
diagonal) and solve the standard problem in the orthonormalised remaining
space ``X = U_keep s_keep^(-1/2)``.  Fewer bands survive (the near-null space
of S is an over-complete combination of orbitals, not a physical state); so
that ``eps`` stays rectangular, every k keeps the ``nbands`` lowest
eigenvalues, ``nbands`` = the smallest number of kept directions over the
k-points of the call.

Otherwise the solve is the standard reduction: ``potrf`` once, ``hegst``,
``heevd`` and, for eigenvectors, one triangular back-substitution.

Examples
--------
>>> import numpy as np
>>> Hk = np.array([[[0.0, 1.0], [1.0, 0.0]]], dtype=complex)   # 2-level model
>>> Sk = np.array([[[1.0, 0.2], [0.2, 1.0]]], dtype=complex)
>>> np.round(solve_k(Hk, Sk), 12).tolist()    # eps = +-t/(1 +- s): -1/0.8, 1/1.2
[[-1.25, 0.833333333333]]
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

from ..structure import RealSpaceMatrix
from ..threads import with_inner_threads
from .bloch import BlochAssembler, as_kpts, check_pair

__all__ = ["OverlapError", "solve", "solve_k", "overlap_report"]

#: Default largest accepted condition number of S(k) (1-norm estimate).
MAX_CONDITION = 1e10
#: Default threshold on eigenvalues of S(k) for the "project" remedy.
S_THRESHOLD = 1e-6
#: Up to this many orbitals all k-points of a chunk are solved in stacked numpy calls (fast for
#: small matrices); larger ones go k by k through LAPACK potrf/pocon/hegst/heevd.
BATCH_NORB = 128
_CHUNK_BYTES = 2**27  # dense (nk_chunk, norb, norb) complex buffers per chunk, H and S each


class OverlapError(ValueError):
    """S(k) is not positive definite or is ill-conditioned at some k-point.

    Attributes
    ----------
    kpoint : ndarray, shape (3,), fractional (or None for prebuilt matrices without k)
    index : int
        Index of the k-point in the call.
    smallest_eigenvalue : float
        Smallest eigenvalue of S(k) (dimensionless).
    condition : float
        Estimated condition number (inf when not positive definite).
    """

    def __init__(self, message, kpoint, index, smallest_eigenvalue, condition):
        super().__init__(message)
        self.kpoint = kpoint
        self.index = index
        self.smallest_eigenvalue = smallest_eigenvalue
        self.condition = condition


def overlap_report(Sk) -> dict:
    """Diagnostics of one overlap matrix ``S(k)``, shape (norb, norb).

    Returns
    -------
    dict
        ``{"smallest_eigenvalue", "largest_eigenvalue", "condition"}``
        (condition from the exact eigenvalues; ``inf`` if not positive definite).
    """
    s = np.linalg.eigvalsh(np.asarray(Sk))
    cond = float(s[-1] / s[0]) if s[0] > 0 else float("inf")
    return {"smallest_eigenvalue": float(s[0]), "largest_eigenvalue": float(s[-1]), "condition": cond}


def _overlap_error(Sk, kpt, index, max_condition, reason):
    rep = overlap_report(Sk)
    where = f"k-point {index}" + (f" (fractional k = {np.round(kpt, 6).tolist()})" if kpt is not None else "")
    msg = (
        f"overlap S(k) {reason} at {where}: smallest eigenvalue {rep['smallest_eigenvalue']:.3e}, "
        f"condition number {rep['condition']:.3e} (limit {max_condition:.1e}). "
        f"The orbital basis is (nearly) linearly dependent there, or the overlap is wrong "
        f"(e.g. a badly fitted S). Remedy: solve(..., remedy='project', s_threshold=...) projects out "
        f"the eigenvectors of S(k) with eigenvalue <= s_threshold (fewer bands); or raise max_condition."
    )
    return OverlapError(msg, None if kpt is None else np.asarray(kpt), index, rep["smallest_eigenvalue"], rep["condition"])


def _cholesky_solve(h, s, kpt, index, eigenvectors, max_condition):
    """One k: potrf, pocon, hegst, heevd. Returns (eps (n,), vecs (n, n) or None)."""
    c, info = lapack.zpotrf(s, lower=1, clean=1)
    if info > 0:
        raise _overlap_error(s, kpt, index, max_condition, "is not positive definite")
    if info < 0:  # pragma: no cover - argument error, cannot happen with valid arrays
        raise ValueError(f"zpotrf argument error {info}")
    anorm = float(np.abs(s).sum(axis=0).max())
    rcond, info = lapack.zpocon(c, anorm, uplo="L")
    if not rcond > 0 or 1.0 / rcond > max_condition:
        raise _overlap_error(s, kpt, index, max_condition, "is ill-conditioned")
    a, info = lapack.zhegst(h, c, itype=1, lower=1, overwrite_a=0)
    work, iwork, rwork, _ = lapack.zheevd_lwork(len(a), compute_v=int(eigenvectors), lower=1)
    w, v, info = lapack.zheevd(a, compute_v=int(eigenvectors), lower=1, lwork=int(work.real),
                               liwork=int(iwork), lrwork=int(rwork), overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"zheevd did not converge at k-point {index} (info={info})")
    if not eigenvectors:
        return w, None
    x = sla.solve_triangular(c, v, lower=True, trans="C", check_finite=False)
    return w, x


def _batched_solve(hk, sk, kpts, offset, eigenvectors, max_condition):
    """Small matrices, all k at once (numpy's stacked LAPACK calls): Cholesky ``S = L L^H``,
    ``A = L^-1 H L^-H``, with the S(k) check.  Returns (eps (nk, n), vecs (nk, n, n) or None).

    The check accepts ``S(k)`` when ``cond_2(S) = s_max / s_min <= max_condition``.  It is first
    bounded from the factor already needed, ``cond_2(S) <= ||S||_1 trace(S^-1) = ||S||_1 ||L^-1||_F^2``
    (O(n^2) per k), and the exact spectrum of ``S(k)`` (a second decomposition, about a third of the
    solve) is computed only at the k-points where that bound exceeds ``max_condition`` or the
    factorisation fails; so the accepted and refused k-points, and the eigenvalues, are those of the
    exact check.
    """
    try:
        x = np.linalg.inv(np.linalg.cholesky(sk))  # L^-1, (nk, n, n)
        with np.errstate(invalid="ignore", over="ignore"):
            bound = np.abs(sk).sum(axis=1).max(axis=-1) * (x.real ** 2 + x.imag ** 2).sum(axis=(1, 2))
        need = np.nonzero(~(bound <= max_condition))[0]  # NaN: checked exactly
    except np.linalg.LinAlgError:  # some S(k) not numerically positive definite
        x, need = None, np.arange(len(sk))
    if len(need):
        s_eig = np.linalg.eigvalsh(sk[need])
        smin, smax = s_eig[:, 0], s_eig[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            bad = ~(smin > 0) | ~(smax / smin <= max_condition)
        if bad.any():
            j = int(np.argmax(bad))
            q = int(need[j])
            reason = "is not positive definite" if not smin[j] > 0 else "is ill-conditioned"
            raise _overlap_error(sk[q], None if kpts is None else kpts[q], q + offset, max_condition, reason)
        if x is None:  # passed the exact check, yet Cholesky failed: as before, LAPACK's error stands
            x = np.linalg.inv(np.linalg.cholesky(sk))
    xh = np.conj(np.swapaxes(x, 1, 2))
    a = x @ hk @ xh
    a = 0.5 * (a + np.conj(np.swapaxes(a, 1, 2)))
    if not eigenvectors:
        return np.linalg.eigvalsh(a), None
    w, y = np.linalg.eigh(a)
    if eigenvectors == "factors":  # the eigenvectors are xh @ y: formed by the caller for the bands it needs
        return w, (xh, y)
    return w, xh @ y


@with_inner_threads
def solve_factored(H: RealSpaceMatrix, S: RealSpaceMatrix, kpts) -> tuple | None:
    """Eigenvalues at every k and the eigenvectors as factors, for callers that need the vectors of a few
    bands only (:func:`acehamil.models.hamiltonian.propagation.eigen_sigma`: the bands near the Fermi level).

    Only for the stacked small-matrix solve (``norb <= BATCH_NORB``, one chunk of k-points, lattice gauge,
    with ``S`` and the S(k) check of :func:`solve`); None otherwise (use :func:`solve`).

    Returns
    -------
    eps : ndarray, shape (nk, norb), eV
    xh, y : ndarray, complex, shape (nk, norb, norb)
        The S-orthonormal eigenvectors are ``xh @ y`` (band ``b``: ``xh @ y[:, :, b]``), as :func:`solve`'s.
    """
    check_pair(H, S)
    kpts = as_kpts(kpts)
    n = H.norb
    if S is None or n > BATCH_NORB or len(kpts) * 16 * n * n > _CHUNK_BYTES:
        return None
    w, (xh, y) = _batched_solve(BlochAssembler(H, "lattice", None).dense(kpts), BlochAssembler(S, "lattice", None).dense(kpts),
                                kpts, 0, "factors", MAX_CONDITION)
    return w, xh, y


def _projected_solve(h, s, eigenvectors, s_threshold):
    """One k with the near-null space of S removed. Returns (eps (m,), vecs (n, m) or None)."""
    sv, u = np.linalg.eigh(s)
    keep = sv > s_threshold
    x = u[:, keep] / np.sqrt(sv[keep])
    a = x.conj().T @ h @ x
    if eigenvectors:
        w, y = np.linalg.eigh(a)
        return w, x @ y
    return np.linalg.eigvalsh(a), None


@with_inner_threads
def solve_k(Hk, Sk=None, kpts=None, *, eigenvectors=False, max_condition=MAX_CONDITION, remedy=None,
            s_threshold=S_THRESHOLD, _offset=0):
    """Generalized eigen-solve of prebuilt Bloch matrices.

    Parameters
    ----------
    Hk : array, shape (nk, norb, norb), complex, eV
        Hermitian ``H(k)``.
    Sk : array, shape (nk, norb, norb), complex, optional
        Overlaps ``S(k)``; ``None`` means orthonormal orbitals.
    kpts : array, shape (nk, 3), optional
        Fractional k-points, only used in error messages.
    eigenvectors : bool
        Also return eigenvectors (S-orthonormal: ``C^H S C = 1``).
    max_condition : float
        Largest accepted (estimated) condition number of ``S(k)``.
    remedy : None or "project"
        ``None``: raise :class:`OverlapError` on a bad ``S(k)``.  ``"project"``:
        remove eigen-directions of ``S(k)`` with eigenvalue ``<= s_threshold``
        at every k (see the module docstring; fewer bands).
    s_threshold : float
        Threshold for ``remedy="project"`` (dimensionless, absolute).

    Returns
    -------
    eps : ndarray, shape (nk, nbands), float64, eV, ascending per k
    vecs : ndarray, shape (nk, norb, nbands), complex128
        Only with ``eigenvectors=True``; ``vecs[k][:, b]`` is band ``b``.
    """
    Hk = np.asarray(Hk)
    if Hk.ndim == 2:
        Hk = Hk[None]
    if Hk.ndim != 3 or Hk.shape[1] != Hk.shape[2]:
        raise ValueError(f"Hk must have shape (nk, norb, norb), got {Hk.shape}")
    nk, n = Hk.shape[0], Hk.shape[1]
    if Sk is not None:
        Sk = np.asarray(Sk)
        if Sk.ndim == 2:
            Sk = Sk[None]
        if Sk.shape != Hk.shape:
            raise ValueError(f"Sk shape {Sk.shape} differs from Hk shape {Hk.shape}")
    if kpts is not None:
        kpts = as_kpts(kpts)
        if len(kpts) != nk:
            raise ValueError(f"{len(kpts)} k-points for {nk} matrices")
    if remedy not in (None, "project"):
        raise ValueError(f"remedy must be None or 'project', got {remedy!r}")
    if not max_condition > 1:
        raise ValueError(f"max_condition must be > 1, got {max_condition}")
    if remedy == "project" and not s_threshold > 0:
        raise ValueError(f"s_threshold must be > 0, got {s_threshold}")
    if Sk is not None and remedy is None and n <= BATCH_NORB:
        w, v = _batched_solve(np.asarray(Hk, np.complex128), np.asarray(Sk, np.complex128), kpts, _offset,
                              eigenvectors, max_condition)
        return (w, v) if eigenvectors else w
    eps, vecs = [], []
    for q in range(nk):
        h = np.asarray(Hk[q], dtype=np.complex128)
        kq = None if kpts is None else kpts[q]
        if Sk is None:
            if eigenvectors:
                w, v = np.linalg.eigh(h, UPLO="L")
            else:
                w, v = np.linalg.eigvalsh(h, UPLO="L"), None
        elif remedy == "project":
            w, v = _projected_solve(h, np.asarray(Sk[q], dtype=np.complex128), eigenvectors, s_threshold)
        else:
            w, v = _cholesky_solve(h, np.asarray(Sk[q], dtype=np.complex128), kq, q + _offset, eigenvectors, max_condition)
        eps.append(w)
        vecs.append(v)
    nb = min((len(w) for w in eps), default=n)
    if nb == 0:
        raise ValueError(f"no bands left: every direction of S(k) is below s_threshold={s_threshold}")
    eps_arr = np.array([w[:nb] for w in eps]).reshape(nk, nb)
    if not eigenvectors:
        return eps_arr
    return eps_arr, np.array([v[:, :nb] for v in vecs]).reshape(nk, n, nb)


def solve(H: RealSpaceMatrix, S: RealSpaceMatrix | None, kpts, *, eigenvectors=False, max_condition=MAX_CONDITION,
          remedy=None, s_threshold=S_THRESHOLD, gauge="lattice", frac_positions=None):
    """Bands of real-space ``H(T)``, ``S(T)`` at many k-points.

    Bloch sums are assembled in chunks of k-points (bounded memory) and
    solved with :func:`solve_k`.

    Parameters
    ----------
    H : RealSpaceMatrix
        Hamiltonian blocks, eV (one spin channel).
    S : RealSpaceMatrix or None
        Overlap blocks (dimensionless); ``None`` for an orthonormal basis.
    kpts : array, shape (nk, 3), fractional
    eigenvectors, max_condition, remedy, s_threshold
        See :func:`solve_k`.
    gauge : {"lattice", "atomic"}
        Gauge of the Bloch sums (eigenvalues do not depend on it; the
        eigenvectors differ by orbital phases ``exp(2 pi i k.x_atom)``).
    frac_positions : array, shape (natoms, 3), optional
        Needed for the atomic gauge.

    Returns
    -------
    eps : ndarray, shape (nk, nbands), float64, eV
    vecs : ndarray, shape (nk, norb, nbands), complex128 (with ``eigenvectors=True``)

    Raises
    ------
    OverlapError
        S(k) not positive definite or too ill-conditioned (names the k-point
        and the smallest eigenvalue of S(k)).

    Examples
    --------
    >>> import numpy as np
    >>> from acehamil.structure import RealSpaceMatrix
    >>> t, s = -1.0, 0.1   # 1D chain with overlap: eps(k) = 2t cos / (1 + 2s cos)
    >>> blocks = [np.zeros((1, 1)), np.full((1, 1), t), np.full((1, 1), t)]
    >>> sh = [[0, 0, 0], [1, 0, 0], [-1, 0, 0]]
    >>> H = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], sh, blocks)
    >>> S = RealSpaceMatrix.from_blocks([1], [0, 0, 0], [0, 0, 0], sh, [np.ones((1, 1)), np.full((1, 1), s), np.full((1, 1), s)])
    >>> np.round(solve(H, S, [[0, 0, 0], [0.5, 0, 0]])[:, 0], 12).tolist()
    [-1.666666666667, 2.5]
    """
    check_pair(H, S)
    kpts = as_kpts(kpts)
    ah = BlochAssembler(H, gauge, frac_positions)
    as_ = None if S is None else BlochAssembler(S, gauge, frac_positions)
    n = H.norb
    chunk = max(1, _CHUNK_BYTES // max(1, 16 * n * n))
    eps, vecs = [], []
    for start in range(0, len(kpts), chunk):
        kc = kpts[start:start + chunk]
        out = solve_k(ah.dense(kc), None if as_ is None else as_.dense(kc), kc, eigenvectors=eigenvectors,
                      max_condition=max_condition, remedy=remedy, s_threshold=s_threshold, _offset=start)
        if eigenvectors:
            eps.append(out[0]), vecs.append(out[1])
        else:
            eps.append(out)
    nb = min(e.shape[1] for e in eps)
    eps_arr = np.concatenate([e[:, :nb] for e in eps])
    if not eigenvectors:
        return eps_arr
    return eps_arr, np.concatenate([v[:, :, :nb] for v in vecs])
