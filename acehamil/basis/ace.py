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

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .angular import AngularBasis
from .atomic import atomic_base, one_particle
from .product import ProductTables
from .radial import RadialBasis
from .spec import BasisSpec, RadialSpec  # noqa: F401  (RadialSpec for the doctest namespace)

#: Particles closer to their centre than this (Å) are rejected.
MIN_LENGTH = 1e-8
#: Soft memory budget (float64 entries) for the per-batch work arrays.
_BUDGET = 4_000_000


@dataclass(frozen=True, eq=False)
class Centres:
    """Centres (sites or bonds) and the particles around them.

    Parameters
    ----------
    centre_species : array of int, shape (n_centres,)
        Selects the per-(centre species, category) cutoff.
    particle_centre : array of int, shape (P,)
        Index of the centre each particle belongs to.
    particle_vec : array of float, shape (P, 3), Å
        Particle position relative to its centre (non-zero).
    particle_category : array of int, shape (P,)
        Category (atomic number, or BOND = -1) of each particle.
    particle_weight : array of float, shape (P,), optional
        Multiplies the particle's radial basis (no gradient through it).
    """

    centre_species: np.ndarray
    particle_centre: np.ndarray
    particle_vec: np.ndarray
    particle_category: np.ndarray
    particle_weight: np.ndarray | None = None

    def __post_init__(self):
        cs = _int_array(self.centre_species, "centre_species", 1)
        pc = _int_array(self.particle_centre, "particle_centre", 1)
        cat = _int_array(self.particle_category, "particle_category", 1)
        vec = np.asarray(self.particle_vec, dtype=float)
        if vec.size == 0:
            vec = vec.reshape(0, 3)
        if vec.ndim != 2 or vec.shape[1] != 3:
            raise ValueError(f"particle_vec must have shape (P, 3), got {vec.shape}")
        P = len(vec)
        if len(pc) != P or len(cat) != P:
            raise ValueError(
                f"particle arrays disagree in length: particle_vec {P}, particle_centre {len(pc)}, particle_category {len(cat)}"
            )
        if P and (pc.min() < 0 or pc.max() >= len(cs)):
            raise ValueError(f"particle_centre must lie in 0..{len(cs) - 1}, got range {pc.min()}..{pc.max()}")
        if not np.all(np.isfinite(vec)):
            raise ValueError("particle_vec contains NaN or inf")
        r = np.linalg.norm(vec, axis=1)
        if P and r.min() < MIN_LENGTH:
            raise ValueError(f"particle {int(np.argmin(r))} has a zero-length vector (|x| = {r.min():.3g} Å)")
        w = self.particle_weight
        if w is not None:
            w = np.asarray(w, dtype=float)
            if w.shape != (P,):
                raise ValueError(f"particle_weight must have shape ({P},), got {w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError("particle_weight contains NaN or inf")
            w = _readonly(w)
        for name, val in (("centre_species", cs), ("particle_centre", pc), ("particle_category", cat), ("particle_vec", vec)):
            object.__setattr__(self, name, _readonly(val))
        object.__setattr__(self, "particle_weight", w)

    @property
    def n_centres(self) -> int:
        return len(self.centre_species)

    @property
    def n_particles(self) -> int:
        return len(self.particle_vec)


def _int_array(x, name, ndim):
    a = np.asarray(x)
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


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
        self._CT = self.tables.C.T.tocsr()
        self._grad = None

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

    def __repr__(self) -> str:
        nf = sum(self.n_features.values())
        return f"ACEBasis({nf} features over {len(self.feature_keys)} (L, parity) keys, n_A={self.tables.n_A}, n_AA={self.tables.n_AA})"

    # -- preparation -------------------------------------------------------------------
    def _prepare(self, centres: Centres):
        if not isinstance(centres, Centres):
            raise TypeError(f"centres must be a Centres, got {type(centres).__name__}")
        spec = self.spec
        cats = np.array(spec.categories)
        bad = ~np.isin(centres.particle_category, cats)
        if bad.any():
            raise ValueError(
                f"unknown particle categories {sorted(set(centres.particle_category[bad].tolist()))}; the basis has {list(spec.categories)}"
            )
        order = np.argsort(centres.particle_centre, kind="stable")
        pc = centres.particle_centre[order]
        vec = centres.particle_vec[order]
        cat = centres.particle_category[order]
        w = np.ones(len(order)) if centres.particle_weight is None else centres.particle_weight[order]
        species = centres.centre_species[pc]
        rc = np.full(len(order), spec.radial.r_cut)
        for s, c, r in spec.radial.cutoffs:
            rc[(species == s) & (cat == c)] = r
        r = np.linalg.norm(vec, axis=1)
        return order, pc, vec, cat, w, rc, r

    def _batches(self, n_centres, pc, width):
        nb = max(1, _BUDGET // max(width, 1))
        for c0 in range(0, n_centres, nb):
            c1 = min(n_centres, c0 + nb)
            p0, p1 = np.searchsorted(pc, [c0, c1])
            yield c0, c1, p0, p1

    def _products(self, A: np.ndarray) -> np.ndarray:
        """AA (n_AA, nb) from A (nb, n_A)."""
        t = self.tables
        AA = np.empty((t.n_AA, len(A)))
        AA[0] = 1.0
        AA[1 : 1 + t.n_A] = A.T
        for lev, (pre, last) in enumerate(zip(t.prefix, t.last)):
            o0, o1 = t.level_offsets[lev + 2], t.level_offsets[lev + 3]
            np.multiply(AA[pre], AA[1 + last], out=AA[o0:o1])
        return AA

    def _particles(self, vec, cat, w, rc, r, gradients):
        if gradients:
            R, dR = self.radial.evaluate(r, rc, gradients=True)
            Y, dY = self.angular.evaluate(vec, gradients=True)
            return one_particle(self.tables, R, Y, cat, w, dR, dY, vec, r)
        R = self.radial.evaluate(r, rc)
        Y = self.angular.evaluate(vec)
        return one_particle(self.tables, R, Y, cat, w), None

    def atomic(self, centres: Centres) -> np.ndarray:
        """Atomic base ``A``.

        Returns
        -------
        ndarray, shape (n_centres, n_A)
            Columns described by ``tables.a_cat``, ``a_n``, ``a_lm``.
        """
        order, pc, vec, cat, w, rc, r = self._prepare(centres)
        phi, _ = self._particles(vec, cat, w, rc, r, False)
        return atomic_base(phi, pc, centres.n_centres)

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self, centres: Centres, gradients: bool = False):
        """Features of every centre (and their gradients).

        Parameters
        ----------
        centres : Centres
        gradients : bool

        Returns
        -------
        vals : dict (L, parity) -> ndarray, shape (n_centres, n_B, 2L+1)
        grads : dict (L, parity) -> ndarray, shape (P, n_B, 2L+1, 3), 1/Å units of B
            ``d vals[key][particle_centre[p]] / d particle_vec[p]``, particles in
            input order; only when ``gradients``.
        """
        t = self.tables
        order, pc, vec, cat, w, rc, r = self._prepare(centres)
        nc, P = centres.n_centres, len(order)
        flat = np.empty((nc, t.n_out))
        gflat = np.empty((P, t.n_out, 3)) if gradients else None
        if gradients and self._grad is None:
            self._grad = t.gradient_tables()
        for c0, c1, p0, p1 in self._batches(nc, pc, t.n_AA):
            phi, dphi = self._particles(vec[p0:p1], cat[p0:p1], w[p0:p1], rc[p0:p1], r[p0:p1], gradients)
            A = atomic_base(phi, pc[p0:p1] - c0, c1 - c0)
            AA = self._products(A)
            flat[c0:c1] = (self._CT @ AA).T
            if gradients:
                self._gradients(AA, dphi, pc[p0:p1] - c0, gflat, order[p0:p1])
        vals = {}
        for key in self.feature_keys:
            L = key[0]
            vals[key] = flat[:, t.out_slices[key]].reshape(nc, -1, 2 * L + 1)
        if not gradients:
            return vals
        grads = {}
        for key in self.feature_keys:
            L = key[0]
            grads[key] = gflat[:, t.out_slices[key], :].reshape(P, -1, 2 * L + 1, 3)
        return vals, grads

    def _gradients(self, AA, dphi, local, gflat, orig):
        G, q_out, q_a = self._grad
        V = G @ AA  # (Q, nb): dB_o/dA_a on the pattern
        starts = np.concatenate([[0], np.flatnonzero(np.diff(q_out)) + 1])
        Q = len(q_out)
        step = max(1, _BUDGET // max(3 * Q, 1))
        for s0 in range(0, len(local), step):
            s1 = min(len(local), s0 + step)
            W = V[:, local[s0:s1]][:, :, None] * dphi[s0:s1][:, q_a, :].transpose(1, 0, 2)  # (Q, p, 3)
            red = np.add.reduceat(W, starts, axis=0)  # (n_out, p, 3)
            gflat[orig[s0:s1]] = red.transpose(1, 0, 2)

    def evaluate_linear(self, centres: Centres, coeffs: dict, key=(0, 1)):
        """Contracted features ``E_c = sum_B coeffs[species_c][B] B_key(c)`` and their gradients.

        Reverse mode: ``dE/dAA`` is the coefficient vector pushed through ``C``,
        ``dE/dA`` follows from the product tables, and the particle gradients from
        ``dA/dx``; far cheaper than the full Jacobian of :meth:`evaluate`.

        Parameters
        ----------
        centres : Centres
        coeffs : dict int -> ndarray, shape (n_B,)
            Coefficients per centre species; a species absent from the dict gives 0.
        key : (L, parity)
            Which features to contract (default the invariants ``(0, 1)``).

        Returns
        -------
        values : ndarray, shape (n_centres,) or (n_centres, 2L+1)
        grads : ndarray, shape (P, 3) or (P, 2L+1, 3)
            ``d values[particle_centre[p]] / d particle_vec[p]``, input particle order.
        """
        t = self.tables
        if key not in t.out_slices:
            raise ValueError(f"no features with key {key}; available {self.feature_keys}")
        L = key[0]
        nB = len(t.feature_info[key])
        sl = t.out_slices[key]
        Ck = t.C[:, sl]
        ncomp = 2 * L + 1
        weights = {}
        for s, c in coeffs.items():
            c = np.asarray(c, dtype=float)
            if c.shape != (nB,):
                raise ValueError(f"coefficients for species {s} must have shape ({nB},), got {c.shape}")
            cm = np.zeros((nB, ncomp, ncomp))
            cm[:, np.arange(ncomp), np.arange(ncomp)] = c[:, None]
            wk = np.asarray(Ck @ cm.reshape(nB * ncomp, ncomp))  # (n_AA, 2L+1): dE_M/dAA
            H = [sp.csr_matrix((wk[t.deriv_k, M] * t.deriv_mult, (t.deriv_a, t.deriv_j)), shape=(t.n_A, t.n_AA)) for M in range(ncomp)]
            weights[int(s)] = (wk, H)
        order, pc, vec, cat, w, rc, r = self._prepare(centres)
        nc, P = centres.n_centres, len(order)
        E = np.zeros((nc, ncomp))
        g = np.zeros((P, ncomp, 3))
        species = centres.centre_species
        for c0, c1, p0, p1 in self._batches(nc, pc, t.n_AA + 3 * t.n_A):
            phi, dphi = self._particles(vec[p0:p1], cat[p0:p1], w[p0:p1], rc[p0:p1], r[p0:p1], True)
            local = pc[p0:p1] - c0
            AA = self._products(atomic_base(phi, local, c1 - c0))
            dEdA = np.zeros((ncomp, t.n_A, c1 - c0))
            for s, (wk, H) in weights.items():
                sel = np.flatnonzero(species[c0:c1] == s)
                if len(sel) == 0:
                    continue
                AAs = AA[:, sel]
                E[c0 + sel] = (wk.T @ AAs).T
                for M in range(ncomp):
                    dEdA[M][:, sel] = H[M] @ AAs
            g[order[p0:p1]] = np.einsum("Map,pax->pMx", dEdA[:, :, local], dphi)
        if L == 0:
            return E[:, 0], g[:, 0, :]
        return E, g
