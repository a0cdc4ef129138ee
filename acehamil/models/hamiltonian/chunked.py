"""Prediction of H and S in atom chunks, for structures whose matrices do not fit in memory.

:func:`predict_chunks` walks over the atoms in contiguous index ranges ``C`` and yields, per
chunk, the blocks ``(i, j, T)`` with ``i`` in ``C`` of H (with the cell's energy zero) and S.
Each chunk needs only

- the neighbour pairs of ``C`` and of its *halo* ``B`` (the atoms bonded to ``C``), found on
  demand by :class:`acehamil.structure.neighbours.CentreNeighbours` (never the full list);
- the blocks with ``i`` or ``j`` in ``C`` (the reversed bonds are evaluated together with
  their partners, as the bond-reversal symmetry needs both directions: the same arithmetic as
  :meth:`MatrixModel.predict` with ``rows``);

so the working set is set by the chunk size, not by the number of atoms.  The blocks of a
chunk equal those of the whole-structure prediction (tested to 1e-12) and, concatenated in
chunk order, come in the order of :meth:`MatrixModel.pattern` (on-site blocks of the chunk,
then its bonds sorted by ``i``, ``j``, shift); a writer that puts all on-site blocks first
reproduces the whole matrix (:func:`acehamil.io.stream.predict_to_file`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...structure import RealSpaceMatrix
from ...structure.neighbours import CentreNeighbours, NeighbourPairs
from ...threads import inner_threads
from .matrix_model import Pattern

#: Default atoms per chunk.  Measured with the example model (Si, 12 Å bonds): 4096 -> 2.0 GB peak at
#: 10,648 atoms, 8192 -> 4.4 GB peak at 101,568 atoms (docs/tb.md); memory grows with the chunk, not the structure.
CHUNK_ATOMS = 8192


@dataclass(frozen=True, eq=False)
class Chunk:
    """The blocks of atoms ``start <= i < stop`` of a chunked prediction.

    Attributes
    ----------
    start, stop : int
        Atom range of the chunk.
    H, S : RealSpaceMatrix
        Blocks ``(i, j, T)`` with ``start <= i < stop`` (on-site blocks first, then bonds sorted by
        ``i``, ``j``, shift) on the whole structure's atoms (``norb_per_atom`` of all atoms); H in eV
        including the cell's energy zero, S dimensionless.
    n_halo : int
        Atoms outside the chunk whose neighbours were listed for it.
    """

    start: int
    stop: int
    H: RealSpaceMatrix
    S: RealSpaceMatrix
    n_halo: int


def chunk_ranges(natoms: int, chunk_atoms: int) -> list:
    """``[(start, stop), ...]`` contiguous atom ranges of at most ``chunk_atoms`` atoms.

    Examples
    --------
    >>> chunk_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    if int(chunk_atoms) < 1:
        raise ValueError(f"chunk_atoms must be >= 1, got {chunk_atoms}")
    return [(a, min(natoms, a + int(chunk_atoms))) for a in range(0, natoms, int(chunk_atoms))]


def _merge(a: NeighbourPairs, b: NeighbourPairs) -> NeighbourPairs:
    """Pairs of two disjoint centre sets, each sorted, as one list sorted by ``i`` (then ``j``, shift)."""
    i = np.concatenate([a.i, b.i])
    order = np.argsort(i, kind="stable")
    return NeighbourPairs(i[order], np.concatenate([a.j, b.j])[order], np.concatenate([a.shift, b.shift])[order],
                          np.concatenate([a.vec, b.vec])[order], np.concatenate([a.dist, b.dist])[order])


def _cut_table(mm, species) -> np.ndarray:
    cut = np.zeros((max(species) + 1,) * 2)
    for a in species:
        for b in species:
            cut[a, b] = mm._bond_cutoff(a, b)
    return cut


def _local_pattern(mm, numbers, norb, nl: NeighbourPairs, in_chunk: np.ndarray, rows: np.ndarray) -> Pattern:
    """Blocks of ``mm`` with ``i`` or ``j`` in the chunk: on-site blocks of ``rows``, then the bonds of ``nl``."""
    cut = _cut_table(mm, sorted(set(numbers.tolist())))
    bonds = np.nonzero((nl.dist < cut[numbers[nl.i], numbers[nl.j]]) & (in_chunk[nl.i] | in_chunk[nl.j]))[0]
    i = np.concatenate([rows, nl.i[bonds]]).astype(np.int64)
    j = np.concatenate([rows, nl.j[bonds]]).astype(np.int64)
    shift = np.concatenate([np.zeros((len(rows), 3), np.int64), nl.shift[bonds]]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(norb[i] * norb[j])]).astype(np.int64)
    return Pattern(norb, i, j, shift, offsets, bonds, nl)


def _rows_only(pat: Pattern, in_chunk: np.ndarray, data: np.ndarray) -> RealSpaceMatrix:
    """The blocks of ``pat`` with ``i`` in the chunk, as a matrix on all atoms."""
    keep = np.nonzero(in_chunk[pat.i])[0]
    sizes = pat.offsets[keep + 1] - pat.offsets[keep]
    idx = np.repeat(pat.offsets[keep] - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
    return RealSpaceMatrix.adopt(pat.norb, pat.i[keep], pat.j[keep], pat.shift[keep], data[idx])


def predict_chunks(model, atoms, chunk_atoms: int = CHUNK_ATOMS, bond_chunk: int = 2048):
    """Yield the :class:`Chunk` s of H and S of ``atoms``, ``chunk_atoms`` atoms at a time.

    Parameters
    ----------
    model : HamiltonianModel
    atoms : ase.Atoms
        Any size; periodic, mixed or not periodic.
    chunk_atoms : int
        Atoms per chunk (memory ~ chunk size, not structure size; results do not depend on it).
    bond_chunk : int
        Centres per environment batch inside a chunk (:meth:`MatrixModel.predict`).

    Yields
    ------
    Chunk
        In atom order; concatenated they hold every block of :meth:`HamiltonianModel.predict`.
    """
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    natoms = len(numbers)
    norb = model.orbital_basis.layout(numbers).norb_per_atom
    species = sorted(set(numbers.tolist()))
    shared = model.H.same_pattern_as(model.S, species)
    # the halo: atoms that share a block with the chunk (their neighbours give the reversed bonds' environments)
    bond_cut = max(max(mm._bond_cutoff(a, b) for a in species for b in species) for mm in (model.H, model.S))
    finder = CentreNeighbours(atoms, model.reach)
    for start, stop in chunk_ranges(natoms, chunk_atoms):
        with inner_threads():  # one BLAS thread unless the caller set more (as every prediction)
            rows = np.arange(start, stop, dtype=np.int64)
            in_chunk = np.zeros(natoms, dtype=bool)
            in_chunk[rows] = True
            own = finder.pairs(rows)
            halo = np.unique(own.j[own.dist < bond_cut])
            halo = halo[~in_chunk[halo]]
            nl = _merge(own, finder.pairs(halo))
            del own
            pats = {}
            pats["S"] = _local_pattern(model.S, numbers, norb, nl, in_chunk, rows)
            pats["H"] = pats["S"] if shared else _local_pattern(model.H, numbers, norb, nl, in_chunk, rows)
            S = _rows_only(pats["S"], in_chunk, model.S.predict_data(atoms, pats["S"], bond_chunk, rows=rows))
            H = _rows_only(pats["H"], in_chunk, model.H.predict_data(atoms, pats["H"], bond_chunk, rows=rows))
            del nl, pats
            # the cell's energy zero V S (of the whole structure), blockwise as every prediction path
            H = model.with_energy_zero(H, S, atoms)
        yield Chunk(start, stop, H, S, len(halo))
