"""The block-family seam: one protocol every family of orbital blocks implements.

A *block family* owns the blocks of one kind of centre (on-site: atoms of one
species; off-site: directed bonds of one species pair) and, for each of its
block types (shell pairs) and coupled ``L``, one independent linear model
``x_L = D_L c_L``.  Prediction (:meth:`MatrixModel.predict
<acehamil.models.hamiltonian.matrix_model.MatrixModel.predict>`), fitting
(:mod:`acehamil.models.hamiltonian.fit`) and the model files only talk to
families through :class:`BlockFamily`, so a new family (dipoles, spin
channels, ...) is one new module implementing it.

Centres are integer positions: ``select(atoms, pairs)`` returns positions of
atoms (on-site) or of entries of the neighbour list ``pairs`` (off-site), and
``centre_blocks`` names the block ``(i, j, shift)`` each centre predicts.  Every
family's blocks are closed under Hermitian transposition: the partner
``(j, i, -shift)`` of a block is either a block of the same family (then it is
a centre too, found by :func:`acehamil.structure.pair_index.reverse_index`) or,
for ``species_i != species_j``, written by transposition.

Adding a family: implement the protocol below (see ``docs/design.md``), return
its instances from :func:`acehamil.models.hamiltonian.model.make_families`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .blocks import BlockType, transpose_sign


@runtime_checkable
class BlockFamily(Protocol):
    """What prediction and fitting need from a family of orbital blocks.

    Attributes
    ----------
    name : str
        Stable name (model files, sampling rates), e.g. ``"onsite/14"``.
    config : FeatureConfig
    basis : ACEBasis or None
        None when the family has constant features only.
    reach : float
        Å, neighbour-list cutoff the family needs (centres and environments).
    """

    name: str

    @property
    def reach(self) -> float: ...

    def basis_spec(self):
        """The :class:`acehamil.basis.BasisSpec` of :attr:`basis` (None if constant-only)."""

    def block_types(self, orbital_basis) -> list:
        """The fitted :class:`BlockType` s of this family, sorted."""

    def bond_cutoff(self, zi: int, zj: int) -> float:
        """Å, longest ``i != j`` block between species ``zi`` and ``zj`` (either order) it predicts; 0 for none."""

    def select(self, atoms, pairs) -> np.ndarray:
        """Centres of this family in ``atoms``: positions (n,) int of atoms or of entries of ``pairs``."""

    def centre_blocks(self, atoms, pairs, sel) -> tuple:
        """Block ``(i (n,), j (n,), shift (n, 3))`` each centre ``sel`` predicts."""

    def prepare(self, atoms, pairs):
        """Per-structure data reused by chunked :meth:`environments` calls (or None)."""

    def environments(self, atoms, pairs, sel, prepared=None):
        """:class:`acehamil.environments.Environments` of the centres ``sel`` (any subset, e.g. a chunk)."""

    def features(self, env) -> dict:
        """Equivariant features ``{(L, parity): (n, n_B, 2L+1)}`` of environments."""

    def design(self, feats: dict, bt: BlockType, n: int) -> dict:
        """Design tensors ``{L: (n, n_F, 2L+1)}`` of ``bt`` (before :func:`symmetrise`); ``x_L = D_L c_L``."""

    def symmetrised(self, bt: BlockType) -> bool:
        """True when ``bt``'s model is ``1/2 [F(r) + F(-r)^T]`` (needs each centre's partner)."""

    def degrees(self, bt: BlockType, nfeat: dict) -> dict:
        """Polynomial degree of each design column ``{L: (n_F,)}`` (smoothness prior)."""

    def prior_mask(self, bt: BlockType, L: int, n: int) -> np.ndarray:
        """Relative prior precision of each column ``(n,)``: 1, or less for (almost) free columns."""

    def n_coefficients(self, bt: BlockType) -> dict:
        """Number of coefficients ``{L: n_F}`` of ``bt`` (design columns)."""


def symmetrise(fam, bt: BlockType, parts: dict, rev) -> dict:
    """``1/2 [x_L + (-1)^L x_L[rev]]`` for symmetrised block types, else ``parts`` unchanged.

    Applies to design tensors ``{L: (n, n_F, 2L+1)}`` and to predicted parts
    ``{L: (n, 2L+1)}`` alike: both are linear in the centre.

    Parameters
    ----------
    rev : ndarray of int, shape (n,)
        Position of each centre's partner among the centres (all ``>= 0`` for
        a symmetrised type).
    """
    if not fam.symmetrised(bt):
        return parts
    if rev is None or np.any(np.asarray(rev) < 0):
        raise ValueError(f"{bt.key}: symmetrised blocks need every reversed centre")
    return {L: 0.5 * (x + transpose_sign(L) * x[rev]) for L, x in parts.items()}


def sampling_leaders(rev) -> np.ndarray:
    """For each centre, the centre whose random number decides whether it is kept.

    A centre and its partner (same family, ``rev >= 0``) are kept or dropped
    together: both use the smaller position.  Centres without a partner among
    the centres (on-site: themselves; mixed-species bonds) decide alone.

    Examples
    --------
    >>> sampling_leaders(np.array([1, 0, -1, 3])).tolist()
    [0, 0, 2, 3]
    """
    rev = np.asarray(rev, dtype=np.int64)
    own = np.arange(len(rev))
    return np.where(rev >= 0, np.minimum(own, rev), own)
