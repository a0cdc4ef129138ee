"""Contracted (linear) evaluation: ``E_c = sum_B coeffs[species_c][B] B_key(c)`` and
its particle gradients in reverse mode, without the feature Jacobian.

A :class:`LinearContraction` pushes one coefficient vector per centre species
through the basis tables once: ``w = C_key @ c`` gives ``E_M = sum_k w[k, M] AA_k``
over the product basis.  Only products with a non-zero weight are kept, and
each is split into two halves of at most two factors,
``AA_k = z_x z_y`` with ``z = [1, A_a, A_a A_b (pairs in use)]``, so that

    E_M = z^T W_M z,    dE_M/dz = S_M z  with  S_M = W_M + W_M^T,

a quadratic form in ``z`` (``max_nu <= 4``).  The pair products are the only
products formed; everything else is one sparse matrix product per batch of
centres, and ``dE/dA`` follows from ``dE/dz`` through ``z_(a,b) = A_a A_b``.
This needs neither the higher product levels nor their closure under removing a
factor (most of ``n_AA``: the basis engine keeps them for the full Jacobian).

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

#: Largest centre batch of :func:`evaluate_linear` and :func:`evaluate_composed` (their sparse products are
#: vectorised over the batch; measured flat from ~40 to 64 on the Si benchmark).
LINEAR_BATCH = 64


class LinearContraction:
    """Coefficients of one feature key as quadratic forms in ``z`` (module docstring).

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
    pair_first, pair_second : ndarray of int, shape (n_pairs,)
        The A indices ``a <= b`` of the pair products in ``z`` (rows ``1 + n_A ...``).
    forms : dict int -> list of scipy.sparse.csr_matrix, shape (n_z, n_z)
        Per species, ``S_M`` for ``M = 0..2L``.
    n_AA, n_A : int
        Sizes of the tables it was built for (checked on use).
    """

    def __init__(self, tables, coeffs: dict, key=(0, 1)):
        key = (int(key[0]), int(key[1]))
        if key not in tables.out_slices:
            raise ValueError(f"no features with key {key}; available {sorted(tables.keys)}")
        t = tables
        ncomp = 2 * key[0] + 1
        nB = len(t.feature_info[key])
        Ck = t.C[:, t.out_slices[key]]
        wks = {}
        for s, c in coeffs.items():
            c = np.asarray(c, dtype=float)
            if c.shape != (nB,):
                raise ValueError(f"coefficients for species {s} must have shape ({nB},), got {c.shape}")
            if not np.all(np.isfinite(c)):
                raise ValueError(f"coefficients for species {s} are not finite")
            cm = np.zeros((nB, ncomp, ncomp))
            cm[:, np.arange(ncomp), np.arange(ncomp)] = c[:, None]
            wks[int(s)] = np.asarray(Ck @ cm.reshape(nB * ncomp, ncomp))  # (n_AA, 2L+1)
        nA = t.n_A
        # every product level: its tuples, AA rows, and the halves (left, right) as z-rows
        halves = []
        pair_codes = []
        for nu in range(0, t.spec.max_nu + 1):
            if nu == 0:
                rows, tup = np.array([0]), np.zeros((1, 0), np.int64)
            else:
                rows = t.level_offsets[nu] + np.arange(t.level_offsets[nu + 1] - t.level_offsets[nu])
                tup = t.level_tuples(nu)
            used = np.zeros(len(rows), bool)
            for wk in wks.values():
                used |= np.any(wk[rows] != 0, axis=1)
            rows, tup = rows[used], tup[used]
            halves.append((nu, rows, tup))
            if nu == 3:
                pair_codes.append(tup[:, 0] * nA + tup[:, 1])
            elif nu == 4:
                pair_codes += [tup[:, 0] * nA + tup[:, 1], tup[:, 2] * nA + tup[:, 3]]
        codes = np.unique(np.concatenate(pair_codes)) if pair_codes else np.zeros(0, np.int64)
        self.pair_first, self.pair_second = codes // nA, codes % nA
        n_z = 1 + nA + len(codes)
        q = lambda a, b: 1 + nA + np.searchsorted(codes, a * nA + b)  # noqa: E731
        xs, ys, ks = [], [], []
        for nu, rows, tup in halves:
            if nu == 0:
                x, y = np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64)
            elif nu == 1:
                x, y = np.zeros(len(rows), np.int64), 1 + tup[:, 0]
            elif nu == 2:
                x, y = 1 + tup[:, 0], 1 + tup[:, 1]
            elif nu == 3:
                x, y = q(tup[:, 0], tup[:, 1]), 1 + tup[:, 2]
            else:
                x, y = q(tup[:, 0], tup[:, 1]), q(tup[:, 2], tup[:, 3])
            xs.append(x), ys.append(y), ks.append(rows)
        x, y, k = (np.concatenate(v) for v in (xs, ys, ks))
        self.forms = {}
        for s, wk in wks.items():
            forms = []
            for M in range(ncomp):
                W = sp.csr_matrix((wk[k, M], (x, y)), shape=(n_z, n_z))
                S = (W + W.T).tocsr()
                S.eliminate_zeros()
                forms.append(S)
            self.forms[s] = forms
        # dE/dA from dE/dz of the pairs: column p of D1 puts at a = first(p), of D2 at second(p)
        npair = len(codes)
        cols = np.arange(npair)
        self._chain = sp.csr_matrix(
            (np.ones(2 * npair), (np.concatenate([self.pair_first, self.pair_second]), np.concatenate([cols, npair + cols]))),
            shape=(nA, 2 * npair),
        )
        self.key = key
        self.n_components = ncomp
        self.n_AA = t.n_AA
        self.n_A = nA

    @property
    def n_z(self) -> int:
        """Length of ``z``: 1 + n_A + pair products."""
        return 1 + self.n_A + len(self.pair_first)

    def __repr__(self) -> str:
        return f"LinearContraction(key={self.key}, species={sorted(self.forms)}, n_A={self.n_A}, pairs={len(self.pair_first)})"

    def evaluate(self, A: np.ndarray, species: np.ndarray):
        """Contracted values and ``dE/dA`` of a batch of centres.

        Parameters
        ----------
        A : ndarray, shape (nb, n_A)
            Atomic base of the batch.
        species : ndarray of int, shape (nb,)
            Centre species (those without coefficients give 0).

        Returns
        -------
        E : ndarray, shape (nb, 2L+1)
        dEdA : ndarray, shape (2L+1, n_A, nb)
        """
        nb, nA = len(A), self.n_A
        npair = len(self.pair_first)
        Z = np.empty((self.n_z, nb))
        Z[0] = 1.0
        Z[1 : 1 + nA] = A.T
        # the factors of the pair products, gathered once: [A_second; A_first] (the chain rule's order)
        factors = np.empty((2 * npair, nb))
        if npair:
            np.take(Z, 1 + self.pair_second, axis=0, out=factors[:npair])
            np.take(Z, 1 + self.pair_first, axis=0, out=factors[npair:])
            np.multiply(factors[:npair], factors[npair:], out=Z[1 + nA :])
        E = np.zeros((nb, self.n_components))
        dEdA = np.zeros((self.n_components, nA, nb))
        stacked = np.empty_like(factors)
        for s, forms in self.forms.items():
            sel = np.flatnonzero(species == s)
            if len(sel) == 0:
                continue
            whole = len(sel) == nb
            Zs = Z if whole else np.ascontiguousarray(Z[:, sel])
            Fs = factors if whole else np.ascontiguousarray(factors[:, sel])
            St = stacked if whole else np.empty_like(Fs)
            for M, S in enumerate(forms):
                U = S @ Zs  # dE/dz, (n_z, nb_s)
                E[sel, M] = 0.5 * np.einsum("zb,zb->b", Zs, U)
                Up = U[1 + nA :]
                np.multiply(Up, Fs[:npair], out=St[:npair])
                np.multiply(Up, Fs[npair:], out=St[npair:])
                dEdA[M][:, sel] = U[1 : 1 + nA] + self._chain @ St
        return E, dEdA


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


def evaluate_linear(basis, centres, coeffs, key=None) -> tuple:
    """:meth:`ACEBasis.evaluate_linear <acehamil.basis.ACEBasis.evaluate_linear>` of ``basis`` (see there), one reverse
    pass per batch of at most :data:`LINEAR_BATCH` centres."""
    t = basis.tables
    if isinstance(coeffs, LinearContraction):
        lc = coeffs
        if (lc.n_AA, lc.n_A) != (t.n_AA, t.n_A):
            raise ValueError("the LinearContraction was built for a different basis")
        if key is not None and tuple(key) != lc.key:
            raise ValueError(f"key {tuple(key)} differs from the contraction's key {lc.key}")
    else:
        lc = basis.contraction(coeffs, (0, 1) if key is None else key)
    L = lc.key[0]
    ncomp = lc.n_components
    prep = basis._prepare(centres)
    order = prep[0]
    nc, P = centres.n_centres, len(order)
    E = np.zeros((nc, ncomp))
    g = np.zeros((P, ncomp, 3))
    species = centres.centre_species
    K = len(basis.spec.categories) * basis.spec.radial.n_max
    n_lm = (t.l_max + 1) ** 2
    for c0, c1, p0, p1, A, Rc, Y, (dRc, dY, rhat), local, slot, p_max in basis._batches(
        prep, lc.n_z, True, max_centres=LINEAR_BATCH, xyz_first=True
    ):
        E[c0:c1], dEdA = lc.evaluate(A, species[c0:c1])
        rows = order[p0:p1]
        for M in range(ncomp):
            g[rows, M] = pull_back(dEdA[M], Rc, dRc, Y, dY, rhat, local, slot, p_max, basis._a_k, t.a_lm, K, n_lm)
    if L == 0:
        return E[:, 0], g[:, 0, :]
    return E, g


def evaluate_composed(basis, centres, contractions, outer) -> tuple:
    """:meth:`ACEBasis.evaluate_composed <acehamil.basis.ACEBasis.evaluate_composed>` of ``basis`` (see there): one
    reverse pass for all contractions."""
    t = basis.tables
    contractions = list(contractions)
    if not contractions:
        raise ValueError("evaluate_composed needs at least one contraction")
    for lc in contractions:
        if not isinstance(lc, LinearContraction) or (lc.n_AA, lc.n_A) != (t.n_AA, t.n_A):
            raise ValueError("every contraction must be a LinearContraction built for this basis")
        if lc.key != (0, 1):
            raise ValueError(f"evaluate_composed contracts invariants (0, 1), got key {lc.key}")
    prep = basis._prepare(centres)
    order = prep[0]
    nc, P = centres.n_centres, len(order)
    nk = len(contractions)
    E = np.zeros(nc)
    rho = np.zeros((nc, nk))
    g = np.zeros((P, 3))
    species = centres.centre_species
    K = len(basis.spec.categories) * basis.spec.radial.n_max
    n_lm = (t.l_max + 1) ** 2
    n_z = max(lc.n_z for lc in contractions)
    for c0, c1, p0, p1, A, Rc, Y, (dRc, dY, rhat), local, slot, p_max in basis._batches(
        prep, n_z, True, max_centres=LINEAR_BATCH, xyz_first=True
    ):
        parts = [lc.evaluate(A, species[c0:c1]) for lc in contractions]
        r = np.stack([v[:, 0] for v, _ in parts], axis=1)
        eps, deps = outer(r, species[c0:c1])
        dEdA = sum(deps[None, :, k] * d[0] for k, (_, d) in enumerate(parts))
        rho[c0:c1], E[c0:c1] = r, eps
        g[order[p0:p1]] = pull_back(dEdA, Rc, dRc, Y, dY, rhat, local, slot, p_max, basis._a_k, t.a_lm, K, n_lm)
    return E, g, rho
