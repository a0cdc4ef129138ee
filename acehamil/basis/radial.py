"""Radial basis: orthonormal polynomials in ``u = r / r_cut`` times a smooth envelope.

``R_n(r) = sum_k T[k, n] P_k(2u - 1) (1 - u)^p`` for ``u < 1`` and 0 beyond,
with ``P_k`` Legendre polynomials, ``p = RadialSpec.envelope_power >= 2`` (so
value and first derivative vanish at the cutoff) and ``T`` chosen (Cholesky of
a QR factorisation on a Gauss-Legendre grid) so that
``int_0^1 R_n R_n' du = delta_nn'``.  The cutoff may differ per particle (per
centre-species / category pair, see :class:`RadialSpec`), and so may a decay
``exp(-r / length)`` that multiplies every ``R_n`` of a particle
(``RadialSpec.decays``; passed per particle as ``decay``).

Examples
--------
>>> rb = RadialBasis(RadialSpec(n_max=3, r_cut=4.0))
>>> R, dR = rb.evaluate(np.array([1.0, 4.0, 5.0]), np.full(3, 4.0), gradients=True)
>>> R.shape, bool(np.all(R[1:] == 0)), bool(np.all(dR[1:] == 0))
((3, 3), True, True)
"""

from __future__ import annotations

import numpy as np

from .spec import RadialSpec


def _legendre(x: np.ndarray, n: int, derivative: bool = True) -> tuple:
    """Legendre ``P_k(x)`` and ``P_k'(x)``, k = 0..n-1; shapes (len(x), n) (views of (n, len(x))
    arrays: each recursion step runs over one contiguous row).  ``P'`` is None unless ``derivative``."""
    x = np.asarray(x, dtype=float)
    P = np.empty((n, len(x)))
    dP = np.zeros((n, len(x))) if derivative else None
    P[0] = 1.0
    if n > 1:
        P[1] = x
        if derivative:
            dP[1] = 1.0
    tmp = np.empty(len(x)) if n > 2 else None
    for k in range(1, n - 1):
        # P[k+1] = ((2k+1) x P[k] - k P[k-1]) / (k+1), in place (the same operations, no temporaries)
        np.multiply(x, 2 * k + 1, out=P[k + 1])
        P[k + 1] *= P[k]
        np.multiply(P[k - 1], k, out=tmp)
        P[k + 1] -= tmp
        P[k + 1] /= k + 1
        if derivative:
            dP[k + 1] = dP[k - 1] + (2 * k + 1) * P[k]
    return P.T, (dP.T if derivative else None)


class RadialBasis:
    """Evaluates ``R_n(r)`` and ``dR_n/dr`` for a :class:`RadialSpec`.

    Parameters
    ----------
    spec : RadialSpec
    """

    def __init__(self, spec: RadialSpec):
        if not isinstance(spec, RadialSpec):
            raise TypeError(f"spec must be a RadialSpec, got {type(spec).__name__}")
        self.spec = spec
        n, p = spec.n_max, spec.envelope_power
        x, w = np.polynomial.legendre.leggauss(n + p + 8)
        u = 0.5 * (x + 1.0)
        f = _legendre(x, n)[0] * ((1.0 - u) ** p)[:, None]
        # Gram-Schmidt by QR of the quadrature-weighted values (stabler than Cholesky of the Gram)
        _, Rm = np.linalg.qr(f * np.sqrt(0.5 * w)[:, None])
        Rm = Rm * np.sign(np.diag(Rm))[:, None]
        self._T = np.linalg.inv(Rm)  # f @ T is orthonormal
        self._T.setflags(write=False)

    @property
    def n_max(self) -> int:
        return self.spec.n_max

    def evaluate(self, r: np.ndarray, r_cut: np.ndarray, gradients: bool = False, decay=None):
        """Radial functions of distances.

        Parameters
        ----------
        r : ndarray, shape (P,), Å
        r_cut : ndarray, shape (P,), Å
            Cutoff of each particle.
        gradients : bool
        decay : ndarray, shape (P,), Å, optional
            Decay length of each particle (:meth:`RadialSpec.decay_lengths`): its ``R_n`` are
            multiplied by ``exp(-r / decay)``; 0 = none.  None = no particle decays.

        Returns
        -------
        R : ndarray, shape (P, n_max), float64
        dR : ndarray, shape (P, n_max), 1/Å
            ``dR/dr``; only when ``gradients``.
        """
        r = np.asarray(r, dtype=float)
        r_cut = np.asarray(r_cut, dtype=float)
        u = r / r_cut
        inside = u < 1.0
        uc = np.where(inside, u, 1.0)
        P, dP = _legendre(2.0 * uc - 1.0, self.n_max, derivative=gradients)
        p = self.spec.envelope_power
        one_m = np.where(inside, 1.0 - uc, 0.0)
        env = one_m**p
        g = dg = None
        if decay is not None:
            decay = np.asarray(decay, dtype=float)
            if decay.shape != r.shape:
                raise ValueError(f"decay must have shape {r.shape}, got {decay.shape}")
            if np.any(decay < 0) or not np.all(np.isfinite(decay)):
                raise ValueError("decay lengths must be finite and >= 0 Å")
            has = decay > 0
            rate = np.divide(1.0, decay, out=np.zeros_like(decay), where=has)
            g = np.exp(-r * rate)
            dg = -rate * g
        if not gradients:  # the envelope applied in place on P's contiguous rows (P is their transposed view)
            rows = P.T
            rows *= env if g is None else env * g
            return rows.T @ self._T
        R = (P * env[:, None]) @ self._T
        denv = -p * one_m ** (p - 1)
        dfdu = 2.0 * dP * env[:, None] + P * denv[:, None]
        dR = (dfdu @ self._T) / r_cut[:, None]
        if g is not None:
            dR = dR * g[:, None] + R * dg[:, None]
            R = R * g[:, None]
        return R, dR
