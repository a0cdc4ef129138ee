"""Orbital block types and the Clebsch-Gordan algebra that turns equivariant
features into orbital blocks.

An ``(l1, l2)`` block ``X`` (shape ``(2l1+1, 2l2+1)``) is decomposed into its
irreducible parts ``x_L = sum_{m1 m2} C^L[m1, m2, :] X[m1, m2]`` for
``L = |l1-l2|..l1+l2`` with ``C^L = cg_real(l1, l2, L)``; since the ``C^L`` together
form an orthogonal matrix, ``X = sum_L C^L x_L`` and
``||X||^2 = sum_L ||x_L||^2``.  A linear model of the block is therefore a set of
independent linear models, one per ``L``: ``x_L = B_L c_L`` with ``B_L`` the
equivariant features of key ``(L, (-1)^(l1+l2))`` (see ``docs/design.md``).

Transposition acts on the parts of a same-``l`` block by a sign:
``(X^T)_L = (-1)^L x_L`` when ``l1 == l2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...so3 import cg_real

ONSITE = "onsite"
OFFSITE = "offsite"
#: Block kinds, and whether a block of that kind couples an atom with itself
#: (``(i, i, 0)``, its own Hermitian partner).
SELF_COUPLING = {ONSITE: True, OFFSITE: False}


@dataclass(frozen=True, order=True)
class BlockType:
    """One independently fitted block type.

    Attributes
    ----------
    kind : {"onsite", "offsite"}
    species_i, species_j : int
        Atomic numbers of the row and column atom (``species_i <= species_j``
        for fitted off-site types; equal for on-site types).
    shell_a, shell_b : int
        Shell indices (positions in the orbital basis of each species).
    l1, l2 : int
        Angular momenta of the two shells.

    Examples
    --------
    >>> BlockType("offsite", 14, 14, 0, 1, 0, 1).key
    'offsite/14-14/0-1'
    """

    kind: str
    species_i: int
    species_j: int
    shell_a: int
    shell_b: int
    l1: int
    l2: int

    def __post_init__(self):
        if self.kind not in SELF_COUPLING:
            raise ValueError(f"block kind must be {ONSITE!r} or {OFFSITE!r}, got {self.kind!r}")
        if SELF_COUPLING[self.kind] and self.species_i != self.species_j:
            raise ValueError("an on-site block type has one species")

    @property
    def key(self) -> str:
        """Stable text key (HDF5 group names, reports)."""
        return f"{self.kind}/{self.species_i}-{self.species_j}/{self.shell_a}-{self.shell_b}"

    @property
    def symmetric(self) -> bool:
        """True when the block type maps to itself under transposition + reversal."""
        return self.species_i == self.species_j and self.shell_a == self.shell_b

    @property
    def parity(self) -> int:
        """Inversion sign of the block, ``(-1)^(l1+l2)``."""
        return -1 if (self.l1 + self.l2) % 2 else 1

    def L_values(self) -> tuple:
        """Coupled angular momenta that can be non-zero.

        On-site symmetric blocks keep only the ``L`` with ``(-1)^L = +1``
        (a same-shell block of an atom with itself is a symmetric matrix).
        """
        Ls = range(abs(self.l1 - self.l2), self.l1 + self.l2 + 1)
        if SELF_COUPLING[self.kind] and self.symmetric:
            return tuple(L for L in Ls if L % 2 == 0)
        return tuple(Ls)

    @classmethod
    def from_key(cls, key: str, l1: int, l2: int) -> "BlockType":
        kind, sp, sh = key.split("/")
        zi, zj = (int(v) for v in sp.split("-"))
        a, b = (int(v) for v in sh.split("-"))
        return cls(kind, zi, zj, a, b, int(l1), int(l2))


def block_types(orbital_basis, kind: str, species_pairs=None) -> list:
    """The fitted block types of an orbital basis.

    On-site: for every species, shell pairs ``a <= b``.  Off-site: for every
    species pair ``zi <= zj``; when ``zi == zj`` shell pairs ``a <= b`` (the
    ``b > a`` blocks follow by transposition of the reversed bond), otherwise all
    ``(a, b)``.

    Parameters
    ----------
    orbital_basis : acehamil.structure.OrbitalBasis
    kind : {"onsite", "offsite"}
    species_pairs : iterable of (int, int), optional
        Restrict off-site types to these pairs (each sorted); default all pairs.

    Returns
    -------
    list of BlockType, sorted

    Examples
    --------
    >>> from acehamil.structure import OrbitalBasis
    >>> ob = OrbitalBasis.from_dict({14: [(3, 0), (3, 1)]})
    >>> [t.key for t in block_types(ob, "offsite")]
    ['offsite/14-14/0-0', 'offsite/14-14/0-1', 'offsite/14-14/1-1']
    """
    makers = {ONSITE: lambda: onsite_block_types(orbital_basis), OFFSITE: lambda: offsite_block_types(orbital_basis, species_pairs)}
    if kind not in makers:
        raise ValueError(f"unknown block kind {kind!r}")
    return makers[kind]()


def onsite_block_types(orbital_basis, species=None) -> list:
    """On-site block types: shell pairs ``a <= b`` of each species (default all), sorted."""
    out = []
    for z in orbital_basis.species if species is None else species:
        sh = orbital_basis.shells_of(z)
        for a in range(len(sh)):
            for b in range(a, len(sh)):
                out.append(BlockType(ONSITE, z, z, a, b, sh[a].l, sh[b].l))
    return sorted(out)


def offsite_block_types(orbital_basis, species_pairs=None) -> list:
    """Off-site block types of the species pairs ``zi <= zj`` (default all), sorted; see :func:`block_types`."""
    species = orbital_basis.species
    pairs = [(zi, zj) for zi in species for zj in species if zi <= zj] if species_pairs is None else sorted(
        {tuple(sorted(p)) for p in species_pairs}
    )
    out = []
    for zi, zj in pairs:
        si, sj = orbital_basis.shells_of(zi), orbital_basis.shells_of(zj)
        for a in range(len(si)):
            for b in range(len(sj)):
                if zi == zj and b < a:
                    continue
                out.append(BlockType(OFFSITE, zi, zj, a, b, si[a].l, sj[b].l))
    return sorted(out)


def project(blocks: np.ndarray, l1: int, l2: int, L: int) -> np.ndarray:
    """Irreducible part ``x_L`` of blocks.

    Parameters
    ----------
    blocks : ndarray, shape (n, 2l1+1, 2l2+1)
    l1, l2, L : int

    Returns
    -------
    ndarray, shape (n, 2L+1), float64
    """
    blocks = np.asarray(blocks, dtype=float)
    if blocks.shape[1:] != (2 * l1 + 1, 2 * l2 + 1):
        raise ValueError(f"blocks have shape {blocks.shape[1:]}, expected {(2 * l1 + 1, 2 * l2 + 1)}")
    return np.einsum("nab,abM->nM", blocks, cg_real(l1, l2, L))


def assemble(parts: dict, l1: int, l2: int, n: int) -> np.ndarray:
    """Blocks from irreducible parts: ``X = sum_L C^L x_L``.

    Parameters
    ----------
    parts : dict {L: ndarray (n, 2L+1)}
        Missing ``L`` count as zero.
    l1, l2 : int
    n : int
        Number of blocks.

    Returns
    -------
    ndarray, shape (n, 2l1+1, 2l2+1), float64

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(4, 3, 5))
    >>> parts = {L: project(X, 1, 2, L) for L in (1, 2, 3)}
    >>> bool(np.allclose(assemble(parts, 1, 2, 4), X))
    True
    """
    out = np.zeros((n, 2 * l1 + 1, 2 * l2 + 1))
    for L, x in parts.items():
        out += np.einsum("abM,nM->nab", cg_real(l1, l2, L), np.asarray(x, dtype=float).reshape(n, 2 * L + 1))
    return out


def transpose_sign(L: int) -> int:
    """Sign of ``x_L`` under transposition of a same-``l`` block, ``(-1)^L``."""
    return -1 if L % 2 else 1
