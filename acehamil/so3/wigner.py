"""Real Wigner-D matrices in acehamil's real spherical-harmonic basis.

``D^l(Q)`` is defined by ``Y_l(Q r) = D^l(Q) Y_l(r)`` for every unit vector
``r``, with ``Y_l`` the standard real harmonics (index ``l*l + l + m``,
see :mod:`acehamil.conventions`).  This holds for proper and improper
orthogonal ``Q``; for an improper ``Q = -P``, ``D^l(Q) = (-1)^l D^l(P)``.

``D^1(Q)`` is ``Q`` in the harmonics' order (y, z, x); higher ``l`` follow by coupling,
``D^l = C^T (D^(l-1) (x) D^1) C`` with the orthonormal real Clebsch-Gordan matrix
``C = cg_real(l-1, 1, l)`` (a few small products per matrix, vectorised over any
batch of rotations: prediction needs one per bond).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sphericart


def real_sph_harm(points: np.ndarray, lmax: int) -> np.ndarray:
    """Real spherical harmonics of unit vectors (no radial factor).

    Parameters
    ----------
    points : ndarray, shape (n, 3)
        Directions; normalised internally.
    lmax : int

    Returns
    -------
    ndarray, shape (n, (lmax+1)**2), float64
        ``Y_lm`` at flat index ``l*l + l + m``.
    """
    p = np.asarray(points, dtype=float)
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    return sphericart.SphericalHarmonics(lmax).compute(np.ascontiguousarray(p))


def _check_orthogonal(Q: np.ndarray) -> np.ndarray:
    Q = np.asarray(Q, dtype=float)
    if Q.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape (..., 3, 3), got {Q.shape}")
    err = np.abs(np.einsum("...ji,...jk->...ik", Q, Q) - np.eye(3)).max(initial=0.0)
    if not np.isfinite(err) or err > 1e-8:
        raise ValueError(f"matrix is not orthogonal (max |Q^T Q - 1| = {err:.2e})")
    return Q


def wigner_d_real(l: int, Q: np.ndarray) -> np.ndarray:
    """Real Wigner-D matrix ``D^l(Q)``.

    Parameters
    ----------
    l : int
        Angular momentum, ``l >= 0``.
    Q : ndarray, shape (3, 3) or (..., 3, 3)
        Orthogonal matrix (proper or improper) acting on Cartesian column vectors.

    Returns
    -------
    ndarray, shape (2l+1, 2l+1) or (..., 2l+1, 2l+1), float64
        Satisfies ``Y_l(Q r) = D^l(Q) Y_l(r)``.

    Examples
    --------
    >>> import numpy as np
    >>> Q = np.array([[0., -1, 0], [1, 0, 0], [0, 0, 1]])   # 90 deg about z
    >>> np.round(wigner_d_real(1, Q), 12) + 0.0             # acts on (y, z, x)
    array([[ 0.,  0.,  1.],
           [ 0.,  1.,  0.],
           [-1.,  0.,  0.]])
    """
    if int(l) != l or l < 0:
        raise ValueError(f"l must be a non-negative integer, got {l}")
    l = int(l)
    Q = _check_orthogonal(Q)
    if l == 0:
        return np.ones(Q.shape[:-2] + (1, 1))
    perm = cartesian_to_sh_permutation()
    D1 = Q[..., perm[:, None], perm[None, :]]
    D = D1
    for k in range(2, l + 1):
        # (D^(k-1) (x) D^1) C = C D^k for proper rotations; an improper Q = -P gives
        # (-1)^(k-1) (-1) = (-1)^k on both sides, so the same formula holds
        n1 = 2 * k - 1
        kron = (D[..., :, None, :, None] * D1[..., None, :, None, :]).reshape(Q.shape[:-2] + (3 * n1, 3 * n1))
        C = _coupling(k)
        D = np.matmul(np.matmul(C.T, kron), C)
    return np.ascontiguousarray(D)


@lru_cache(maxsize=None)
def _coupling(l: int) -> np.ndarray:
    """``cg_real(l-1, 1, l)`` as a ``(3 (2l-1), 2l+1)`` matrix (orthonormal columns)."""
    from .clebsch_gordan import cg_real

    C = np.ascontiguousarray(cg_real(l - 1, 1, l).reshape(3 * (2 * l - 1), 2 * l + 1))
    C.setflags(write=False)
    return C


def cartesian_to_sh_permutation() -> np.ndarray:
    """Indices taking Cartesian (x, y, z) to the l=1 real-harmonic order (y, z, x).

    Returns
    -------
    ndarray of int, shape (3,)
        ``v_sh = v_cart[perm]``.

    Examples
    --------
    >>> cartesian_to_sh_permutation().tolist()
    [1, 2, 0]
    """
    return np.array([1, 2, 0])


def random_rotation(rng: np.random.Generator, improper: bool = False) -> np.ndarray:
    """Haar-random rotation (QR of a Gaussian matrix), optionally times -1.

    Parameters
    ----------
    rng : numpy.random.Generator
    improper : bool
        If True return an improper rotation (det = -1).

    Returns
    -------
    ndarray, shape (3, 3)
    """
    a = rng.normal(size=(3, 3))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q
