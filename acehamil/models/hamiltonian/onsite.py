"""On-site block family: all on-site blocks ``H_ii^{ab}`` of one species.

Features are the ACE features of atom ``i``'s environment (cutoff ``r_cut``),
plus a constant (``nu = 0``) feature in the ``L = 0`` channel: the first design
column of ``L = 0``, degree 0, prior precision ``CONSTANT_PRIOR_FACTOR`` relative
to the others (it carries the mean level, e.g. a core energy; this rule lives
in :meth:`OnsiteFamily.n_constant` and nowhere else).  A same-shell block
(``a == b``) keeps only even ``L`` (it is exactly symmetric); for ``a < b`` all
``L`` are fitted and ``H_ii^{ba} = (H_ii^{ab})^T`` is derived.
Implements :class:`acehamil.models.hamiltonian.family.BlockFamily`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...environments import Environments, site_environments
from .blocks import BlockType, onsite_block_types
from .config import FeatureConfig

#: Relative prior precision of the on-site constant (it carries the mean level, e.g. a core energy).
CONSTANT_PRIOR_FACTOR = 1e-8


def feature_degrees(basis, key, n: int) -> np.ndarray:
    """Degree of each feature of ``key`` (for the smoothness prior), shape (n,)."""
    if basis is None or key not in basis.feature_keys:
        return np.zeros(n)
    deg = basis.feature_degrees(key)
    if deg.shape != (n,):
        raise ValueError(f"feature_info for {key} has {deg.size} degrees, features have {n}")
    return deg


def evaluate_features(basis, env: Environments, max_particles: int = 200_000) -> dict:
    """Basis features of all centres, evaluated in chunks and concatenated.

    Returns
    -------
    dict {(L, parity): ndarray (n_centres, n_B, 2L+1)}
    """
    parts = []
    for _, _, sub in env.chunks(max_particles):
        parts.append(basis.evaluate(sub.to_centres()))
    if not parts:
        return {k: np.zeros((0, len(basis.feature_info.get(k, ())) if hasattr(basis, "feature_info") else 0, 2 * k[0] + 1))
                for k in basis.feature_keys}
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass(frozen=True)
class OnsiteFamily:
    """On-site blocks of species ``z`` (one independent model per shell pair).

    Attributes
    ----------
    z : int
    config : FeatureConfig
    species : tuple of int
        All species of the orbital basis (environment categories).
    lmax : int
        Largest shell ``l`` of species ``z``.
    """

    z: int
    config: FeatureConfig
    species: tuple
    lmax: int

    @property
    def name(self) -> str:
        return f"onsite/{self.z}"

    def basis_spec(self):
        """The :class:`acehamil.basis.BasisSpec`, or None for a constant-only model."""
        if self.config.max_nu == 0:
            return None
        from ...basis import BasisSpec, RadialSpec

        c = self.config
        return BasisSpec(
            categories=tuple(self.species),
            radial=RadialSpec(n_max=c.n_max, r_cut=c.r_cut, cutoffs=tuple((self.z, s, c.r_cut) for s in self.species)),
            max_nu=c.max_nu,
            max_degree=tuple(c.max_degree[: c.max_nu]),
            weight_n=1.0,
            weight_l=c.weight_l,
            L_max=2 * self.lmax,
            singleton_categories=(),
            origin_smoothing=c.origin_smoothing,
        )

    @cached_property
    def basis(self):
        spec = self.basis_spec()
        if spec is None:
            return None
        from ...basis import ACEBasis

        return ACEBasis(spec)

    def block_types(self, orbital_basis) -> list:
        return onsite_block_types(orbital_basis, species=(self.z,))

    @property
    def reach(self) -> float:
        """Neighbour-list cutoff this family needs, Å."""
        return self.config.r_cut

    def bond_cutoff(self, zi: int, zj: int) -> float:
        """No bonds: 0."""
        return 0.0

    def select(self, atoms, pairs=None) -> np.ndarray:
        """Atoms this family predicts (all atoms of species ``z``), shape (n,) int."""
        return np.nonzero(np.asarray(atoms.numbers) == self.z)[0]

    def centre_blocks(self, atoms, pairs, sel) -> tuple:
        """Blocks ``(i, i, 0)`` of the atoms ``sel``."""
        sel = np.asarray(sel, dtype=np.int64)
        return sel, sel, np.zeros((len(sel), 3), np.int64)

    def prepare(self, atoms, pairs=None):
        """Nothing to prepare (site environments are cheap): None."""
        return None

    def environments(self, atoms, pairs, sel, prepared=None) -> Environments:
        return site_environments(atoms, self.config.r_cut, centres=sel, pairs=pairs)

    def features(self, env: Environments) -> dict:
        if self.basis is None:
            return {}
        return evaluate_features(self.basis, env)

    def linear_map(self, bt: BlockType, L: int, c: np.ndarray) -> tuple:
        """The design of ``bt``, ``L`` contracted with coefficients ``c`` (n_F,), as a map on the features:
        ``x_L = feats[key] . w + const`` (:meth:`design` then ``@ c``).

        Returns
        -------
        key : (L, parity) or None
            Feature key (None: no basis features).
        w : ndarray, shape (n_B,)
        const : float
            The constant column's contribution (``L = 0``), else 0.
        """
        k = self.n_constant(L)
        key = (L, bt.parity)
        has = self.basis is not None and key in self.basis.feature_keys
        return (key if has else None), np.asarray(c[k:], dtype=float), (float(c[0]) if k else 0.0)

    def mapping(self, W: np.ndarray, parts=(), sparse: bool = False, sets: int = 1):
        """``W (n_out, n_y)`` on the flat features, prepared for :meth:`evaluate_mapped` (``parts``,
        the ``(L, first column)`` of each output group, is not needed on-site; ``sparse``, ``sets``: see
        :meth:`acehamil.basis.ace.ACEBasis.mapping`)."""
        return (self.basis.mapping(W, sparse=sparse, sets=sets) if self.basis is not None else None), W.shape[1]

    def evaluate_mapped(self, env: Environments, mapping) -> np.ndarray:
        """``flat(features) @ W`` of environments, shape (n, n_y), with ``mapping`` from :meth:`mapping`
        (:meth:`ACEBasis.evaluate_mapped`)."""
        pm, n_y = mapping
        if pm is None:
            return np.zeros((env.n_centres, n_y))
        return self.basis.evaluate_mapped(env.to_centres(), pm)

    def mapped_chunks(self, atoms, pairs, sel, mapping, prepared=None, chunk: int = 2048, rev=None):
        """Yield ``(positions in sel (m,), flat(features) @ W (m, n_y))`` of the atoms ``sel``
        (:meth:`evaluate_mapped`), ``chunk`` atoms at a time (``rev`` is not needed on-site)."""
        for b0 in range(0, len(sel), chunk):
            idx = np.arange(b0, min(len(sel), b0 + chunk))
            yield idx, self.evaluate_mapped(self.environments(atoms, pairs, sel[idx], prepared), mapping)

    def symmetrised(self, bt: BlockType) -> bool:
        """Never: a same-shell on-site block is symmetric by its even-``L`` parts alone."""
        return False

    @staticmethod
    def n_constant(L: int) -> int:
        """Constant design columns of ``L`` (first columns): one for ``L = 0``."""
        return 1 if L == 0 else 0

    def design(self, feats: dict, bt: BlockType, n: int) -> dict:
        """Design tensors per ``L``: ``{L: (n, n_F, 2L+1)}``; ``x_L = design_L @ c_L``.

        The constant feature is the first column of ``L = 0``.
        """
        parity = bt.parity
        out = {}
        for L in bt.L_values():
            f = feats.get((L, parity))
            f = np.zeros((n, 0, 2 * L + 1)) if f is None else f
            if self.n_constant(L):
                f = np.concatenate([np.ones((n, 1, 1)), f], axis=1)
            out[L] = f
        return out

    def degrees(self, bt: BlockType, nfeat: dict) -> dict:
        """Feature degrees per ``L`` matching :meth:`design` (the constant has degree 0).

        ``nfeat`` is ``{L: n_F}`` as found in the design tensors.
        """
        out = {}
        for L in bt.L_values():
            k = self.n_constant(L)
            n_basis = nfeat[L] - k
            d = feature_degrees(self.basis, (L, bt.parity), n_basis) if n_basis else np.zeros(0)
            out[L] = np.concatenate([np.zeros(k), d]) if k else d
        return out

    def prior_mask(self, bt: BlockType, L: int, n: int) -> np.ndarray:
        """1 per column, :data:`CONSTANT_PRIOR_FACTOR` for the constant: it is (almost) unpenalised."""
        free = np.ones(n)
        free[: self.n_constant(L)] = CONSTANT_PRIOR_FACTOR
        return free

    def n_coefficients(self, bt: BlockType) -> dict:
        nf = self.basis.n_features if self.basis is not None else {}
        return {L: nf.get((L, bt.parity), 0) + self.n_constant(L) for L in bt.L_values()}
