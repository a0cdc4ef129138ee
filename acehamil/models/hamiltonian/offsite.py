"""Off-site block family: all off-site blocks between species ``zi <= zj``.

Each directed bond ``(i, j, T)`` with ``|r_ij| < r_cut`` gets the ACE features
of its bond environment (:func:`acehamil.environments.bond_environments`):
the bond particle (category ``BOND``, vector ``r_ij``) in every product, plus
the atoms inside the bond ellipsoid.  ``F^{ab}(r, env)`` below is the linear
model ``sum_L C^L (B_L(r, env) c_L)``.

Bond reversal, exactly by construction
    * ``zi == zj``, ``a == b``: ``H_ij^{aa} = 1/2 [F(r, env) + F(-r, env)^T]``; in
      irreducible parts ``x_L = 1/2 [B_L(r) + (-1)^L B_L(-r)] c_L``.  Then
      ``H_ji(-T) = H_ij(T)^T`` identically.
    * ``zi == zj``, ``a < b``: ``H_ij^{ab} = F^{ab}(r_ij, env)``, and the ``(b, a)``
      block is derived, ``H_ij^{ba} = F^{ab}(r_ji, env)^T`` (the reversed bond).
    * ``zi < zj``: ``H_ij^{ab} = F^{ab}(r_ij, env)`` for ``Z_i = zi``, and
      ``H_ji^{ba} = (H_ij^{ab})^T``.
    No direction is ever chosen by atom index.

Implements :class:`acehamil.models.hamiltonian.family.BlockFamily`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ...environments import BOND, Environments, axial_semi_axis, bond_environments, bond_reach
from .blocks import BlockType, offsite_block_types
from .config import FeatureConfig
from .onsite import feature_degrees


@dataclass(frozen=True)
class OffsiteFamily:
    """Off-site blocks between species ``zi <= zj``.

    Attributes
    ----------
    zi, zj : int
    config : FeatureConfig
        ``r_cut`` is the longest bond, ``r_env`` the ellipsoid transverse semi-axis.
    species : tuple of int
        Species of the orbital basis (environment categories).
    lmax : int
        ``lmax(zi) + lmax(zj)``: largest coupled ``L``.
    """

    zi: int
    zj: int
    config: FeatureConfig
    species: tuple
    lmax: int

    def __post_init__(self):
        if self.zi > self.zj:
            raise ValueError(f"off-site family needs zi <= zj, got {self.zi}, {self.zj}")
        if self.config.max_nu < 1:
            raise ValueError("off-site models need max_nu >= 1 (the bond particle is one factor)")

    @property
    def name(self) -> str:
        return f"offsite/{self.zi}-{self.zj}"

    @property
    def has_environment(self) -> bool:
        return self.config.bond_environment

    def basis_spec(self):
        from ...basis import BasisSpec, RadialSpec

        c = self.config
        cats = (BOND,) + (tuple(self.species) if self.has_environment else ())
        cutoffs = ((self.zi, BOND, c.r_cut),) + tuple((self.zi, s, axial_semi_axis(c.r_cut, c.r_env)) for s in cats[1:])
        decays = ((self.zi, BOND, c.bond_decay),) if c.bond_decay > 0 else ()
        return BasisSpec(
            categories=cats,
            radial=RadialSpec(n_max=c.n_max, r_cut=c.r_cut, cutoffs=cutoffs, decays=decays),
            max_nu=c.max_nu if self.has_environment else 1,
            max_degree=tuple(c.max_degree[: (c.max_nu if self.has_environment else 1)]),
            weight_n=1.0,
            weight_l=c.weight_l,
            L_max=self.lmax,
            singleton_categories=(BOND,),
            origin_smoothing=c.origin_smoothing if self.has_environment else 0.0,
        )

    @cached_property
    def basis(self):
        from ...basis import ACEBasis

        return ACEBasis(self.basis_spec())

    def block_types(self, orbital_basis) -> list:
        return offsite_block_types(orbital_basis, species_pairs=[(self.zi, self.zj)])

    @property
    def reach(self) -> float:
        """Neighbour-list cutoff this family needs, Å."""
        c = self.config
        if not self.has_environment:
            return c.r_cut
        longest_with_env = min(c.r_cut, c.env_bond_cut) if c.env_bond_cut > 0 else c.r_cut
        return max(c.r_cut, bond_reach(longest_with_env, c.r_env))

    def bond_cutoff(self, zi: int, zj: int) -> float:
        """``r_cut`` for bonds between species ``zi`` and ``zj`` (either order) of this family, else 0, Å."""
        return self.config.r_cut if tuple(sorted((int(zi), int(zj)))) == (self.zi, self.zj) else 0.0

    def select(self, atoms, pairs) -> np.ndarray:
        """Positions in ``pairs`` of the directed bonds this family computes.

        ``zi == zj``: every bond between two ``zi`` atoms (both directions);
        ``zi < zj``: bonds with ``Z_i = zi``, ``Z_j = zj``.  Only ``|r| < r_cut``.
        """
        if not len(pairs):
            return np.zeros(0, np.int64)
        numbers = np.asarray(atoms.numbers)
        return np.nonzero((numbers[pairs.i] == self.zi) & (numbers[pairs.j] == self.zj) & (pairs.dist < self.config.r_cut))[0]

    def centre_blocks(self, atoms, pairs, sel) -> tuple:
        """Blocks ``(i, j, shift)`` of the bonds ``sel`` of ``pairs``."""
        return pairs.i[sel], pairs.j[sel], pairs.shift[sel]

    def prepare(self, atoms, pairs=None):
        """Neighbours sorted once for chunked :meth:`environments` calls (None without environment)."""
        if not self.has_environment:
            return None
        from ...environments import sorted_neighbours

        return sorted_neighbours(atoms, self.reach, pairs)

    def environments(self, atoms, pairs, sel, prepared=None) -> Environments:
        return bond_environments(atoms, pairs.select(sel), self.config.r_env if self.has_environment else 0.0, pairs=pairs,
                                 env_bond_cut=self.config.env_bond_cut, sorted_nl=prepared)

    @cached_property
    def bond_only_basis(self):
        """Two-centre basis (the bond particle only) whose features equal the ``nu = 1``
        features of :attr:`basis`; used for bonds beyond ``env_bond_cut`` (no environment)."""
        from ...basis import ACEBasis, BasisSpec, RadialSpec

        s = self.basis.spec
        return ACEBasis(BasisSpec(
            categories=(BOND,),
            radial=RadialSpec(n_max=s.radial.n_max, r_cut=s.radial.r_cut, cutoffs=tuple(c for c in s.radial.cutoffs if c[1] == BOND),
                              envelope_power=s.radial.envelope_power, decays=tuple(d for d in s.radial.decays if d[1] == BOND)),
            max_nu=1, max_degree=(s.max_degree[0],), weight_n=s.weight_n, weight_l=s.weight_l, L_max=s.L_max,
            singleton_categories=(BOND,), l_max=s.l_max,
        ))

    @cached_property
    def _nu1_map(self) -> dict:
        """``{key: (columns in basis, columns in bond_only_basis)}`` of the ``nu = 1`` features."""
        out = {}
        two = self.bond_only_basis.feature_info
        for key, info in self.basis.feature_info.items():
            where = {f.factors: i for i, f in enumerate(two.get(key, ()))}
            pairs = [(i, where[f.factors]) for i, f in enumerate(info) if f.nu == 1]
            if pairs:
                out[key] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
        return out

    def evaluate(self, env: Environments) -> dict:
        """Features ``{(L, parity): (n, n_B, 2L+1)}`` of bond environments.

        Bonds at least ``env_bond_cut`` long carry no environment, so all their
        ``nu >= 2`` features vanish and their ``nu = 1`` features are computed by the
        much smaller :attr:`bond_only_basis` (identical values).
        """
        cut = self.config.env_bond_cut
        if not (self.has_environment and cut > 0):
            return self.basis.evaluate(env.to_centres())
        blen = np.linalg.norm(env.vec, axis=1)
        short, long = np.nonzero(blen < cut)[0], np.nonzero(blen >= cut)[0]
        if len(long) == 0:
            return self.basis.evaluate(env.to_centres())
        n = env.n_centres
        nf = self.basis.n_features
        out = {key: np.zeros((n, nf[key], 2 * key[0] + 1)) for key in self.basis.feature_keys}
        if len(short):
            part = self.basis.evaluate(env.take(short).to_centres())
            for key, v in part.items():
                out[key][short] = v
        part = self.bond_only_basis.evaluate(env.take(long).to_centres())
        for key, (cols, src) in self._nu1_map.items():
            out[key][long[:, None], cols[None, :]] = part[key][:, src]
        return out

    def feature_parts(self, env: Environments) -> list:
        """The features of :meth:`evaluate` without the zeros of two-centre bonds: ``[(positions (m,),
        {key: (m, n_cols, 2L+1)}, columns)]`` where ``columns`` is None (all features of ``basis``) or
        ``{key: column indices}`` (bonds beyond ``env_bond_cut``: their ``nu = 1`` features only, every
        other column is zero).  For sums over bonds (:mod:`.linear_response`) that need not touch the zeros."""
        n = env.n_centres
        cut = self.config.env_bond_cut
        if not (self.has_environment and cut > 0):
            return [(np.arange(n), self.basis.evaluate(env.to_centres()), None)]
        blen = np.linalg.norm(env.vec, axis=1)
        short, long = np.nonzero(blen < cut)[0], np.nonzero(blen >= cut)[0]
        out = []
        if len(short):
            out.append((short, self.basis.evaluate(env.take(short).to_centres()), None))
        if len(long):
            part = self.bond_only_basis.evaluate(env.take(long).to_centres())
            nu1 = self._nu1_map
            out.append((long, {key: part[key][:, src] for key, (cols, src) in nu1.items()},
                        {key: cols for key, (cols, src) in nu1.items()}))
        return out

    def features(self, env: Environments) -> dict:
        parts = [self.evaluate(sub) for _, _, sub in env.chunks()]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def linear_map(self, bt: BlockType, L: int, c: np.ndarray) -> tuple:
        """The design of ``bt``, ``L`` contracted with ``c``: ``x_L = feats[(L, parity)] . c``
        (see :meth:`OnsiteFamily.linear_map`); returns ``(key or None, w (n_B,), 0.0)``."""
        key = (L, bt.parity)
        return (key if key in self.basis.feature_keys else None), np.asarray(c, dtype=float), 0.0

    def mapping(self, W: np.ndarray, parts, sparse: bool = False, sets: int = 1) -> tuple:
        """``W (n_out, n_y)`` on the flat features, prepared for :meth:`evaluate_mapped`.

        ``parts`` lists ``(L, first column)`` of every ``2L+1``-column group of outputs (the irreducible
        parts, rotated back from the bond frame).  Bonds with an environment are evaluated in their bond
        frame (:meth:`acehamil.environments.Environments.in_bond_frame`), where the bond's harmonics
        with ``m != 0`` vanish and so do most products (:class:`acehamil.basis.mapped.ProductMap`);
        bonds beyond ``env_bond_cut`` (with one) go through :attr:`bond_only_basis`.  ``sparse``, ``sets``: see
        :meth:`acehamil.basis.ace.ACEBasis.mapping`.
        """
        frame = self.basis.spec.max_nu >= 2
        full = self.basis.mapping(W, vanishing=self.basis.vanishing_on_z(BOND) if frame else None, sparse=sparse,
                                  sets=sets)
        tapered = self.has_environment and self.config.env_bond_cut > 0
        two = self.bond_only_basis.mapping(self._two_centre_rows(W)) if tapered else None
        groups = {}
        for L, c0 in parts:
            groups.setdefault(int(L), []).append(int(c0))
        groups = {L: np.array(c)[:, None] + np.arange(2 * L + 1) for L, c in groups.items() if L > 0}
        return full, two, (groups if frame else None)

    def evaluate_mapped(self, env: Environments, mapping) -> np.ndarray:
        """``flat(features) @ W`` of bond environments, shape (n, n_y), with ``mapping`` from :meth:`mapping`,
        as :meth:`evaluate` computes the features (bonds beyond ``env_bond_cut`` through :attr:`bond_only_basis`)."""
        full, two, groups = mapping
        if two is None:
            return self._with_environment(env, full, groups)
        blen = np.linalg.norm(env.vec, axis=1)
        short, long = np.nonzero(blen < self.config.env_bond_cut)[0], np.nonzero(blen >= self.config.env_bond_cut)[0]
        if len(long) == 0:
            return self._with_environment(env, full, groups)
        out = np.empty((env.n_centres, full.n_y))
        if len(short):
            out[short] = self._with_environment(env.take(short), full, groups)
        out[long] = self.bond_only_basis.evaluate_mapped(env.take(long).to_centres(), two)
        return out

    def mapped_chunks(self, atoms, pairs, sel, mapping, prepared=None, chunk: int = 2048, rev=None):
        """Yield ``(positions in sel (m,), flat(features) @ W (m, n_y))`` of the bonds ``sel`` of ``pairs``
        (:meth:`evaluate_mapped`), about ``chunk`` bond pairs at a time; every chunk holds the reversed
        bond of each of its bonds that has one among ``sel`` (``rev``: their positions, -1 for none;
        found when not given).

        In the bond frame a bond and its reverse ``(j, i, -T)`` share one environment: seen from the
        reversed bond (frame ``Q' = diag(1, -1, -1) Q``, the rotation by pi about x) the environment
        particles are mirrored as ``(x, y, z) -> (x, -y, -z)``, under which every real harmonic only
        changes sign, while the bond particle stays on +z.  So the environment, radial functions,
        harmonics and one-particle sums of each pair are computed once (for the first of the two
        among ``sel``) and the partner's outputs come from the sign-flipped sums.
        """
        from ...structure.pair_index import reverse_index

        full, two, groups = mapping
        sel = np.asarray(sel, dtype=np.int64)
        n = len(sel)
        if rev is None:
            rev = reverse_index(pairs.i[sel], pairs.j[sel], pairs.shift[sel])
        long = pairs.dist[sel] >= self.config.env_bond_cut if two is not None else np.zeros(n, dtype=bool)
        lead = ((rev < 0) | (np.arange(n) < rev))
        near, far = np.nonzero(lead & ~long)[0], np.nonzero(lead & long)[0]
        numbers = np.asarray(atoms.numbers, dtype=np.int64)
        for b0 in range(0, len(near), chunk):
            c = near[b0:b0 + chunk]
            has = rev[c] >= 0
            idx = np.concatenate([c, rev[c[has]]])
            if groups is None:  # two-centre (no environment): from the bond vectors, the reversed bond mirrored
                yield idx, self._two_centre(self.basis, full, pairs, sel[c], numbers, has)
                continue
            rotated, Q = self.environments(atoms, pairs, sel[c], prepared).in_bond_frame()
            ya, yb = self.basis.evaluate_mapped(rotated.to_centres(), full, mirror=self._mirror_signs)
            yield idx, np.concatenate([self._rotate_back(ya, Q, groups),
                                       self._rotate_back(yb[has], Q[has] * np.array([1.0, -1.0, -1.0])[:, None], groups)])
        for b0 in range(0, len(far), chunk):
            c = far[b0:b0 + chunk]
            has = rev[c] >= 0
            idx = np.concatenate([c, rev[c[has]]])
            yield idx, self._two_centre(self.bond_only_basis, two, pairs, sel[c], numbers, has)

    @staticmethod
    def _two_centre(basis, pm, pairs, bonds, numbers, has) -> np.ndarray:
        """Mapped two-centre features of the bonds ``bonds`` (positions in ``pairs``), then of the reversed
        bonds of those with ``has``: the bond particle alone, ``Y_lm(-r) = (-1)^l Y_lm(r)``
        (:meth:`acehamil.basis.ACEBasis.evaluate_mapped_one_particle`); shape (len(bonds) + has.sum(), n_y)."""
        ya, yb = basis.evaluate_mapped_one_particle(pairs.vec[bonds], numbers[pairs.i[bonds]], BOND, pm, mirror=True)
        return np.concatenate([ya, yb[has]])

    @cached_property
    def _mirror_signs(self) -> np.ndarray:
        """Sign of each one-particle sum of :attr:`basis` under ``(x, y, z) -> (x, -y, -z)`` of the
        environment particles (the bond particle, on the z axis, is unchanged), shape (n_A,)."""
        from ...so3 import wigner_d_real

        t = self.basis.tables
        flip = np.diag([1.0, -1.0, -1.0])
        signs = np.concatenate([np.diag(wigner_d_real(l, flip)) for l in range(t.l_max + 1)])
        return np.where(t.a_cat == BOND, 1.0, np.rint(signs[t.a_lm]))  # exactly +-1 (the D's diagonal, rounded)

    @staticmethod
    def _rotate_back(y: np.ndarray, Q: np.ndarray, groups: dict) -> np.ndarray:
        """Outputs of frame-rotated environments back in the lab frame: ``x_L = D^L(Q)^T x_L(frame)``."""
        from ...so3 import wigner_d_real

        y = y.copy()
        for L, cols in groups.items():
            y[:, cols] = np.einsum("nMK,nsM->nsK", wigner_d_real(L, Q), y[:, cols])
        return y

    def _with_environment(self, env: Environments, full, groups) -> np.ndarray:
        """Mapped features of :attr:`basis`, in the bond frame when ``groups`` is given."""
        if groups is None:
            return self.basis.evaluate_mapped(env.to_centres(), full)
        rotated, Q = env.in_bond_frame()
        return self._rotate_back(self.basis.evaluate_mapped(rotated.to_centres(), full), Q, groups)

    def _two_centre_rows(self, W: np.ndarray) -> np.ndarray:
        """Rows of ``W`` (flat features of :attr:`basis`) moved to the flat features of
        :attr:`bond_only_basis` (its ``nu = 1`` features; the others vanish without environment)."""
        full, two = self.basis.tables, self.bond_only_basis.tables
        if not isinstance(W, np.ndarray):  # scipy sparse (MatrixModel.predict_many): only the rows moved
            W = W.tocsr()
        out = np.zeros((two.n_out, W.shape[1]))
        for key, (cols, src) in self._nu1_map.items():
            m = np.arange(2 * key[0] + 1)
            rows = (full.out_slices[key].start + cols[:, None] * len(m) + m).ravel()
            out[(two.out_slices[key].start + src[:, None] * len(m) + m).ravel()] = (
                W[rows] if isinstance(W, np.ndarray) else W[rows].toarray())
        return out

    def symmetrised(self, bt: BlockType) -> bool:
        """True when the model is ``1/2 [F(r) + F(-r)^T]`` (same species and shell)."""
        return bt.symmetric

    def design(self, feats: dict, bt: BlockType, n: int) -> dict:
        """Design tensors per ``L``: ``{L: (n, n_F, 2L+1)}`` (the features; symmetrised types are
        completed by :func:`acehamil.models.hamiltonian.family.symmetrise`)."""
        out = {}
        for L in bt.L_values():
            f = feats.get((L, bt.parity))
            out[L] = np.zeros((n, 0, 2 * L + 1)) if f is None else f
        return out

    def degrees(self, bt: BlockType, nfeat: dict) -> dict:
        """Feature degrees per ``L`` matching :meth:`design`."""
        return {L: feature_degrees(self.basis, (L, bt.parity), nfeat[L]) if nfeat[L] else np.zeros(0) for L in bt.L_values()}

    def prior_mask(self, bt: BlockType, L: int, n: int) -> np.ndarray:
        """All columns carry the full prior."""
        return np.ones(n)

    def n_coefficients(self, bt: BlockType) -> dict:
        nf = self.basis.n_features
        return {L: nf.get((L, bt.parity), 0) for L in bt.L_values()}
