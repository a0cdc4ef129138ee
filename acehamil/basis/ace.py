"""The ACE basis: centres of particles -> O(3)-equivariant features ``B_{L, parity}``.

Pipeline per batch of centres: radial ``R_n`` and harmonics ``Y_lm`` per particle
-> atomic base ``A (n_centres, n_A)`` -> products ``AA`` (each distinct sorted
tuple of A's once, built level by level ``AA_k = AA_prefix * A_last``) -> features
``B = AA @ C`` with the sparse coupling matrix ``C`` (see :mod:`.product`).

Parity convention: ``B_L(Q env) = parity^[det Q < 0] D^L(det(Q) Q) B_L(env)``
with ``parity = (-1)^(l_1 + ... + l_nu)`` (docs/design.md).

Examples
--------
>>> import numpy as np
>>> spec = BasisSpec(categories=(14,), radial=RadialSpec(n_max=3, r_cut=4.0), max_nu=2, max_degree=4, L_max=2)
>>> basis = ACEBasis(spec)
>>> env = Centres([14], [0, 0, 0], [[1.0, 0.2, 0.0], [0.0, 2.0, 0.3], [-1.0, -1.0, 1.5]], [14, 14, 14])
>>> vals = basis.evaluate(env)
>>> vals[(0, 1)].shape[0], vals[(1, -1)].shape[2]
(1, 3)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse._sparsetools import csr_matvec as _csr_matvec

from .angular import AngularBasis
from .atomic import atomic_base, atomic_base_by_category, fold_categories, pad, padding
from .centres import MIN_LENGTH, Centres
from .linear import LinearContraction
from .linear import evaluate_composed as _evaluate_composed
from .linear import evaluate_linear as _evaluate_linear
from .mapped import ProductMap
from .mapped_evaluate import evaluate_mapped as _evaluate_mapped
from .mapped_evaluate import evaluate_mapped_one_particle as _evaluate_mapped_one_particle
from .product import ProductTables
from .radial import RadialBasis
from .spec import BasisSpec, RadialSpec, origin_factor  # noqa: F401  (RadialSpec for the doctest namespace)

__all__ = ["ACEBasis", "Centres", "MIN_LENGTH"]  # Centres, MIN_LENGTH: re-exported from .centres

#: Soft memory budgets (float64 entries) for the per-batch work arrays: products AA
#: and the full Jacobian of one batch (both small enough to stay in cache: measured faster).
_BUDGET = 300_000
_GRAD_BUDGET = 1_500_000
#: Particle functions (harmonics and derivatives) computed per chunk (float64 entries): 20 MB, under
#: glibc's 32 MB ceiling for memory-mapped allocations, so the chunk arrays are recycled instead of
#: mapped and faulted in afresh each time (measured: half the page faults, ~4 % less CPU at 1728 atoms).
_CHUNK = 2_500_000


def _rows_times(AA: np.ndarray, CT) -> np.ndarray:
    """``AA @ C`` (n, n_out) from ``CT = C^T`` (CSR, sorted indices), one sparse product per row of the
    C-ordered ``AA``: scipy's dense-times-sparse would first copy ``AA`` into transposed order (a
    strided copy of the whole batch, about a third of the product's cost); the sums run over the
    same nonzeros in the same order, so the values are the same."""
    n_out, n_AA = CT.shape
    if AA.ndim != 2 or AA.shape[1] != n_AA:
        raise ValueError(f"AA must have shape (n, {n_AA}), got {AA.shape}")
    AA = np.ascontiguousarray(AA, dtype=np.float64)
    out = np.zeros((len(AA), n_out))
    indptr, indices, data = CT.indptr, CT.indices, CT.data
    for row, res in zip(AA, out):
        _csr_matvec(n_out, n_AA, indptr, indices, data, row, res)
    return out


class ACEBasis:
    """O(3)-equivariant ACE basis, fully determined by its :class:`BasisSpec`.

    Parameters
    ----------
    spec : BasisSpec
    """

    def __init__(self, spec: BasisSpec):
        if not isinstance(spec, BasisSpec):
            raise TypeError(f"spec must be a BasisSpec, got {type(spec).__name__}")
        self.spec = spec
        self.tables = ProductTables(spec)
        self.radial = RadialBasis(spec.radial)
        self.angular = AngularBasis(self.tables.l_max)
        self._selections = {}
        t = self.tables
        a_ci = np.searchsorted(np.array(spec.categories), t.a_cat)
        self._a_k = a_ci * spec.radial.n_max + t.a_n
        self._a_groups = tuple((ci, c, t.a_n[c], t.a_lm[c]) for ci in np.unique(a_ci) for c in [np.nonzero(a_ci == ci)[0]])
        # BasisSpec.origin_smoothing: which category indices are smoothed, and the l of each harmonic column
        self._smoothed = np.array([c not in spec.singleton_categories for c in spec.categories]) if spec.origin_smoothing > 0 else None
        self._l_of = np.floor(np.sqrt(np.arange((t.l_max + 1) ** 2))).astype(np.int64)

    def __reduce__(self):
        # rebuilt from the spec (the sphericart calculator holds C pointers)
        return (ACEBasis, (self.spec,))

    # -- description -------------------------------------------------------------------
    @property
    def feature_keys(self) -> list:
        """Sorted list of ``(L, parity)`` with at least one feature."""
        return sorted(self.tables.keys)

    @property
    def feature_info(self) -> dict:
        """``{(L, parity): tuple of FeatureInfo}`` (nu, degree, factors, index) per feature."""
        return self.tables.feature_info

    @property
    def n_features(self) -> dict:
        """``{(L, parity): n_B}``."""
        return {k: len(v) for k, v in self.tables.feature_info.items()}

    def feature_degrees(self, key) -> np.ndarray:
        """Total degree of each feature of ``key`` (for smoothness priors), shape (n_B,), float."""
        return np.array([f.degree for f in self._info(key)], dtype=float)

    def feature_orders(self, key) -> np.ndarray:
        """Correlation order ``nu`` of each feature of ``key``, shape (n_B,), int."""
        return np.array([f.nu for f in self._info(key)], dtype=np.int64)

    def _info(self, key) -> tuple:
        if key not in self.tables.feature_info:
            raise ValueError(f"no features with key {key}; available {self.feature_keys}")
        return self.tables.feature_info[key]

    def __repr__(self) -> str:
        nf = sum(self.n_features.values())
        return f"ACEBasis({nf} features over {len(self.feature_keys)} (L, parity) keys, n_A={self.tables.n_A}, n_AA={self.tables.n_AA})"

    # -- preparation -------------------------------------------------------------------
    def _prepare(self, centres: Centres):
        if not isinstance(centres, Centres):
            raise TypeError(f"centres must be a Centres, got {type(centres).__name__}")
        spec = self.spec
        cats = np.array(spec.categories)
        cat_index = np.searchsorted(cats, centres.particle_category)
        bad = cats[np.minimum(cat_index, len(cats) - 1)] != centres.particle_category
        if bad.any():
            raise ValueError(
                f"unknown particle categories {sorted(set(centres.particle_category[bad].tolist()))}; the basis has {list(spec.categories)}"
            )
        # by centre, then category: each category's particles of a centre are contiguous (atomic_base_by_category)
        keys = centres.particle_centre * len(cats) + cat_index
        if np.all(keys[1:] >= keys[:-1]):  # already in that order (e.g. bond environments): no copies
            order = np.arange(len(keys))
            pc, vec, cat = centres.particle_centre, centres.particle_vec, centres.particle_category
            w = np.ones(len(order)) if centres.particle_weight is None else centres.particle_weight
            r = centres._length
        else:
            order = np.argsort(keys, kind="stable")
            pc = centres.particle_centre[order]
            vec = centres.particle_vec[order]
            cat = centres.particle_category[order]
            cat_index = cat_index[order]
            w = np.ones(len(order)) if centres.particle_weight is None else centres.particle_weight[order]
            r = centres._length[order]
        species = centres.centre_species[pc]
        rc = np.full(len(order), spec.radial.r_cut)
        for s, c, cut in spec.radial.cutoffs:
            rc[(species == s) & (cat == c)] = cut
        decay = spec.radial.decay_lengths(species, cat)
        return order, pc, vec, cat_index, w, rc, r, centres.n_centres, decay

    def _batches(self, prep, per_centre, gradients, max_centres=None, xyz_first=False):
        """Small centre batches (products stay in cache) inside large particle chunks
        (one harmonics call per chunk: sphericart's threads start once, not per batch).

        Yields ``(c0, c1, p0, p1, A, Rc, Y, d, local, slot, p_max)`` with particle
        rows ``p0:p1`` of the sorted order.
        """
        order, pc, vec, cat_index, w, rc, r, n_centres, decay = prep
        P = len(order)
        nb = max(1, int(_BUDGET // max(per_centre, 1)))
        if max_centres is not None:
            nb = min(nb, int(max_centres))
        per_particle = (self.tables.l_max + 1) ** 2 * (4 if gradients else 1)
        mean = max(1.0, P / max(n_centres, 1))
        outer = nb * max(1, int(_CHUNK // (per_particle * mean * nb)))
        for C0 in range(0, n_centres, outer):
            C1 = min(n_centres, C0 + outer)
            P0, P1 = np.searchsorted(pc, [C0, C1])
            Rc_all, Y_all, d_all = self._particles(vec[P0:P1], cat_index[P0:P1], w[P0:P1], rc[P0:P1], r[P0:P1], gradients, xyz_first,
                                                   None if decay is None else decay[P0:P1])
            for c0 in range(C0, C1, nb):
                c1 = min(C1, c0 + nb)
                p0, p1 = np.searchsorted(pc, [c0, c1])
                q0, q1 = p0 - P0, p1 - P0
                Rc, Y = Rc_all[q0:q1], Y_all[q0:q1]
                d = tuple(x[q0:q1] for x in d_all) if gradients else None
                local = pc[p0:p1] - c0
                if not gradients:  # Rc: weighted, not folded (the gradients' tables need the folded ones)
                    A = atomic_base_by_category(Rc, Y, cat_index[p0:p1], local, c1 - c0, self._a_groups, self.tables.n_A)
                    yield c0, c1, p0, p1, A, None, Y, None, local, None, None
                    continue
                slot, p_max = padding(local, c1 - c0)
                A = atomic_base(Rc, Y, local, slot, c1 - c0, p_max, self._a_k, self.tables.a_lm)
                yield c0, c1, p0, p1, A, Rc, Y, d, local, slot, p_max

    def _products(self, A: np.ndarray, upto: int | None = None) -> np.ndarray:
        """AA (nb, n_AA) from A (nb, n_A); column 0 is the constant 1.  With ``upto`` (a level
        boundary), only the columns ``:upto`` (the levels below it).

        One centre at a time: its AA row (n_AA,) stays in cache while each level
        gathers prefix and last factor (faster than batched gathers).
        """
        t = self.tables
        nb = len(A)
        upto = t.n_AA if upto is None else int(upto)
        AA = np.empty((nb, upto))
        AA[:, 0] = 1.0
        AA[:, 1 : 1 + t.n_A] = A
        levels = [(t.level_offsets[i + 2], t.level_offsets[i + 3], pre, 1 + last) for i, (pre, last) in enumerate(zip(t.prefix, t.last))
                  if t.level_offsets[i + 3] <= upto]
        if not levels:
            return AA
        for row in AA:
            for o0, o1, pre, last in levels:
                np.multiply(row[pre], row[last], out=row[o0:o1])
        return AA

    def _near_origin(self, r, cat_index) -> np.ndarray:
        """Rows whose harmonics :attr:`BasisSpec.origin_smoothing` changes (smoothed category, ``r < r0``)."""
        if self._smoothed is None:
            return np.zeros(0, np.int64)
        rows = np.flatnonzero(r < self.spec.origin_smoothing)  # few: the category test on those only
        return rows[self._smoothed[cat_index[rows]]]

    def _smooth_harmonics(self, vec, r, cat_index, Y, dY=None, xyz_first=False):
        """Harmonics (and gradients) times :func:`origin_factor` on the rows near the centre; the
        others (every row when ``origin_smoothing`` is 0) are returned as they are."""
        rows = self._near_origin(r, cat_index)
        if not len(rows):
            return Y, dY
        r0 = self.spec.origin_smoothing
        # Y and dY are this call's own arrays (fresh from the harmonics): changed in place
        if dY is None:
            Y[rows] *= origin_factor(r[rows], r0, self._l_of)
            return Y, None
        g, dg = origin_factor(r[rows], r0, self._l_of, gradients=True)
        rhat = vec[rows] / r[rows, None]
        extra = (Y[rows] * dg)[:, :, None] * rhat[:, None, :]  # d(g Y)/dx = g dY/dx + Y dg/dr x/r
        if xyz_first:  # (P, 3, n_lm)
            dY[rows] = dY[rows] * g[:, None, :] + extra.transpose(0, 2, 1)
        else:  # (P, n_lm, 3)
            dY[rows] = dY[rows] * g[:, :, None] + extra
        Y[rows] *= g
        return Y, dY

    def _particles(self, vec, cat_index, w, rc, r, gradients, xyz_first=False, decay=None):
        """Category-folded radial values and harmonics (and derivatives) of a batch."""
        ncat = len(self.spec.categories)
        if not gradients:  # weighted radial values, categories kept apart (atomic_base_by_category)
            R = self.radial.evaluate(r, rc, decay=decay)
            R *= w[:, None]
            return R, self._smooth_harmonics(vec, r, cat_index, self.angular.evaluate(vec))[0], None
        R, dR = self.radial.evaluate(r, rc, gradients=True, decay=decay)
        Y, dY = self.angular.evaluate(vec, gradients=True, xyz_first=xyz_first)
        Y, dY = self._smooth_harmonics(vec, r, cat_index, Y, dY, xyz_first)
        d = (fold_categories(dR, cat_index, ncat, w), dY, vec / r[:, None])
        return fold_categories(R, cat_index, ncat, w), Y, d

    def atomic(self, centres: Centres) -> np.ndarray:
        """Atomic base ``A``.

        Returns
        -------
        ndarray, shape (n_centres, n_A)
            Columns described by ``tables.a_cat``, ``a_n``, ``a_lm``.
        """
        prep = self._prepare(centres)
        A = np.zeros((centres.n_centres, self.tables.n_A))
        for c0, c1, p0, p1, A_batch, *_ in self._batches(prep, 1, False):
            A[c0:c1] = A_batch
        return A

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self, centres: Centres, gradients: bool = False, keys=None):
        """Features of every centre (and their gradients).

        Parameters
        ----------
        centres : Centres
        gradients : bool
            The full Jacobian has ``P * n_out * 3`` entries; for many centres use
            :meth:`iter_evaluate` (bounded memory) or :meth:`evaluate_linear`.
        keys : iterable of (L, parity), optional
            Only these keys (default all of :attr:`feature_keys`); e.g. ``[(0, 1)]``
            for invariants, far cheaper with gradients.

        Returns
        -------
        vals : dict (L, parity) -> ndarray, shape (n_centres, n_B, 2L+1)
        grads : dict (L, parity) -> ndarray, shape (P, n_B, 2L+1, 3), 1/Å units of B
            ``d vals[key][particle_centre[p]] / d particle_vec[p]``, particles in
            input order; only when ``gradients``.
        """
        if not isinstance(centres, Centres):
            raise TypeError(f"centres must be a Centres, got {type(centres).__name__}")
        sel = self._selection(keys)
        nc, P = centres.n_centres, centres.n_particles
        flat = np.empty((nc, sel["n_out"]))
        gflat = np.empty((P, sel["n_out"], 3)) if gradients else None
        for sl, idx, f, g in self._iter_flat(centres, gradients, None, sel):
            flat[sl] = f
            if gradients:
                gflat[idx] = g
        vals = self._split(flat, sel)
        return (vals, self._split(gflat, sel)) if gradients else vals

    def mapping(self, W: np.ndarray, vanishing=None, sparse: bool = False, sets: int = 1) -> ProductMap:
        """A linear map ``W (n_out, n_y)`` (ndarray, or scipy sparse) on the flat features pushed through the coupling matrix, for
        repeated :meth:`evaluate_mapped` calls (:class:`~acehamil.basis.mapped.ProductMap`).

        ``vanishing`` (bool, shape (n_A,)) marks one-particle sums known to be zero for every centre
        (e.g. the ``m != 0`` harmonics of a bond along ``z``; see :meth:`vanishing_on_z`).  ``sparse``:
        only the rows of ``C @ W`` the map uses are formed (:meth:`ProductMap.from_sparse`; many columns), ``sets``
        column blocks of one layout (several coefficient sets side by side) grouped together."""
        t = self.tables
        if sp.issparse(W):  # a scipy sparse W (e.g. many coefficient sets): kept sparse for from_sparse
            W = W.tocsr().astype(float) if sparse else W.toarray().astype(float)
        else:
            W = np.asarray(W, dtype=float)
        if W.ndim != 2 or W.shape[0] != t.n_out:
            raise ValueError(f"W must have shape ({t.n_out}, n_y), got {W.shape}")
        if sparse:
            return ProductMap.from_sparse(t, t.C, W, vanishing, sets=sets)
        return ProductMap(t, np.asarray(t.C @ W), vanishing)

    def vanishing_on_z(self, category) -> np.ndarray:
        """One-particle sums ``A_a`` of ``category`` with ``m != 0``, bool shape (n_A,): zero when the only
        particle of that category lies on the z axis (a singleton category, e.g. the bond, in the bond frame)."""
        t = self.tables
        l = np.floor(np.sqrt(t.a_lm)).astype(np.int64)
        return (t.a_cat == category) & (t.a_lm != l * l + l)

    def evaluate_mapped(self, centres: Centres, W, mirror=None):
        """Features mapped linearly, ``flat(B) @ W``, without forming the features.

        ``flat(B)`` is the ``(n_centres, n_out)`` row of every feature in the flat order of the
        tables (key by key as in :attr:`feature_keys`, then feature, then ``M``; see
        :attr:`ProductTables.out_slices`).  Since ``flat(B) = AA @ C``, the map is pushed through
        the coupling matrix once, ``AA @ (C @ W)``, and only the top-level products it uses are formed
        (:mod:`.mapped`): the cost per centre is that of ``n_y`` outputs, not of the ``n_out``
        features (prediction: ``W`` holds the fitted coefficients of every block type and ``L``).

        Parameters
        ----------
        centres : Centres
        W : array_like, shape (n_out, n_y), or ProductMap
            float64; or its :meth:`mapping` (reused across calls).
        mirror : array of float, shape (n_A,), optional
            Signs ``s_a``: also return the map of the centres with ``A_a -> s_a A_a`` (e.g. a bond
            environment seen from the other end, whose harmonics only change sign; see
            :meth:`acehamil.models.hamiltonian.offsite.OffsiteFamily.mapped_chunks`).

        Returns
        -------
        ndarray, shape (n_centres, n_y), float64
            With ``mirror``: a pair of them (the centres, their mirror images).
        """
        return _evaluate_mapped(self, centres, W, mirror)

    def evaluate_mapped_one_particle(self, vec, centre_species, category, W, mirror: bool = False):
        """:meth:`evaluate_mapped` of centres with exactly one particle each (weight 1), straight from
        the particle vectors: two-centre bonds (the bond particle only), without building
        :class:`Centres` or sorting particles.  The values are those of :meth:`evaluate_mapped` on
        the equivalent centres.

        Parameters
        ----------
        vec : ndarray, shape (n, 3), Å
            The particle of each centre (non-zero).
        centre_species : ndarray of int, shape (n,)
            Selects the per-(centre species, category) cutoff.
        category : int
            The particles' category (one of ``spec.categories``).
        W : array_like, shape (n_out, n_y), or ProductMap
        mirror : bool
            Also return the map of the reversed particles ``-vec`` (``Y_lm(-x) = (-1)^l Y_lm(x)``;
            formed with the same products, :meth:`ProductMap.with_mirror`).

        Returns
        -------
        ndarray, shape (n, n_y), float64
            With ``mirror``: a pair (the centres, the reversed ones).
        """
        return _evaluate_mapped_one_particle(self, vec, centre_species, category, W, mirror, budget=_BUDGET)

    def iter_evaluate(self, centres: Centres, gradients: bool = False, max_centres: int | None = None, keys=None):
        """Evaluate batch by batch (bounded memory).

        Parameters
        ----------
        centres : Centres
        gradients : bool
        max_centres : int, optional
            Largest batch (default: chosen from a memory budget).
        keys : iterable of (L, parity), optional
            Only these keys (default all).

        Yields
        ------
        centre_slice : slice
            The centres of this batch.
        particle_index : ndarray of int, shape (P_b,)
            Input indices of their particles (the rows of ``grads``).
        vals : dict (L, parity) -> ndarray, shape (n_b, n_B, 2L+1)
        grads : dict (L, parity) -> ndarray, shape (P_b, n_B, 2L+1, 3), or None
        """
        if not isinstance(centres, Centres):
            raise TypeError(f"centres must be a Centres, got {type(centres).__name__}")
        sel = self._selection(keys)
        for sl, idx, f, g in self._iter_flat(centres, gradients, max_centres, sel):
            yield sl, idx, self._split(f, sel), (self._split(g, sel) if gradients else None)

    def _selection(self, keys):
        """Coupling columns (and, lazily, gradient pattern) of a subset of keys."""
        t = self.tables
        if keys is None:
            keys = tuple(self.feature_keys)
        else:
            keys = tuple(sorted({(int(L), int(p)) for L, p in keys}))
            missing = [k for k in keys if k not in t.out_slices]
            if missing:
                raise ValueError(f"no features with keys {missing}; available {self.feature_keys}")
        if keys not in self._selections:
            cols, slices, start = [], {}, 0
            for k in keys:
                s = t.out_slices[k]
                cols.append(np.arange(s.start, s.stop))
                slices[k] = slice(start, start + s.stop - s.start)
                start += s.stop - s.start
            cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
            C = t.C if np.array_equal(cols, np.arange(t.n_out)) else t.C[:, cols].tocsr()
            # C^T by rows (sorted columns): each centre's features are one sparse product of its AA row
            CT = sp.csr_matrix(C.T)
            CT.sort_indices()
            self._selections[keys] = {"keys": keys, "C": C, "CT": CT, "slices": slices, "n_out": len(cols), "grad": None}
        return self._selections[keys]

    def _split(self, flat, sel):
        t = self.tables
        out = {}
        for key in sel["keys"]:
            L = key[0]
            x = flat[:, sel["slices"][key]]
            out[key] = x.reshape((len(x), len(t.feature_info[key]), 2 * L + 1) + x.shape[2:])
        return out

    def _iter_flat(self, centres, gradients, max_centres, sel):
        t = self.tables
        prep = self._prepare(centres)
        order, pc = prep[0], prep[1]
        nc = centres.n_centres
        counts = np.bincount(pc, minlength=nc) if nc else np.zeros(0, int)
        if gradients and sel["grad"] is None:
            G, q_out, q_a = t.gradient_tables(sel["C"])
            indptr = np.concatenate([[0], np.cumsum(np.bincount(q_out, minlength=sel["n_out"]))])
            sel["grad"] = (G.T.tocsr(), indptr, q_a)
        per_centre = t.n_AA
        if gradients:  # the batch's Jacobian (nb, n_out, p_max, 3) within _GRAD_BUDGET
            jac = 3 * sel["n_out"] * max(1, int(counts.max(initial=1)))
            per_centre = max(per_centre, jac * _BUDGET / _GRAD_BUDGET)
        for c0, c1, p0, p1, A, Rc, Y, d, local, slot, p_max in self._batches(prep, per_centre, gradients, max_centres):
            AA = self._products(A)
            f = _rows_times(AA, sel["CT"])
            g = self._gradients(AA, Rc, Y, d, local, slot, p_max, sel) if gradients else None
            yield slice(c0, c1), order[p0:p1], f, g

    def _gradients(self, AA, Rc, Y, d, local, slot, p_max, sel):
        """Full Jacobian of one batch: (P_b, n_out, 3)."""
        t = self.tables
        GT, indptr0, q_a = sel["grad"]
        n_out = sel["n_out"]
        nb = len(AA)
        Q = len(q_a)
        V = AA @ GT  # (nb, Q): dB_o/dA_a of every centre on the fixed pattern
        dRc, dY, rhat = d
        # dphi[p, a, x] = dR rhat_x Y + R dY_x
        dphi = (dRc[:, self._a_k] * Y[:, t.a_lm])[:, :, None] * rhat[:, None, :]
        dphi += Rc[:, self._a_k][:, :, None] * dY[:, t.a_lm, :]
        dpad = pad(dphi, local, slot, nb, p_max)  # (nb, p_max, n_A, 3)
        rhs = dpad.transpose(0, 2, 1, 3).reshape(nb * t.n_A, p_max * 3)
        # block-diagonal sparse (nb*n_out, nb*n_A) with the same pattern in every block
        indptr = np.concatenate([(indptr0[:-1][None, :] + Q * np.arange(nb)[:, None]).ravel(), [nb * Q]])
        indices = (q_a[None, :] + t.n_A * np.arange(nb)[:, None]).ravel()
        M = sp.csr_matrix((V.ravel(), indices, indptr), shape=(nb * n_out, nb * t.n_A))
        out = np.ascontiguousarray(M @ rhs).reshape(nb, n_out, p_max, 3)
        # gather (centre, slot) -> particle rows; viewing each xyz triple as one 24-byte
        # item makes numpy copy whole triples (~2x faster than a 3-element inner loop)
        triples = out.view(np.dtype((np.void, 24))).reshape(nb, n_out, p_max)
        return triples[local, :, slot].view(np.float64).reshape(len(local), n_out, 3)

    def contraction(self, coeffs: dict, key=(0, 1)) -> LinearContraction:
        """Coefficients pushed through this basis's tables, for repeated :meth:`evaluate_linear` calls.

        Parameters
        ----------
        coeffs : dict int -> ndarray, shape (n_B,)
            Coefficients per centre species; a species absent from the dict gives 0.
        key : (L, parity)

        Returns
        -------
        LinearContraction
        """
        return LinearContraction(self.tables, coeffs, key)

    def evaluate_linear(self, centres: Centres, coeffs, key=None):
        """Contracted features ``E_c = sum_B coeffs[species_c][B] B_key(c)`` and their gradients.

        Reverse mode: the coefficients pushed through ``C`` become a quadratic form in
        ``[1, A, pair products]`` (:mod:`.linear`), giving ``dE/dA`` and then the particle
        gradients from ``dA/dx``; far cheaper than the full Jacobian of :meth:`evaluate`.

        Parameters
        ----------
        centres : Centres
        coeffs : dict int -> ndarray (n_B,), or LinearContraction
            Coefficients per centre species (a species absent gives 0), or their
            prebuilt :meth:`contraction` (then ``key`` must match or be omitted).
        key : (L, parity), optional
            Which features to contract (default the invariants ``(0, 1)``, or the
            contraction's own key).

        Returns
        -------
        values : ndarray, shape (n_centres,) or (n_centres, 2L+1)
        grads : ndarray, shape (P, 3) or (P, 2L+1, 3)
            ``d values[particle_centre[p]] / d particle_vec[p]``, input particle order.
        """
        return _evaluate_linear(self, centres, coeffs, key)

    def evaluate_composed(self, centres: Centres, contractions, outer):
        """Site values ``eps_c = outer(rho_c)`` of several contracted invariants, and their gradients.

        ``rho_c[k] = sum_B coeffs_k[species_c][B] B(c)`` for each contraction ``k``
        (invariant key ``(0, 1)``); ``outer`` maps them to one value per centre and
        its partial derivatives, so ``d eps_c / dA = sum_k outer'_k d rho_k / dA``
        is pulled back to the particles once (one reverse pass for all contractions).

        Parameters
        ----------
        centres : Centres
        contractions : sequence of LinearContraction
            Built by :meth:`contraction` for this basis, key ``(0, 1)``.
        outer : callable
            ``outer(rho, species) -> (eps, deps)`` with ``rho`` of shape (nb, n_k), the
            centre species (nb,), ``eps`` (nb,) and ``deps = d eps / d rho`` (nb, n_k).

        Returns
        -------
        values : ndarray, shape (n_centres,)
        grads : ndarray, shape (P, 3)
            ``d values[particle_centre[p]] / d particle_vec[p]``, input particle order.
        rho : ndarray, shape (n_centres, n_k)
            The contracted invariants.
        """
        return _evaluate_composed(self, centres, contractions, outer)
