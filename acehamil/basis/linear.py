"""Contracted (linear) evaluation: ``E_c = sum_B coeffs[species_c][B] B_key(c)`` and
its particle gradients in reverse mode, without the feature Jacobian.

A :class:`LinearContraction` pushes one coefficient vector per centre species
through the basis tables once:

* ``w = C_key @ c`` (shape ``(n_AA, 2L+1)``): ``E_M = AA . w[:, M]``;
* ``H_M`` (sparse, ``(n_A, n_AA)``): ``dE_M/dA_a = (H_M @ AA)_a``, from the
  product tables ``dAA_k/dA_a = mult * AA_j``.

Built once per coefficient set (an :class:`acehamil.models.potential.ACEPotential`
keeps its own), the contraction makes each evaluation a few sparse and dense
matrix products per batch of centres; see :meth:`acehamil.basis.ACEBasis.evaluate_linear`.

Examples
--------
>>> import numpy as np
>>> from acehamil.basis import ACEBasis, BasisSpec, Centres, RadialSpec
>>> basis = ACEBasis(BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=4.0), max_nu=2, max_degree=4, L_max=0))
>>> lc = basis.contraction({14: np.ones(basis.n_features[(0, 1)])})
>>> env = Centres([14], [0, 0], [[1.0, 0.2, 0.0], [0.0, 2.0, 0.3]], [14, 14])
>>> E, g = basis.evaluate_linear(env, lc)
>>> E.shape, g.shape
((1,), (2, 3))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class LinearContraction:
    """Coefficients of one feature key pushed through the coupling and product tables.

    Parameters
    ----------
    tables : acehamil.basis.product.ProductTables
        Tables of the basis the coefficients belong to.
    coeffs : dict int -> ndarray, shape (n_B,)
        Coefficients per centre species (eV per feature unit for a potential);
        a species absent from the dict contributes 0.
    key : (L, parity)

    Attributes
    ----------
    key : (L, parity)
    n_components : int
        ``2L + 1``.
    weights : dict int -> (ndarray (n_AA, 2L+1), list of scipy.sparse.csr_matrix (n_A, n_AA))
        Per species ``w`` and ``H_M`` (module docstring).
    n_AA, n_A : int
        Sizes of the tables it was built for (checked on use).
    """

    def __init__(self, tables, coeffs: dict, key=(0, 1)):
        key = (int(key[0]), int(key[1]))
        if key not in tables.out_slices:
            raise ValueError(f"no features with key {key}; available {sorted(tables.keys)}")
        L = key[0]
        ncomp = 2 * L + 1
        nB = len(tables.feature_info[key])
        Ck = tables.C[:, tables.out_slices[key]]
        t = tables
        weights = {}
        for s, c in coeffs.items():
            c = np.asarray(c, dtype=float)
            if c.shape != (nB,):
                raise ValueError(f"coefficients for species {s} must have shape ({nB},), got {c.shape}")
            if not np.all(np.isfinite(c)):
                raise ValueError(f"coefficients for species {s} are not finite")
            cm = np.zeros((nB, ncomp, ncomp))
            cm[:, np.arange(ncomp), np.arange(ncomp)] = c[:, None]
            wk = np.ascontiguousarray(Ck @ cm.reshape(nB * ncomp, ncomp))  # (n_AA, 2L+1)
            HT = []
            for M in range(ncomp):
                vals = wk[t.deriv_k, M] * t.deriv_mult
                nz = vals != 0
                H = sp.csr_matrix((vals[nz], (t.deriv_a[nz], t.deriv_j[nz])), shape=(t.n_A, t.n_AA))
                H.sum_duplicates()
                HT.append(H)
            wk.setflags(write=False)
            weights[int(s)] = (wk, HT)
        self.key = key
        self.n_components = ncomp
        self.weights = weights
        self.n_AA = t.n_AA
        self.n_A = t.n_A

    def __repr__(self) -> str:
        return f"LinearContraction(key={self.key}, species={sorted(self.weights)}, n_AA={self.n_AA})"


def pull_back(dEdA, Rc, dRc, Y, dY, rhat, local, slot, p_max, a_k, a_lm, K, n_lm):
    """Particle gradients from ``dE/dA`` of one batch of centres.

    ``phi_a(x_p) = Rc[p, k(a)] Y[p, lm(a)]``, so
    ``dE/dx_p = rhat_p (dRc_p . G Y_p) + sum_lm (Rc_p . G)_lm dY_p[:, lm]`` with
    ``G[c] (K, n_lm)`` the scattered ``dE/dA`` of the particle's centre.

    Parameters
    ----------
    dEdA : ndarray, shape (n_A, nb)
    Rc, dRc : ndarray, shape (P_b, K)
        Category-folded radial values and ``d/dr``.
    Y : ndarray, shape (P_b, n_lm)
    dY : ndarray, shape (P_b, 3, n_lm)
        ``dY/dx`` (xyz before lm).
    rhat : ndarray, shape (P_b, 3)
    local, slot : ndarray of int, shape (P_b,)
        Centre (0..nb-1) and slot of each particle.
    p_max : int
    a_k, a_lm : ndarray of int, shape (n_A,)
    K, n_lm : int

    Returns
    -------
    ndarray, shape (P_b, 3)
    """
    nb = dEdA.shape[1]
    G = np.zeros((nb, K, n_lm))
    G[:, a_k, a_lm] = dEdA.T
    both = np.zeros((2, nb, p_max, K))
    both[0, local, slot] = Rc
    both[1, local, slot] = dRc
    UU = np.matmul(both, G)[:, local, slot]  # (2, P_b, n_lm): Rc.G and dRc.G per particle
    radial = np.einsum("pl,pl->p", UU[1], Y)
    return rhat * radial[:, None] + np.einsum("pl,pxl->px", UU[0], dY)
