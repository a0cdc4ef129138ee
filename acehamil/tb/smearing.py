"""Smearing functions, occupations and the Fermi level from an electron count.

Conventions (``x = E - mu`` in eV, ``w`` = width in eV, ``u = x / w``):

- ``"gaussian"``: ``delta = exp(-u^2) / (w sqrt(pi))`` (standard deviation ``w / sqrt 2``,
  as in ``ase.dft.dos`` and Quantum ESPRESSO's ``degauss``); ``f = erfc(u) / 2``.
- ``"fermi-dirac"``: ``f = 1 / (1 + exp(u))`` (``w = k_B T``); ``delta = -df/dx``.
- ``"methfessel-paxton"`` (order ``N``, default 1): ``delta = sum_n A_n H_2n(u) exp(-u^2) / w``,
  ``f = erfc(u)/2 + sum_{n>=1} A_n H_{2n-1}(u) exp(-u^2)``, ``A_n = (-1)^n / (n! 4^n sqrt(pi))``;
  order 0 is the Gaussian.  Occupations may leave [0, 1] slightly (that is the method).

Every delta integrates to 1 over E.  Occupations ``f`` are per state;
multiply by the spin degeneracy (2 for a spin-unpolarised calculation, 1 per
channel for a spin-polarised one).

Examples
--------
>>> import numpy as np
>>> x = np.linspace(-1, 1, 2001)
>>> [round(float(np.trapezoid(delta(x, 0.05, k), x)), 8) for k in SMEARINGS]
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfc, eval_hermite

__all__ = ["SMEARINGS", "delta", "occupation", "fermi_level", "electron_count"]

SMEARINGS = ("gaussian", "fermi-dirac", "methfessel-paxton")


def _check(width, kind, order):
    if kind not in SMEARINGS:
        raise ValueError(f"smearing must be one of {SMEARINGS}, got {kind!r}")
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"smearing width must be a positive number of eV, got {width}")
    if int(order) != order or order < 0:
        raise ValueError(f"Methfessel-Paxton order must be an integer >= 0, got {order}")


def delta(x, width: float, kind: str = "gaussian", order: int = 1) -> np.ndarray:
    """Smeared delta function (1/eV) at ``x = E - eps`` (eV), any shape."""
    _check(width, kind, order)
    u = np.asarray(x, dtype=np.float64) / width
    if kind == "fermi-dirac":
        v = np.minimum(np.abs(u), 700.0)
        return np.exp(-v) / (1.0 + np.exp(-v)) ** 2 / width
    g = np.exp(-u * u)
    if kind == "gaussian" or order == 0:
        return g / (width * math.sqrt(math.pi))
    out = np.zeros_like(u)
    for n in range(order + 1):
        a = (-1) ** n / (math.factorial(n) * 4**n * math.sqrt(math.pi))
        out += a * eval_hermite(2 * n, u)
    return out * g / width


def occupation(x, width: float, kind: str = "gaussian", order: int = 1) -> np.ndarray:
    """Occupation ``f`` (per state, dimensionless) of a level at ``x = eps - mu`` (eV)."""
    _check(width, kind, order)
    u = np.asarray(x, dtype=np.float64) / width
    if kind == "fermi-dirac":
        return 0.5 * (1.0 - np.tanh(0.5 * u))
    f = 0.5 * erfc(u)
    if kind == "gaussian" or order == 0:
        return f
    g = np.exp(-u * u)
    for n in range(1, order + 1):
        a = (-1) ** n / (math.factorial(n) * 4**n * math.sqrt(math.pi))
        f = f + a * eval_hermite(2 * n - 1, u) * g
    return f


def _levels(eps, weights, spin_degeneracy):
    e = np.asarray(eps, dtype=np.float64)
    if e.ndim == 2:
        e = e[None]
    if e.ndim != 3:
        raise ValueError(f"eigenvalues must have shape (nk, nbands) or (nspin, nk, nbands), got {np.shape(eps)}")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != e.shape[1]:
        raise ValueError(f"{len(w)} k-point weights for {e.shape[1]} k-points")
    if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-8):
        raise ValueError(f"k-point weights must be >= 0 and sum to 1, they sum to {w.sum()}")
    if spin_degeneracy not in (1, 2):
        raise ValueError(f"spin_degeneracy must be 1 or 2, got {spin_degeneracy}")
    return e, w


def electron_count(eps, weights, mu, width, kind="gaussian", spin_degeneracy=2, order=1) -> float:
    """Electrons per cell at chemical potential ``mu`` (eV)."""
    e, w = _levels(eps, weights, spin_degeneracy)
    return float(spin_degeneracy * np.einsum("k,skb->", w, occupation(e - mu, width, kind, order)))


def fermi_level(eps, weights, n_electrons: float, width: float = 0.01, kind: str = "fermi-dirac",
                spin_degeneracy: int = 2, order: int = 1, gap_tol: float = 1e-6) -> float:
    """Fermi level (eV) that holds ``n_electrons`` per cell.

    If the levels, filled in order at zero temperature, hold exactly
    ``n_electrons`` in the same number of bands at every k-point with a gap
    above (an insulator or a molecule), the Fermi level is the middle of that
    gap (independent of the smearing).  Otherwise
    it is found by bisection on the smeared electron count.

    Parameters
    ----------
    eps : array, shape (nk, nbands) or (nspin, nk, nbands), eV
    weights : array, shape (nk,), sum 1
    n_electrons : float
        Electrons per cell (counted by the orbital basis).
    width, kind, order
        Smearing (see module docstring) for the metallic case.
    spin_degeneracy : {1, 2}
        Electrons per state: 2 for spin-unpolarised, 1 for spin-polarised channels.
    gap_tol : float
        Smallest gap (eV) treated as a gap.

    Returns
    -------
    float, eV

    Examples
    --------
    >>> fermi_level([[-1.0, 1.0]], [1.0], 2.0)   # 2-level molecule, one doubly occupied level
    0.0
    """
    e, w = _levels(eps, weights, spin_degeneracy)
    total = spin_degeneracy * e.shape[0] * e.shape[2]
    if not (0 <= n_electrons <= total):
        raise ValueError(f"n_electrons={n_electrons} outside 0..{total} (the number of states incl. spin)")
    lev = e.reshape(-1)  # (spin, k, band) flattened
    wt = np.broadcast_to(w[None, :, None], e.shape).reshape(-1) * spin_degeneracy
    order_ = np.argsort(lev, kind="stable")
    lev_s, cum = lev[order_], np.cumsum(wt[order_])
    if n_electrons <= 1e-12:
        return float(lev_s[0] - 50 * width)
    idx = int(np.searchsorted(cum, n_electrons - 1e-9))
    if idx < len(lev_s) and abs(cum[idx] - n_electrons) < 1e-9:
        if idx + 1 >= len(lev_s):
            return float(lev_s[-1] + 50 * width)
        # a true gap: the same number of filled bands at every k (per spin) and a gap above them
        filled = np.zeros(lev.size, bool)
        filled[order_[: idx + 1]] = True
        nfill = filled.reshape(e.shape).sum(axis=2)  # (nspin, nk)
        if np.all(nfill == nfill[:, :1]) and lev_s[idx + 1] - lev_s[idx] > gap_tol:
            return float(0.5 * (lev_s[idx] + lev_s[idx + 1]))
    lo, hi = lev_s[0] - 50 * width, lev_s[-1] + 50 * width
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if electron_count(e, w, mid, width, kind, spin_degeneracy, order) < n_electrons:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return float(0.5 * (lo + hi))
