"""Product basis tables: one-particle functions, sorted A-index tuples, coupling matrix.

Built once from a :class:`BasisSpec`:

* one-particle functions ``v = (category, n, l)`` with degree
  ``weight_n*n + weight_l*l`` within the limits (only those used by a product);
  the atomic base ``A`` has flat index ``a = offset[v] + l + m``;
* for each order ``nu`` the sorted multisets of ``v``'s (degree limit per ``nu``,
  singleton rule, at least one reachable ``(L, parity)``), coupled by
  :func:`coupling_pattern` into features;
* levels of products ``AA``: level 0 is the constant 1, level 1 is ``A``, level
  ``nu`` holds sorted ``a``-tuples; every level is closed under removing one
  factor, so ``AA_k = AA_prefix(k) * A_last(k)`` and
  ``dAA_k / dA_a = mult * AA_{k minus a}`` are both table look-ups;
* a sparse coupling matrix ``C (n_AA, n_out)``: ``B_flat = AA @ C`` with output
  columns ordered by key, then feature, then ``M``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .coupling import coupling_pattern
from .spec import BasisSpec


@dataclass(frozen=True)
class FeatureInfo:
    """Description of one feature ``B_L``.

    Attributes
    ----------
    nu : int
        Correlation order (number of factors).
    degree : float
        Total degree ``sum(weight_n*n + weight_l*l)`` (use for smoothness priors).
    factors : tuple of (category, n, l)
        The one-particle functions of the product (sorted).
    index : int
        Index of this feature among those of the same product (0.. multiplicity-1).
    """

    nu: int
    degree: float
    factors: tuple
    index: int


def _one_particle(spec: BasisSpec) -> list[tuple]:
    lim = max(spec.max_degree)
    out = []
    for c in spec.categories:
        for n in range(spec.radial.n_max):
            for l in range(0, int(lim / spec.weight_l + 1e-9) + 1):
                if spec.l_max is not None and l > spec.l_max:
                    break
                if spec.weight_n * n + spec.weight_l * l <= lim + 1e-9:
                    out.append((c, n, l))
    return out


def _multisets(spec: BasisSpec, vs: list, nu: int):
    """Sorted index tuples into ``vs`` within the degree limit and singleton rule."""
    deg = [spec.weight_n * n + spec.weight_l * l for _, n, l in vs]
    single = [c in spec.singleton_categories for c, _, _ in vs]
    lim = spec.degree_limit(nu) + 1e-9
    need_single = bool(spec.singleton_categories)

    def rec(start, prefix, d, ns):
        if len(prefix) == nu:
            if not need_single or ns == 1:
                yield tuple(prefix)
            return
        for i in range(start, len(vs)):
            if d + deg[i] > lim:
                continue
            s = ns + single[i]
            if need_single and s > 1:
                continue
            prefix.append(i)
            yield from rec(i, prefix, d + deg[i], s)
            prefix.pop()

    yield from rec(0, [], 0.0, 0)


def _reachable(ls, L) -> bool:
    return max(0, 2 * max(ls) - sum(ls)) <= L <= sum(ls)


class ProductTables:
    """All index tables and sparse matrices of a basis (see module docstring).

    Parameters
    ----------
    spec : BasisSpec

    Attributes
    ----------
    keys : list of (L, parity)
    feature_info : dict (L, parity) -> tuple of FeatureInfo
    out_slices : dict (L, parity) -> slice into the flat output (n_B * (2L+1) columns)
    v_table : ndarray of int, shape (n_v, 3)
        ``(category, n, l)`` of each one-particle function.
    a_v, a_cat, a_n, a_lm : ndarray of int, shape (n_A,)
        One-particle function, category, radial index and flat ``l*l+l+m`` of each A.
    level_offsets : list of int
        Start of each level in the flat AA vector (level 0 = constant, 1 = A).
    prefix, last : list of ndarray of int
        For level ``nu >= 2``: global index of the prefix product and the last A index.
    C : scipy.sparse.csr_matrix, shape (n_AA, n_out)
    deriv_k, deriv_a, deriv_j : ndarray of int; deriv_mult : ndarray of float
        ``dAA_k / dA_a`` contains ``deriv_mult * AA_j`` (one entry per distinct a in k).
    """

    def __init__(self, spec: BasisSpec):
        from .spec import check_size

        self.spec = spec
        check_size(spec, f"basis of categories {list(spec.categories)}")
        cand = _one_particle(spec)
        keys = [(L, p) for L in range(spec.L_max + 1) for p in (-1, 1)]  # sorted
        # features per (nu, multiset, key): (multiset, key, pattern)
        found = []
        for nu in range(1, spec.max_nu + 1):
            for ms in _multisets(spec, cand, nu):
                ls = tuple(cand[i][2] for i in ms)
                par = (-1) ** sum(ls)
                if par not in spec.parities:
                    continue
                for L in range(spec.L_max + 1):
                    if not _reachable(ls, L):
                        continue
                    pat = coupling_pattern(ls, tuple(ms.index(x) for x in ms), L)
                    if pat.coeffs.shape[1]:
                        found.append((ms, (L, par), pat))
        used = sorted({i for ms, _, _ in found for i in ms})
        remap = {i: k for k, i in enumerate(used)}
        self.v_table = np.array([cand[i] for i in used], dtype=np.int64).reshape(-1, 3)
        ls_v = self.v_table[:, 2]
        v_off = np.concatenate([[0], np.cumsum(2 * ls_v + 1)]).astype(np.int64)
        self.n_A = int(v_off[-1])
        self.a_v = np.repeat(np.arange(len(used)), 2 * ls_v + 1)
        self.a_cat = self.v_table[self.a_v, 0]
        self.a_n = self.v_table[self.a_v, 1]
        m_off = np.arange(self.n_A) - v_off[self.a_v]  # l + m
        self.a_lm = ls_v[self.a_v] ** 2 + m_off
        self.l_max = int(ls_v.max()) if len(ls_v) else 0
        base = max(self.n_A, 1)
        if base ** spec.max_nu >= 2**62:
            raise ValueError(f"basis too large: {self.n_A} one-particle functions to the power max_nu={spec.max_nu} overflows int64 keys")
        self._base = base

        # group the found features by key, in order of nu then multiset
        per_key = {k: [] for k in keys}
        for ms, key, pat in found:
            per_key[key].append((tuple(remap[i] for i in ms), pat))
        self.keys = [k for k in keys if per_key[k]]

        # a-tuples of every product term, per level
        level_keys = {nu: [] for nu in range(1, spec.max_nu + 1)}
        terms = []  # (nu, tuple_keys (n_u,), out_cols (n_f*(2L+1),), coeffs (n_u, n_f*(2L+1)))
        self.feature_info = {}
        self.out_slices = {}
        col = 0
        for key in self.keys:
            L = key[0]
            infos = []
            start = col
            for ms, pat in per_key[key]:
                nu = len(ms)
                atup = v_off[np.array(ms)][None, :] + pat.mtuples  # (n_u, nu)
                tkeys = self._encode(atup)
                nf = pat.coeffs.shape[1]
                cols = col + np.arange(nf * (2 * L + 1))
                terms.append((nu, tkeys, cols, pat.coeffs.reshape(len(tkeys), -1)))
                level_keys[nu].append(tkeys)
                vt = [tuple(int(x) for x in self.v_table[i]) for i in ms]
                deg = sum(spec.weight_n * n + spec.weight_l * l for _, n, l in vt)
                infos.extend(FeatureInfo(nu, deg, tuple(vt), f) for f in range(nf))
                col += nf * (2 * L + 1)
            self.feature_info[key] = tuple(infos)
            self.out_slices[key] = slice(start, col)
        self.n_out = col

        # close the levels under removal of one factor, top down
        levels = {}
        for nu in range(spec.max_nu, 1, -1):
            arr = np.unique(np.concatenate(level_keys[nu])) if level_keys[nu] else np.zeros(0, np.int64)
            levels[nu] = arr
            tup = self._decode(arr, nu)
            for i in range(nu):
                sub = np.delete(tup, i, axis=1)
                level_keys[nu - 1].append(self._encode(sub))
        levels[1] = np.arange(self.n_A, dtype=np.int64)
        self.level_offsets = [0, 1]
        off = 1 + self.n_A
        self.level_index = {1: levels[1]}
        for nu in range(2, spec.max_nu + 1):
            self.level_offsets.append(off)
            off += len(levels[nu])
        self.level_offsets.append(off)
        self.n_AA = off
        self._levels = levels

        self.prefix, self.last = [], []
        for nu in range(2, spec.max_nu + 1):
            tup = self._decode(levels[nu], nu)
            self.prefix.append(self._index(tup[:, :-1]))
            self.last.append(tup[:, -1].copy())

        # coupling matrix
        rows, cols, vals = [], [], []
        for nu, tkeys, ocols, coeffs in terms:
            k = self.level_offsets[nu] + np.searchsorted(levels[nu], tkeys)
            r = np.repeat(k, coeffs.shape[1])
            c = np.tile(ocols, len(k))
            v = coeffs.ravel()
            nz = v != 0
            rows.append(r[nz])
            cols.append(c[nz])
            vals.append(v[nz])
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
        self.C = sp.csr_matrix(
            (cat(vals, float), (cat(rows, np.int64), cat(cols, np.int64))), shape=(self.n_AA, self.n_out)
        )

        # derivative tables dAA_k/dA_a = mult * AA_j
        dk, da, dj, dm = [], [], [], []
        for nu in range(1, spec.max_nu + 1):
            tup = self._decode(levels[nu], nu)
            kk = self.level_offsets[nu] + np.arange(len(tup))
            for i in range(nu):
                first = np.ones(len(tup), bool) if i == 0 else tup[:, i] != tup[:, i - 1]
                mult = np.sum(tup == tup[:, i : i + 1], axis=1)
                j = self._index(np.delete(tup, i, axis=1)) if nu > 1 else np.zeros(len(tup), np.int64)
                dk.append(kk[first])
                da.append(tup[first, i])
                dj.append(j[first])
                dm.append(mult[first].astype(float))
        self.deriv_k = np.concatenate(dk)
        self.deriv_a = np.concatenate(da)
        self.deriv_j = np.concatenate(dj)
        self.deriv_mult = np.concatenate(dm)

    # -- encoding of sorted a-tuples as int64 -------------------------------------------
    def _encode(self, tup: np.ndarray) -> np.ndarray:
        tup = np.asarray(tup, dtype=np.int64)
        key = np.zeros(len(tup), np.int64)
        for i in range(tup.shape[1]):
            key = key * self._base + tup[:, i]
        return key

    def _decode(self, keys: np.ndarray, nu: int) -> np.ndarray:
        out = np.zeros((len(keys), nu), np.int64)
        k = np.asarray(keys, dtype=np.int64).copy()
        for i in range(nu - 1, -1, -1):
            out[:, i] = k % self._base
            k //= self._base
        return out

    def level_tuples(self, nu: int) -> np.ndarray:
        """Sorted A-index tuples of level ``nu`` (AA rows ``level_offsets[nu]:level_offsets[nu+1]``).

        Returns
        -------
        ndarray of int, shape (n_level, nu)
        """
        if nu == 1:
            return np.arange(self.n_A, dtype=np.int64)[:, None]
        return self._decode(self._levels[nu], nu)

    def _index(self, tup: np.ndarray) -> np.ndarray:
        """Global AA index of sorted tuples (all of the same length >= 1)."""
        nu = tup.shape[1]
        if nu == 0:
            return np.zeros(len(tup), np.int64)
        if nu == 1:
            return 1 + tup[:, 0]
        keys = self._encode(tup)
        pos = np.searchsorted(self._levels[nu], keys)
        return self.level_offsets[nu] + pos

    def gradient_tables(self, C=None):
        """Sparse map from AA to ``dB/dA`` on its non-zero pattern.

        Parameters
        ----------
        C : scipy.sparse matrix, shape (n_AA, n), optional
            Coupling columns to differentiate (default all of ``self.C``).

        Returns
        -------
        G : scipy.sparse.csr_matrix, shape (Q, n_AA)
            ``dB_o / dA_a = (G @ AA)[q]`` for the pattern entry ``q = (o, a)``.
        q_out : ndarray of int, shape (Q,)
            Output column ``o`` of each entry (sorted, every column present).
        q_a : ndarray of int, shape (Q,)
        """
        Ccoo = (self.C if C is None else C).tocoo()
        # join C entries (k, o, w) with derivative entries (k, a, j, mult) on k
        order = np.argsort(self.deriv_k, kind="stable")
        dk = self.deriv_k[order]
        starts = np.searchsorted(dk, Ccoo.row, side="left")
        ends = np.searchsorted(dk, Ccoo.row, side="right")
        counts = ends - starts
        rep = np.repeat(np.arange(len(Ccoo.row)), counts)
        idx = order[np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))]
        o = Ccoo.col[rep].astype(np.int64)
        a = self.deriv_a[idx]
        j = self.deriv_j[idx]
        val = Ccoo.data[rep] * self.deriv_mult[idx]
        pair = o * self.n_A + a
        upair, q = np.unique(pair, return_inverse=True)
        G = sp.csr_matrix((val, (q.reshape(-1), j)), shape=(len(upair), self.n_AA))
        G.sum_duplicates()
        return G, upair // self.n_A, upair % self.n_A
