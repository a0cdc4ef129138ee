"""Atomic base ``A_{c n l m}`` per centre and the one-particle functions behind it.

``phi_a(x_p) = w_p R_n(|x_p|) Y_lm(x_p / |x_p|) [category_p == c]`` for
``a = (c, n, l, m)``, and ``A_a(centre) = sum_{p in centre} phi_a(x_p)``.
The weight ``w_p`` (optional, default 1) is treated as a constant: no gradient
flows through it.
"""

from __future__ import annotations

import numpy as np


def one_particle(tables, R, Y, cat_index, weight, dR=None, dY=None, vec=None, r=None):
    """One-particle functions (and their gradients) for a batch of particles.

    Parameters
    ----------
    tables : ProductTables
    R : ndarray, shape (P, n_max)
    Y : ndarray, shape (P, (l_max+1)**2)
    cat_index : ndarray of int, shape (P,)
        The particles' categories.
    weight : ndarray, shape (P,)
    dR : ndarray, shape (P, n_max), optional
        ``dR/dr`` (1/Å); with ``dY``, ``vec`` and ``r`` requests gradients.
    dY : ndarray, shape (P, (l_max+1)**2, 3), optional
    vec : ndarray, shape (P, 3), optional
    r : ndarray, shape (P,), optional

    Returns
    -------
    phi : ndarray, shape (P, n_A)
    dphi : ndarray, shape (P, n_A, 3), 1/Å
        Only when gradients are requested.
    """
    mask = (cat_index[:, None] == tables.a_cat[None, :]) * weight[:, None]
    Rg = R[:, tables.a_n]
    Yg = Y[:, tables.a_lm]
    phi = Rg * Yg * mask
    if dR is None:
        return phi
    rhat = vec / r[:, None]
    dphi = (dR[:, tables.a_n] * Yg * mask)[:, :, None] * rhat[:, None, :]
    dphi += (Rg * mask)[:, :, None] * dY[:, tables.a_lm, :]
    return phi, dphi


def atomic_base(phi: np.ndarray, local_centre: np.ndarray, n_centres: int) -> np.ndarray:
    """Sum one-particle functions over each centre's particles.

    Parameters
    ----------
    phi : ndarray, shape (P, n_A)
    local_centre : ndarray of int, shape (P,)
        Non-decreasing centre index of each particle (0..n_centres-1).
    n_centres : int

    Returns
    -------
    A : ndarray, shape (n_centres, n_A)

    Examples
    --------
    >>> atomic_base(np.ones((3, 2)), np.array([0, 0, 2]), 3)
    array([[2., 2.],
           [0., 0.],
           [1., 1.]])
    """
    A = np.zeros((n_centres, phi.shape[1]))
    if len(phi) == 0:
        return A
    starts = np.searchsorted(local_centre, np.arange(n_centres))
    ends = np.searchsorted(local_centre, np.arange(n_centres), side="right")
    nonempty = ends > starts
    A[nonempty] = np.add.reduceat(phi, starts[nonempty], axis=0)
    return A
