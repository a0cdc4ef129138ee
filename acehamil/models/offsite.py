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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..environments import BOND, Environments, bond_environments
from .blocks import OFFSITE, BlockType, block_types, transpose_sign
from .config import FeatureConfig
from .onsite import evaluate_features, feature_degrees


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

    kind = OFFSITE

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
        return self.config.max_nu > 1 and self.config.r_env > 0

    def basis_spec(self):
        from ..basis import BasisSpec, RadialSpec

        c = self.config
        cats = (BOND,) + (tuple(self.species) if self.has_environment else ())
        cutoffs = ((self.zi, BOND, c.r_cut),) + tuple((self.zi, s, c.r_cut / 2 + c.r_env) for s in cats[1:])
        return BasisSpec(
            categories=cats,
            radial=RadialSpec(n_max=c.n_max, r_cut=c.r_cut, cutoffs=cutoffs),
            max_nu=c.max_nu if self.has_environment else 1,
            max_degree=tuple(c.max_degree[: (c.max_nu if self.has_environment else 1)]),
            weight_n=1.0,
            weight_l=c.weight_l,
            L_max=self.lmax,
            singleton_categories=(BOND,),
        )

    @cached_property
    def basis(self):
        from ..basis import ACEBasis

        return ACEBasis(self.basis_spec())

    def block_types(self, orbital_basis) -> list:
        return block_types(orbital_basis, OFFSITE, species_pairs=[(self.zi, self.zj)])

    @property
    def reach(self) -> float:
        """Neighbour-list cutoff this family needs, Å."""
        c = self.config
        if not self.has_environment:
            return c.r_cut
        longest_with_env = min(c.r_cut, c.env_bond_cut) if c.env_bond_cut > 0 else c.r_cut
        return max(c.r_cut, longest_with_env + c.r_env)

    def select(self, numbers, bonds) -> np.ndarray:
        """Indices of the directed bonds this family computes.

        ``zi == zj``: every bond between two ``zi`` atoms (both directions);
        ``zi < zj``: bonds with ``Z_i = zi``, ``Z_j = zj``.  Only ``|r| < r_cut``.
        """
        numbers = np.asarray(numbers)
        return np.nonzero((numbers[bonds.i] == self.zi) & (numbers[bonds.j] == self.zj) & (bonds.dist < self.config.r_cut))[0]

    def environments(self, atoms, bonds, pairs=None) -> Environments:
        return bond_environments(atoms, bonds, self.config.r_env if self.has_environment else 0.0, pairs=pairs,
                                 env_bond_cut=self.config.env_bond_cut)

    def features(self, env: Environments) -> dict:
        return evaluate_features(self.basis, env)

    def symmetrised(self, bt: BlockType) -> bool:
        """True when the model is ``1/2 [F(r) + F(-r)^T]`` (same species and shell)."""
        return bt.symmetric

    def design(self, feats: dict, bt: BlockType, n: int, rev=None) -> dict:
        """Design tensors per ``L``: ``{L: (n, n_F, 2L+1)}``.

        Parameters
        ----------
        rev : ndarray of int, shape (n,)
            Position of each bond's reverse among the same centres; needed (all
            ``>= 0``) for symmetrised block types.
        """
        out = {}
        for L in bt.L_values():
            f = feats.get((L, bt.parity))
            f = np.zeros((n, 0, 2 * L + 1)) if f is None else f
            if self.symmetrised(bt):
                if rev is None or np.any(rev < 0):
                    raise ValueError(f"{bt.key}: symmetrised off-site blocks need every reversed bond")
                f = 0.5 * (f + transpose_sign(L) * f[rev])
            out[L] = f
        return out

    def degrees(self, bt: BlockType, nfeat: dict) -> dict:
        """Feature degrees per ``L`` matching :meth:`design`."""
        return {L: feature_degrees(self.basis, (L, bt.parity), nfeat[L]) if nfeat[L] else np.zeros(0) for L in bt.L_values()}
