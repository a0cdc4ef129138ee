"""Real Wigner-D matrices in acehamil's real spherical-harmonic basis.

``D^l(Q)`` is defined by ``Y_l(Q r) = D^l(Q) Y_l(r)`` for every unit vector
``r``, with ``Y_l`` the standard real harmonics (index ``l*l + l + m``,
see :mod:`acehamil.conventions`).  This holds for proper and improper
orthogonal ``Q``; for an improper ``Q = -P``, ``D^l(Q) = (-1)^l D^l(P)``.

The matrix is obtained by solving ``Y(Q R) = D Y(R)`` on a fixed, well-spread
set of unit vectors ``R`` (an exact linear problem, conditioned to ~1e-15).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sphericart


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1.0 - 2.0 * i / n)
    theta = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


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


@lru_cache(maxsize=None)
def _sample(l: int) -> tuple[np.ndarray, np.ndarray]:
    pts = _fibonacci_sphere(4 * (2 * l + 1))
    y = real_sph_harm(pts, l)[:, l * l : (l + 1) ** 2]
    pinv = np.linalg.pinv(y.T)  # (npts, 2l+1): D = Y(QR)^T-stack @ pinv
    pinv.setflags(write=False)
    pts.setflags(write=False)
    return pts, pinv


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
    pts, pinv = _sample(l)
    rotated = np.einsum("...ij,nj->...ni", Q, pts)
    flat = rotated.reshape(-1, 3)
    y = real_sph_harm(flat, l)[:, l * l :].reshape(rotated.shape[:-1] + (2 * l + 1,))
    # y[..., n, :] = D @ Y(pts[n])  =>  D = y^T @ pinv
    return np.einsum("...nm,nk->...mk", y, pinv)


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
