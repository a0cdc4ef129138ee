"""Features mapped linearly, ``flat(B) @ W``, without forming the features or unused products.

``flat(B) = AA @ C`` (:mod:`.product`), so ``flat(B) @ W = AA @ CW`` with ``CW = C @ W``
(``n_AA x n_y``): prediction needs ``n_y`` numbers per centre (the irreducible parts of every
block type), not the ``n_out`` features.  The top product level holds most of ``AA``
(e.g. 11,381 of 11,856 products of the example's off-site basis); of it only the products
with a non-zero row of ``CW`` and no factor known to vanish are formed.  Factors vanish, e.g.,
for a bond particle along ``z`` (its harmonics with ``m != 0`` are zero: the bond frame of
:meth:`acehamil.models.hamiltonian.offsite.OffsiteFamily.evaluate_mapped`), which leaves
about a fifth of the off-site products.
"""

from __future__ import annotations

import numpy as np


class ProductMap:
    """``AA @ CW`` of a basis' product tables from the lower levels and the kept top products.

    A map keeps scratch buffers (and its mirrored and factorised forms) between calls: use one per
    thread (:meth:`MatrixModel.predict_data <acehamil.models.hamiltonian.matrix_model.MatrixModel.predict_data>`
    builds one per call).

    Parameters
    ----------
    tables : acehamil.basis.product.ProductTables
    CW : ndarray, shape (n_AA, n_y)
        ``C @ W``.
    vanishing : array of bool, shape (n_A,), optional
        One-particle sums ``A_a`` that are zero for every centre this map will see (their
        top-level products are skipped).

    Attributes
    ----------
    n_AA : int
        Size of the product basis it was built for (checked on use).
    n_low : int
        Products formed explicitly, column by column (levels below the top).
    n_y : int
    pre, last : ndarray of int, shape (n_top,)
        The kept top products ``AA_low[pre] * A[last]``.
    """

    def __init__(self, tables, CW: np.ndarray, vanishing=None):
        t = tables
        self._tables = t
        CW = np.asarray(CW, dtype=float)
        self.n_y = CW.shape[1]
        self.n_AA = t.n_AA
        top = t.spec.max_nu
        if top < 2:
            self.n_low = t.n_AA
            self.CW_low, self.pre, self.last, self.CW_top = CW, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, self.n_y))
            return
        o0, o1 = t.level_offsets[top], t.level_offsets[top + 1]
        self.n_low = o0
        self.CW_low = np.ascontiguousarray(CW[:o0] * _low_kept(t, top, vanishing)[:, None])
        keep = np.any(CW[o0:o1] != 0, axis=1)
        keep = _without_vanishing(t, top, keep, vanishing)
        k = np.nonzero(keep)[0]
        self.pre, self.last = t.prefix[top - 2][k], t.last[top - 2][k]
        self.CW_top = np.ascontiguousarray(CW[o0 + k])

    @classmethod
    def from_sparse(cls, tables, C, W: np.ndarray, vanishing=None, sets: int = 1) -> "ProductMap":
        """The map of ``CW = C @ W`` without forming ``CW`` densely: only its non-zero blocks, grouped by
        the pattern of non-zero columns of each row (the plan of :meth:`evaluate`), from the sparse
        ``C`` (e.g. many columns ``W``, the outputs of several coefficient sets at once, whose dense
        ``CW`` would be large and mostly zero).  Equal to ``ProductMap(tables, C @ W, vanishing)`` up to
        rounding; it may keep a product whose row of ``CW`` cancels to exactly zero (it then adds zeros).
        ``CW_low`` and ``CW_top`` are formed only when read.

        Parameters
        ----------
        tables : acehamil.basis.product.ProductTables
        C : scipy.sparse matrix, shape (n_AA, n_out)
            The coupling matrix ``tables.C``.
        W : ndarray or scipy sparse matrix, shape (n_out, n_y)
        vanishing : array of bool, shape (n_A,), optional
        sets : int
            ``W``'s columns are ``sets`` blocks of ``n_y / sets`` columns of one layout (e.g. the same
            outputs of several coefficient sets): rows are grouped by the union of the blocks'
            patterns, found on ``n_y / sets`` columns, and each group's columns are taken in every block.
        """
        from scipy import sparse

        t = tables
        top = t.spec.max_nu
        if top < 2:
            return cls(t, np.asarray((C @ W).toarray() if sparse.issparse(W) else C @ W), vanishing)
        Ws = sparse.csr_matrix(W, dtype=float)
        Ws.eliminate_zeros()
        n_out, n_y = Ws.shape
        if not (isinstance(sets, (int, np.integer)) and sets >= 1 and n_y % sets == 0):
            raise ValueError(f"sets must be a positive divisor of W's {n_y} columns, got {sets!r}")
        y = n_y // int(sets)
        Cr = C.tocsr()
        o0, o1 = t.level_offsets[top], t.level_offsets[top + 1]
        used = np.zeros((n_out, y))  # the union of the blocks' patterns
        used[np.repeat(np.arange(n_out), np.diff(Ws.indptr)), Ws.indices % y] = 1.0
        absC = abs(Cr)
        low_nz = (np.asarray(absC[:o0] @ used) > 0) & _low_kept(t, top, vanishing)[:, None]
        top_nz = np.asarray(absC[o0:o1] @ used) > 0
        keep = _without_vanishing(t, top, top_nz.any(axis=1), vanishing)
        k = np.nonzero(keep)[0]
        out = object.__new__(cls)
        out._tables = t
        out.n_y, out.n_AA, out.n_low = n_y, t.n_AA, o0
        out.pre, out.last = t.prefix[top - 2][k], t.last[top - 2][k]
        low = _set_groups(Cr[:o0], Ws, low_nz, int(sets), y)
        topg = _set_groups(Cr[o0 + k], Ws, top_nz[k], int(sets), y)
        out.__dict__["_grouped"] = (low, topg, out.pre[topg[0]], out.last[topg[0]])
        return out

    def __getattr__(self, name):
        # CW_low / CW_top of a map built in grouped form (from_sparse): formed from its plan when read
        plan = self.__dict__.get("_grouped")
        if name not in ("CW_low", "CW_top") or plan is None:
            raise AttributeError(name)
        (lrows, lgroups), (trows, tgroups), _, _ = plan
        for key, rows, groups, n in (("CW_low", lrows, lgroups, self.n_low), ("CW_top", trows, tgroups, len(self.pre))):
            dense = np.zeros((n, self.n_y))
            for g0, g1, cols, Wg in groups:
                dense[rows[g0:g1, None], cols[None, :]] = Wg
            self.__dict__[key] = dense
        return self.__dict__[name]

    @property
    def n_rows_low(self) -> int:
        """Rows of ``CW_low`` (without forming it)."""
        return self.__dict__["CW_low"].shape[0] if "CW_low" in self.__dict__ else self.n_low

    def with_mirror(self, sign) -> "ProductMap":
        """The map of the centres and of their mirror images at once: ``n_y`` doubled.

        The mirror image of a centre has one-particle sums ``s_a A_a`` (signs ``s_a = +-1``), so each
        product ``AA_k`` only changes by the product of its factors' signs: the mirrored outputs are the
        same products times sign-scaled rows of ``CW`` (exact: only signs), and every product, gather and
        matrix product is done once for both.

        Parameters
        ----------
        sign : array of float, shape (n_A,)
            ``+1`` or ``-1`` per one-particle sum.

        Returns
        -------
        ProductMap
            ``evaluate`` gives ``(nb, 2 n_y)``: the outputs, then those of the mirror images.
        """
        t = self._tables
        sign = np.asarray(sign, dtype=float).reshape(-1)
        if sign.shape != (t.n_A,) or not np.all(np.abs(sign) == 1.0):
            raise ValueError(f"mirror signs must be +-1 with shape ({t.n_A},)")
        cache = self.__dict__.setdefault("_mirrors", {})  # one per sign pattern (called per chunk)
        if sign.tobytes() not in cache:
            cache[sign.tobytes()] = self._mirrored(sign)
        return cache[sign.tobytes()]

    def _mirrored(self, sign) -> "ProductMap":
        t = self._tables
        aa = np.ones(t.n_AA)
        for nu in range(1, t.spec.max_nu + 1):
            o0, o1 = t.level_offsets[nu], t.level_offsets[nu + 1]
            aa[o0:o1] = np.prod(sign[t.level_tuples(nu)], axis=1)
        sigma = aa[self.pre] * sign[self.last]
        out = object.__new__(ProductMap)
        out.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k not in ("_mirrors", "_buffers", "_one_particle", "_grouped", "_low", "CW_low", "CW_top")})
        out.n_y = 2 * self.n_y
        if "CW_low" not in self.__dict__:  # grouped form only (from_sparse): the mirrored plan from its plan
            (lrows, lgroups), (trows, tgroups), pre, last = self._plan()

            def doubled(rows, groups, s):
                return rows, [(g0, g1, np.concatenate([cols, cols + self.n_y]), np.hstack([Wg, s[rows[g0:g1], None] * Wg]))
                              for g0, g1, cols, Wg in groups]

            out.__dict__["_grouped"] = (doubled(lrows, lgroups, aa[:self.n_low]), doubled(trows, tgroups, sigma), pre, last)
            return out
        out.CW_low = np.ascontiguousarray(np.hstack([self.CW_low, aa[:self.n_low, None] * self.CW_low]))
        out.CW_top = np.ascontiguousarray(np.hstack([self.CW_top, sigma[:, None] * self.CW_top]))
        return out

    @property
    def n_formed(self) -> int:
        """Lower products (with the constant and ``A``) formed per centre by :meth:`evaluate_atomic`."""
        return self._low_plan()[0]

    @property
    def n_top(self) -> int:
        """Top-level products formed per centre."""
        return len(self.pre)

    def _plan(self) -> tuple:
        """:func:`_column_groups` of ``CW_low`` and ``CW_top``, and the top products' factors in the
        grouped order (made on first use, kept with the map)."""
        plan = self.__dict__.get("_grouped")
        if plan is None:
            low = _column_groups(self.CW_low)
            top = _column_groups(self.CW_top)
            plan = self.__dict__["_grouped"] = (low, top, self.pre[top[0]], self.last[top[0]])
        return plan

    def _low_plan(self) -> tuple:
        """How :meth:`evaluate_atomic` forms the lower products it reads: ``(n_c, n_A, steps, low_at, pre_at)``.

        ``Z (nb, n_c)`` holds the constant, ``A`` and, level by level, only the lower products that
        :meth:`evaluate` reads (its grouped rows and the kept top products' prefixes, closed under
        the prefix), in ascending ``AA`` order; ``steps`` lists ``(s0, s1, prefix, last)`` per level
        (``Z[:, s0:s1] = Z[:, prefix] * A[:, last]``, the products of ``ProductTables``);
        ``low_at``, ``pre_at`` are the positions in ``Z`` of the grouped rows and of the top products'
        prefixes (made on first use, kept with the map)."""
        plan = self.__dict__.get("_low")
        if plan is None:
            t = self._tables
            (lrows, _), _, pre, _ = self._plan()
            need = np.zeros(self.n_low, dtype=bool)
            need[: min(self.n_low, 1 + t.n_A)] = True
            need[lrows] = True
            need[pre] = True
            levels = [lv for lv in range(2, len(t.level_offsets) - 1) if t.level_offsets[lv + 1] <= self.n_low]
            for lv in reversed(levels):  # each product's prefix (one level down) is formed before it
                o0, o1 = t.level_offsets[lv], t.level_offsets[lv + 1]
                need[t.prefix[lv - 2][np.flatnonzero(need[o0:o1])]] = True
            cols = np.flatnonzero(need)
            at = np.full(self.n_low, -1, dtype=np.int64)
            at[cols] = np.arange(len(cols))
            steps = []
            for lv in levels:
                o0, o1 = t.level_offsets[lv], t.level_offsets[lv + 1]
                k = np.flatnonzero(need[o0:o1])
                if len(k):
                    s0 = int(at[o0 + k[0]])
                    steps.append((s0, s0 + len(k), at[t.prefix[lv - 2][k]], t.last[lv - 2][k]))
            plan = self.__dict__["_low"] = (len(cols), min(self.n_low - 1, t.n_A), steps, at[lrows], at[pre])
        return plan

    def evaluate_atomic(self, A: np.ndarray) -> np.ndarray:
        """:meth:`evaluate` straight from the one-particle sums ``A (nb, n_A)``: only the lower products
        the map reads are formed (each as ``ProductTables`` forms it, so with the same values), not every
        product below the top level (e.g. 3,300 of the 26,259 of a ``nu = 3`` off-site basis in the
        bond frame, where most lower products have a vanishing factor).

        Returns
        -------
        ndarray, shape (nb, n_y), float64
        """
        n_c, n_a, steps, low_at, pre_at = self._low_plan()
        nb = len(A)
        Z = np.empty((nb, n_c))
        Z[:, 0] = 1.0
        Z[:, 1:1 + n_a] = A[:, :n_a]
        for s0, s1, prefix, last in steps:
            np.multiply(np.take(Z, prefix, axis=1, mode="clip"), np.take(A, last, axis=1, mode="clip"), out=Z[:, s0:s1])
        return self._group_products(Z, low_at, pre_at, A)

    def evaluate(self, AA_low: np.ndarray, A: np.ndarray) -> np.ndarray:
        """``AA @ CW`` of a batch from its lower products ``AA_low (nb, n_low)`` and ``A (nb, n_A)``.

        ``CW`` is sparse in a regular way (an equivariant output component ``(L, M)`` takes only the
        products of matching ``m``: ~10 % of the off-site ``CW_top`` is non-zero, in ~12 column
        patterns), so its rows are grouped by their non-zero columns (:func:`_column_groups`) and each
        group is one dense product with those columns only: the same terms in another order (equal up
        to rounding), about half the time of the dense products for the example's bases.

        Returns
        -------
        ndarray, shape (nb, n_y), float64
        """
        (lrows, _), _, pre, _ = self._plan()
        return self._group_products(AA_low, lrows, pre, A)

    def _group_products(self, Z: np.ndarray, lrows: np.ndarray, pre: np.ndarray, A: np.ndarray) -> np.ndarray:
        """The grouped products of :meth:`evaluate`, the grouped rows and top prefixes read from ``Z`` at
        ``lrows`` and ``pre``."""
        nb = len(A)
        (_, lgroups), (_, tgroups), _, last_ = self._plan()
        n_rows = len(lrows) + len(pre)
        buf = self.__dict__.get("_buffers")
        if buf is None or buf.shape[1] < nb * n_rows + nb * len(pre):  # reused across batches: no fresh pages per batch
            buf = np.empty((1, nb * n_rows + nb * len(pre)))
            self.__dict__["_buffers"] = buf
        flat = buf[0]
        low = flat[:nb * len(lrows)].reshape(nb, len(lrows))
        top = flat[nb * len(lrows):nb * n_rows].reshape(nb, len(pre))
        last = flat[nb * n_rows:nb * n_rows + nb * len(pre)].reshape(nb, len(pre))
        out = np.zeros((nb, self.n_y))
        # mode="clip" (the indices are valid): "raise" buffers the output, measured 2x slower
        np.take(Z, lrows, axis=1, out=low, mode="clip")
        for g0, g1, cols, Wg in lgroups:
            out[:, cols] += low[:, g0:g1] @ Wg
        if len(pre):
            np.take(Z, pre, axis=1, out=top, mode="clip")
            np.take(A, last_, axis=1, out=last, mode="clip")
            top *= last
            for g0, g1, cols, Wg in tgroups:
                out[:, cols] += top[:, g0:g1] @ Wg
        return out


class OneParticleMap:
    """``AA @ CW`` of centres with a single particle (of one category), factorised:
    ``y[:, j] = Y_{lm_j} (R @ M)[:, j] + c_j``.

    With one particle, ``A_a = R_{n_a} Y_{lm_a}`` and every product has one factor, and a
    rotation-equivariant map sends each output component ``(L, M)`` to harmonics of that
    ``(L, M)`` only: each column of ``CW`` uses one ``lm``.  Then the map is one small product with
    the radial values and one harmonic per output, instead of forming every ``A_a``.  Built by
    :meth:`build`, which returns None when ``CW`` does not have that form (then the products are
    formed as usual).

    Attributes
    ----------
    M : ndarray, shape (n_max, n_y)
    lm : ndarray of int, shape (n_y,)
        Flat harmonic index of each output column.
    const : ndarray, shape (n_y,)
    parity : ndarray, shape (n_y,)
        ``(-1)^l`` of each column: the map of the reversed particle ``-x``.
    """

    def __init__(self, M, lm, const):
        self.M, self.lm, self.const = M, lm, const
        self.parity = (-1.0) ** np.floor(np.sqrt(lm))
        self.n_y = M.shape[1]

    @classmethod
    def build(cls, pm: ProductMap, category) -> "OneParticleMap | None":
        t = pm._tables
        if pm.n_top or pm.n_low != t.n_AA:
            return None
        CW = pm.CW_low
        mine = np.nonzero(t.a_cat == category)[0]
        sub = CW[1 + mine]  # rows of this category's one-particle sums (the others are zero for its particles)
        lm = np.zeros(pm.n_y, dtype=np.int64)
        for j in range(pm.n_y):
            used = np.unique(t.a_lm[mine[sub[:, j] != 0]])
            if len(used) > 1:
                return None
            lm[j] = used[0] if len(used) else 0
        if len(np.unique(t.a_n[mine] * (t.a_lm.max() + 1) + t.a_lm[mine])) != len(mine):
            return None  # one sum per (n, lm) of the category, as the factorisation assumes
        M = np.zeros((t.spec.radial.n_max, pm.n_y))
        for j in range(pm.n_y):
            rows = np.nonzero((sub[:, j] != 0) & (t.a_lm[mine] == lm[j]))[0]
            M[t.a_n[mine[rows]], j] = sub[rows, j]
        return cls(M, lm, CW[0].copy())

    def evaluate(self, R: np.ndarray, Y: np.ndarray, mirror: bool = False) -> np.ndarray:
        """Outputs ``(n, n_y)`` from radial values ``R (n, n_max)`` and harmonics ``Y (n, n_lm)``; with
        ``mirror`` also those of the reversed particles: ``(n, 2 n_y)``."""
        core = R @ self.M
        core *= np.take(Y, self.lm, axis=1, mode="clip")
        if not mirror:
            core += self.const
            return core
        out = np.empty((len(R), 2 * self.n_y))
        np.add(core, self.const, out=out[:, :self.n_y])
        np.multiply(core, self.parity, out=out[:, self.n_y:])
        out[:, self.n_y:] += self.const
        return out


def _column_groups(CW: np.ndarray) -> tuple:
    """The non-zero rows of ``CW`` grouped by their pattern of non-zero columns.

    Parameters
    ----------
    CW : ndarray, shape (n, n_y), float64

    Returns
    -------
    rows : ndarray of int, shape (m,)
        The rows with a non-zero entry, group after group (each group in row order).
    groups : list of (g0, g1, cols, W)
        ``rows[g0:g1]`` share the non-zero columns ``cols`` (int array); ``W = CW[rows[g0:g1]][:, cols]``
        (C-contiguous).  ``x @ CW == sum_g scatter(cols, x[:, rows[g0:g1]] @ W)`` up to rounding.

    Examples
    --------
    >>> rows, groups = _column_groups(np.array([[0.0, 2.0], [0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]))
    >>> rows.tolist(), [(g0, g1, c.tolist(), W.ravel().tolist()) for g0, g1, c, W in groups]
    ([2, 0, 3], [(0, 1, [0], [1.0]), (1, 3, [1], [2.0, 3.0])])
    """
    CW = np.asarray(CW, dtype=float)
    rows, groups = _pattern_groups(CW != 0)
    return rows, [(g0, g1, cols, np.ascontiguousarray(CW[rows[g0:g1]][:, cols])) for g0, g1, cols in groups]


def _pattern_groups(nz: np.ndarray) -> tuple:
    """The rows of a boolean ``nz (n, n_y)`` with a True, grouped by their pattern: ``(rows (m,), [(g0, g1, cols)])``
    as :func:`_column_groups` (without the values)."""
    rows = np.flatnonzero(nz.any(axis=1))
    if len(rows) == 0:
        return rows, []
    # one integer key per row pattern (bits of the columns; packed bytes beyond 62 columns): a 1-D unique
    packed = np.packbits(nz[rows], axis=1, bitorder="little")
    if packed.shape[1] <= 7:
        key = np.zeros(len(rows), dtype=np.int64)
        for b in range(packed.shape[1]):
            key |= packed[:, b].astype(np.int64) << (8 * b)
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    else:  # one fixed-size byte string per row: a 1-D unique (np.unique(axis=0) took ~20 ms on a map of 624 columns)
        packed = np.ascontiguousarray(packed)
        _, first, inv = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1), return_index=True,
                                  return_inverse=True)
    inv = np.asarray(inv).reshape(-1)
    pats = nz[rows[first]]
    rows = rows[np.argsort(inv, kind="stable")]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=len(pats)))])
    return rows, [(int(bounds[g]), int(bounds[g + 1]), np.flatnonzero(pat)) for g, pat in enumerate(pats)]


def _set_groups(C, W, nz: np.ndarray, sets: int, y: int) -> tuple:
    """:func:`_column_groups` of ``C @ W`` from the sparse rows ``C (n, n_out)`` and sparse ``W (n_out, sets y)``
    (CSR): rows grouped by ``nz (n, y)`` (the union of the ``sets`` column blocks' patterns), each group's
    columns taken in every block (ascending), its values read from the sparse product."""
    rows, groups = _pattern_groups(nz)
    CW = (C[rows] @ W).tocsr()  # the rows in group order
    CW.sort_indices()
    count = np.diff(CW.indptr)
    out = []
    for g0, g1, cols in groups:
        multi = (np.arange(sets)[:, None] * y + cols[None, :]).reshape(-1)  # ascending: cols < y
        if np.all(count[g0:g1] == len(multi)):  # every entry non-zero (the usual case): the rows' data as they are
            Wg = CW.data[CW.indptr[g0:g1, None] + np.arange(len(multi))]
        else:  # some products cancelled to zero (or a block is zero): dense rows, then the group's columns
            Wg = CW[g0:g1].toarray()[:, multi]
        out.append((g0, g1, multi, np.ascontiguousarray(Wg)))
    return rows, out


def _without_vanishing(t, top: int, keep: np.ndarray, vanishing) -> np.ndarray:
    """``keep`` less the top-level products of ``t`` that have a factor marked in ``vanishing``.

    Parameters
    ----------
    t : acehamil.basis.product.ProductTables
    top : int
        The top correlation order (``t.spec.max_nu``, >= 2).
    keep : ndarray of bool, shape (n_top,)
    vanishing : array of bool, shape (t.n_A,), or None
        None: ``keep`` is returned as it is.

    Returns
    -------
    ndarray of bool, shape (n_top,)
    """
    if vanishing is None:
        return keep
    vanishing = np.asarray(vanishing, dtype=bool)
    if vanishing.shape != (t.n_A,):
        raise ValueError(f"vanishing must have shape ({t.n_A},), got {vanishing.shape}")
    return keep & ~np.any(vanishing[t.level_tuples(top)], axis=1)


def _low_kept(t, top: int, vanishing) -> np.ndarray:
    """Rows of the lower products ``AA[:level_offsets[top]]`` without a factor marked in ``vanishing``
    (those products are zero for every centre of the map), bool shape (level_offsets[top],); all True
    without ``vanishing``."""
    n_low = t.level_offsets[top]
    if vanishing is None:
        return np.ones(n_low, dtype=bool)
    vanishing = np.asarray(vanishing, dtype=bool)
    if vanishing.shape != (t.n_A,):
        raise ValueError(f"vanishing must have shape ({t.n_A},), got {vanishing.shape}")
    keep = np.ones(n_low, dtype=bool)
    for nu in range(1, top):
        o0, o1 = t.level_offsets[nu], t.level_offsets[nu + 1]
        keep[o0:o1] = ~np.any(vanishing[t.level_tuples(nu)], axis=1)
    return keep
