"""Real spherical harmonics of particle directions, with gradients (sphericart).

Orthonormal real harmonics at flat index ``l*l + l + m`` (p is y, z, x), the
convention of :mod:`acehamil.conventions`; ``Y(Q r) = D(Q) Y(r)``
(:func:`acehamil.so3.wigner_d_real`).

Examples
--------
>>> ang = AngularBasis(1)
>>> Y = ang.evaluate(np.array([[0.0, 0.0, 2.0]]))
>>> np.round(Y * np.sqrt(4 * np.pi), 12) + 0.0    # Y_00, Y_1-1 ~ y, Y_10 ~ z, Y_11 ~ x
array([[1.        , 0.        , 1.73205081, 0.        ]])
"""

from __future__ import annotations

import threading

import numpy as np
import sphericart


class AngularBasis:
    """Real harmonics ``Y_lm(r / |r|)`` for ``l = 0..l_max``.

    Safe to call from several threads at once: each thread computes with its own sphericart
    calculator (one calculator shared by two threads returned wrong values for ``l >= 7``,
    measured with sphericart's CPU calculator: its scratch space lives in the calculator).

    Parameters
    ----------
    l_max : int
    """

    def __init__(self, l_max: int):
        if int(l_max) != l_max or l_max < 0:
            raise ValueError(f"l_max must be a non-negative integer, got {l_max}")
        self.l_max = int(l_max)
        self._local = threading.local()

    def __reduce__(self):
        # rebuilt from l_max (calculators hold C pointers and are per thread)
        return (AngularBasis, (self.l_max,))

    @property
    def _sh(self):
        """This thread's sphericart calculator (made on its first use in the thread)."""
        sh = getattr(self._local, "sh", None)
        if sh is None:
            sh = self._local.sh = sphericart.SphericalHarmonics(self.l_max)
        return sh

    def evaluate(self, vec: np.ndarray, gradients: bool = False, xyz_first: bool = False):
        """Harmonics of directions.

        Parameters
        ----------
        vec : ndarray, shape (P, 3), Å
            Non-zero vectors (not necessarily unit).
        gradients : bool
        xyz_first : bool
            Return ``dY`` as (P, 3, n_lm) (sphericart's layout, no copy).

        Returns
        -------
        Y : ndarray, shape (P, (l_max+1)**2), float64
        dY : ndarray, shape (P, (l_max+1)**2, 3), 1/Å
            ``dY / d vec``; only when ``gradients``; shape (P, 3, n_lm) with ``xyz_first``.
        """
        vec = np.ascontiguousarray(vec, dtype=float)
        if vec.ndim != 2 or vec.shape[1] != 3:
            raise ValueError(f"vectors must have shape (P, 3), got {vec.shape}")
        if len(vec) == 0:
            n = (self.l_max + 1) ** 2
            return (np.zeros((0, n)), np.zeros((0, 3, n) if xyz_first else (0, n, 3))) if gradients else np.zeros((0, n))
        from ..threads import omp_threads

        if not gradients:
            with omp_threads():  # sphericart's OpenMP team: one thread unless limit_threads chose more
                return self._sh.compute(vec)
        with omp_threads():
            Y, dY = self._sh.compute_with_gradients(vec)
        return Y, (dY if xyz_first else np.ascontiguousarray(np.swapaxes(dY, 1, 2)))
