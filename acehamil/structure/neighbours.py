"""Neighbour pairs (vesin) for periodic, mixed and non-periodic cells.

Every pair ``p`` has ``vec[p] = pos[j[p]] - pos[i[p]] + shift[p] @ cell`` (Å),
the same convention as real-space blocks (:mod:`acehamil.conventions`).
Both directions of each pair are listed; a self-image (``i == j``,
``shift != 0``) appears when the cutoff exceeds a lattice vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

MIN_DISTANCE = 0.1  # Å; closer atoms are taken to be a broken structure
#: Most directed pairs one neighbour list may be asked for (estimated before the search, box estimate: up to ~2x
#: the true count): ~72 bytes a pair, 400 million ~ 27 GB.  More is a cutoff or cell in the wrong unit (a 4-atom Si
#: cell at r_cut = 1e6 Å asked for ~1e19 pairs and the search never returned).
MAX_PAIRS = 400_000_000
#: Most cells of vesin's cell list; a sparser structure (a cluster whose atoms lie far apart: two Si atoms 1e6 Å
#: apart made ~1e16 cells and killed the process with SIGFPE) is searched with a k-d tree instead.
MAX_LIST_CELLS = 10_000_000


@dataclass(frozen=True, eq=False)
class NeighbourPairs:
    """Directed neighbour pairs within a cutoff.

    Attributes
    ----------
    i, j : ndarray of int, shape (P,)
    shift : ndarray of int, shape (P, 3)
    vec : ndarray of float, shape (P, 3), Å
    dist : ndarray of float, shape (P,), Å
    """

    i: np.ndarray
    j: np.ndarray
    shift: np.ndarray
    vec: np.ndarray
    dist: np.ndarray

    def __len__(self) -> int:
        return len(self.i)

    def select(self, mask) -> "NeighbourPairs":
        """Subset of pairs (boolean mask or index array)."""
        return NeighbourPairs(self.i[mask], self.j[mask], self.shift[mask], self.vec[mask], self.dist[mask])


def _validated(atoms: Atoms) -> tuple:
    pos = np.asarray(atoms.get_positions(), dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (natoms, 3), got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or inf")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=float)
    if pbc.any():
        vol = abs(np.linalg.det(cell))
        if not np.isfinite(vol) or vol < 1e-6:
            raise ValueError("periodic structure has a degenerate cell (zero volume)")
        for ax in np.nonzero(pbc)[0]:
            if np.linalg.norm(cell[ax]) < 1e-6:
                raise ValueError(f"periodic along axis {ax} but the cell vector is zero")
    return pos, cell, pbc


def neighbour_pairs(atoms: Atoms, cutoff: float, self_interaction: bool = False) -> NeighbourPairs:
    """All directed pairs with ``0 < dist < cutoff``.

    Parameters
    ----------
    atoms : ase.Atoms
        Positions Å; ``pbc`` may be mixed (e.g. a slab).  Non-periodic axes need
        no cell.
    cutoff : float
        Å, > 0.
    self_interaction : bool
        Keep ``(i, i, shift=0)`` pairs (dist 0); off by default.

    Returns
    -------
    NeighbourPairs
        Sorted by ``i``, then ``j``, then shift.

    Raises
    ------
    ValueError
        NaN positions, a degenerate periodic cell, a non-positive cutoff, or two
        atoms closer than 0.1 Å (atoms on top of each other).

    Examples
    --------
    >>> from ase.build import bulk
    >>> nl = neighbour_pairs(bulk("Si", "diamond", a=5.43), 2.5)
    >>> len(nl), bool(np.allclose(nl.dist, 5.43 * 3**0.5 / 4))
    (8, True)
    """
    i, j, S, vec = _pairs(atoms, cutoff)
    natoms = len(atoms)
    dist = np.linalg.norm(vec, axis=1)
    if len(dist) and dist.min() < MIN_DISTANCE:
        p = int(np.argmin(dist))
        raise ValueError(f"atoms {i[p]} and {j[p]} are {dist[p]:.3g} Å apart (on top of each other?)")
    if self_interaction:
        idx = np.arange(natoms)
        i = np.concatenate([i, idx])
        j = np.concatenate([j, idx])
        S = np.concatenate([S, np.zeros((natoms, 3), np.int64)])
        vec = np.concatenate([vec, np.zeros((natoms, 3))])
        dist = np.concatenate([dist, np.zeros(natoms)])
    order = _pair_order(i, j, S, natoms)
    return NeighbourPairs(i[order], j[order], S[order], vec[order], dist[order])


def _plane_spacings(box: np.ndarray) -> np.ndarray:
    """Distance between the lattice planes of each axis of a non-degenerate ``box`` (Å), shape (3,)."""
    return 1.0 / np.linalg.norm(np.linalg.inv(box), axis=0)  # inv's columns are the reciprocal vectors


def estimated_pairs(atoms: Atoms, cutoff: float, images_only: bool = False) -> float:
    """Estimate of the directed pairs within ``cutoff`` Å, before any search (to refuse absurd ones): ``N^2``
    times, per axis, the share of cell copies or atoms within reach, ``2 r / h`` for a periodic axis of plane
    spacing ``h``, ``min(1, 2 r / L)`` for a non-periodic one over which the atoms spread ``L`` Å: a box
    around each atom instead of its sphere, so ~1.9x the count of a uniform bulk (1000-atom Si cell at 12 Å:
    6.9e5 for 3.6e5).  ``images_only``: instead the atom images within reach of the cell, ``N`` times
    ``2 r / h + 1`` per periodic axis, what :class:`CentreNeighbours` holds.

    Examples
    --------
    >>> from ase.build import bulk
    >>> si = bulk("Si", "diamond", a=5.43)
    >>> bool(8 <= estimated_pairs(si, 2.5) < 50), bool(estimated_pairs(si, 1e6) > MAX_PAIRS)
    (True, True)
    """
    pos, cell, pbc = _validated(atoms)
    n = len(pos)
    if n == 0:
        return 0.0
    box = _complete_box(cell, pbc, 1.0) if not pbc.all() else cell
    frac = pos @ np.linalg.inv(box)
    h = _plane_spacings(box)
    share = 1.0
    for a in range(3):
        if pbc[a]:
            share *= 2.0 * cutoff / h[a] + (1.0 if images_only else 0.0)
        elif not images_only:
            extent = float(np.ptp(frac[:, a]) * h[a]) if n > 1 else 0.0
            share *= min(1.0, 2.0 * cutoff / extent) if extent > 0 else 1.0
    return float(n) * (1.0 if images_only else float(n)) * share


def check_pair_count(atoms: Atoms, cutoff: float, images_only: bool = False) -> None:
    """Raise UserError when the neighbour list within ``cutoff`` (``images_only``: the atom images of
    :class:`CentreNeighbours`) would exceed :data:`MAX_PAIRS` (estimate, :func:`estimated_pairs`)."""
    est = estimated_pairs(atoms, cutoff, images_only)
    if est > MAX_PAIRS:
        from ..errors import UserError

        what = "atom images" if images_only else "pairs"
        raise UserError(f"a neighbour list within {cutoff:.4g} Å of these {len(atoms)} atoms would hold ~{est:.2g} "
                        f"{what} (~{est * 72 / 2**30:.3g} GB; limit {MAX_PAIRS:.0e}): a cutoff or cell in the wrong "
                        f"unit? (cutoffs of H/S models are a few Å to ~15 Å)")


def _pairs(atoms: Atoms, cutoff: float) -> tuple:
    """Directed pairs ``0 < dist < cutoff``, unsorted and unchecked: ``(i, j, shift, vec)``."""
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}")
    pos, cell, pbc = _validated(atoms)
    natoms = len(pos)
    if natoms == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 3), np.int64), np.zeros((0, 3))
    check_pair_count(atoms, cutoff)
    from vesin import NeighborList

    box = cell.copy()
    if not pbc.all():
        # vesin needs a box for non-periodic axes only to be non-degenerate; give
        # those axes a vector orthogonal to the periodic ones, long enough to hold the atoms
        span = (np.ptp(pos, axis=0).max() if natoms > 1 else 0.0) + 2 * cutoff + 1.0
        box = _complete_box(cell, pbc, span)
        if np.prod(np.ceil(_plane_spacings(box) / cutoff)) > MAX_LIST_CELLS:
            return CentreNeighbours(atoms, cutoff).raw_pairs(np.arange(natoms))
    i, j, S, D = NeighborList(cutoff=float(cutoff), full_list=True).compute(
        points=pos, box=box, periodic=pbc if not pbc.all() else True, quantities="ijSD"
    )
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    S = np.asarray(S, dtype=np.int64).reshape(-1, 3)
    D = np.asarray(D, dtype=float).reshape(-1, 3)
    # recompute the vector in our convention (independent of the library's sign choices)
    vec = pos[j] - pos[i] + S @ cell
    if len(vec) and not np.allclose(np.abs(vec), np.abs(D), atol=1e-8):
        raise RuntimeError("neighbour-list convention mismatch: vesin's distance vectors differ from ours")  # pragma: no cover
    return i, j, S, vec


def pairs_closer_than(atoms: Atoms, distance: float) -> tuple:
    """Directed pairs of atoms (periodic images included) closer than ``distance`` Å, without the
    "on top of each other" check of :func:`neighbour_pairs` (what :func:`acehamil.structure.validate.check_atoms`
    looks for).

    Returns
    -------
    i, j : ndarray of int, shape (P,)
    dist : ndarray of float, shape (P,), Å

    Raises
    ------
    ValueError
        NaN positions, a degenerate periodic cell or a non-positive distance.

    Examples
    --------
    >>> from ase import Atoms
    >>> i, j, d = pairs_closer_than(Atoms("H3", positions=[[0, 0, 0], [0, 0, 0.05], [0, 0, 3]]), 0.1)
    >>> i.tolist(), j.tolist(), d.round(3).tolist()
    ([0, 1], [1, 0], [0.05, 0.05])
    """
    if not (np.isfinite(distance) and distance > 0):
        raise ValueError(f"distance must be a positive number of Å, got {distance}")
    # a cell list as fine as 0.1 Å has ~1e6 cells per 10 Å box (25 ms per 8-atom cell): search 1 Å, filter
    i, j, _, vec = _pairs(atoms, max(float(distance), 1.0))
    d = np.linalg.norm(vec, axis=1)
    keep = d < distance
    return i[keep], j[keep], d[keep]


def _pair_order(i, j, S, natoms) -> np.ndarray:
    """The order sorting pairs by ``i``, ``j``, then shift: one int64 key (pairs are unique) when it
    fits, else a lexicographic sort."""
    if len(i) == 0:
        return np.zeros(0, np.int64)
    lo, span = S.min(axis=0), S.max(axis=0) - S.min(axis=0) + 1
    if float(natoms) ** 2 * float(np.prod(span.astype(float))) < 2.0**62:
        key = i * natoms + j
        for c in range(3):
            key = key * int(span[c]) + (S[:, c] - lo[c])
        return np.argsort(key)
    return np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))


def _complete_box(cell: np.ndarray, pbc: np.ndarray, span: float) -> np.ndarray:
    box = cell.copy()
    periodic = [box[a] for a in range(3) if pbc[a]]
    for a in range(3):
        if pbc[a]:
            continue
        # choose a direction orthogonal to the periodic vectors and the ones already set
        basis = [v / np.linalg.norm(v) for v in periodic]
        cand = np.eye(3)[a].copy()
        for _ in range(3):
            for v in basis:
                cand -= cand.dot(v) * v
            if np.linalg.norm(cand) > 1e-6:
                break
            cand = np.random.default_rng(a).normal(size=3)
        cand /= np.linalg.norm(cand)
        box[a] = cand * span
        periodic.append(box[a])
    return box


class CentreNeighbours:
    """Neighbour pairs of chosen centre atoms only, for structures too big for one full list.

    :func:`neighbour_pairs` lists every atom's neighbours at once (~72 bytes per pair: 3.7 GB for
    10^5 Si atoms at 13.5 Å).  This object holds only the atoms' periodic images that can be within
    ``cutoff`` of some atom (a k-d tree of positions, ~1-2x the atoms for big cells) and gives the
    pairs of any subset of centres on demand (:meth:`pairs`), with exactly the conventions and
    order of :func:`neighbour_pairs`, so a prediction can walk over the atoms in chunks.

    Parameters
    ----------
    atoms : ase.Atoms
        Positions Å; ``pbc`` may be mixed.
    cutoff : float
        Å, > 0.

    Examples
    --------
    >>> from ase.build import bulk
    >>> atoms = bulk("Si", "diamond", a=5.43) * (2, 2, 2)
    >>> full, cn = neighbour_pairs(atoms, 4.0), CentreNeighbours(atoms, 4.0)
    >>> part = cn.pairs([3, 5])
    >>> sel = np.isin(full.i, [3, 5])
    >>> bool(np.array_equal(part.j, full.j[sel]) and np.array_equal(part.shift, full.shift[sel]))
    True
    """

    def __init__(self, atoms: Atoms, cutoff: float):
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}")
        from scipy.spatial import cKDTree

        pos, cell, pbc = _validated(atoms)
        check_pair_count(atoms, cutoff, images_only=True)
        self.cutoff = float(cutoff)
        self.positions, self.cell, self.natoms = pos, cell, len(pos)
        atom, shifts = np.arange(len(pos)), np.zeros((len(pos), 3), np.int64)
        if pbc.any() and len(pos):
            # images whose coordinate along each periodic axis a (in units of that axis' lattice-plane
            # spacing 1/|b_a|) lies within cutoff of the atoms' range can be neighbours; no others
            span = (np.ptp(pos, axis=0).max() if len(pos) > 1 else 0.0) + 2 * cutoff + 1.0
            box = _complete_box(cell, pbc, span) if not pbc.all() else cell
            inv = np.linalg.inv(box)
            frac = pos @ inv
            pad = self.cutoff * np.linalg.norm(inv, axis=0)  # |b_a|: inv's columns are the reciprocal vectors
            lo, hi = frac.min(axis=0) - pad, frac.max(axis=0) + pad
            ranges = [np.arange(int(np.floor(lo[a] - frac[:, a].max())), int(np.ceil(hi[a] - frac[:, a].min())) + 1)
                      if pbc[a] else np.zeros(1, np.int64) for a in range(3)]
            atoms_of, shifts_of = [], []
            for n in np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3):
                f = frac + n * pbc
                ok = np.nonzero(np.all((f >= lo) & (f <= hi) | ~pbc, axis=1))[0]
                if len(ok):
                    atoms_of.append(ok), shifts_of.append(np.broadcast_to(n, (len(ok), 3)))
            atom = np.concatenate(atoms_of).astype(np.int64)
            shifts = np.concatenate(shifts_of).astype(np.int64)
        self._atom, self._shift = atom, shifts
        self._tree = cKDTree(pos[atom] + shifts @ cell) if len(atom) else None

    def raw_pairs(self, centres) -> tuple:
        """The pairs of :meth:`pairs`, unsorted and without the "on top of each other" check:
        ``(i, j, shift, vec)``, shapes (P,), (P,), (P, 3), (P, 3)."""
        from scipy.spatial import cKDTree

        centres = np.unique(np.asarray(centres, dtype=np.int64).reshape(-1))
        if len(centres) and (centres[0] < 0 or centres[-1] >= self.natoms):
            raise ValueError(f"centre index out of range 0..{self.natoms - 1}")
        if len(centres) == 0 or self._tree is None:
            e = np.zeros(0, np.int64)
            return e, e, np.zeros((0, 3), np.int64), np.zeros((0, 3))
        found = cKDTree(self.positions[centres]).sparse_distance_matrix(self._tree, self.cutoff, output_type="ndarray")
        i = centres[found["i"]]
        j, shift = self._atom[found["j"]], self._shift[found["j"]]
        del found
        vec = self.positions[j] - self.positions[i] + shift @ self.cell
        dist = np.linalg.norm(vec, axis=1)
        keep = (dist < self.cutoff) & ~((i == j) & ~shift.any(axis=1))  # not the centre itself
        return i[keep], j[keep], shift[keep], vec[keep]

    @property
    def n_images(self) -> int:
        """Number of atom images in the tree (atoms and the periodic images near them)."""
        return len(self._atom)

    def pairs(self, centres) -> NeighbourPairs:
        """Directed pairs ``(i, j, shift)`` with ``i`` in ``centres`` and ``0 < dist < cutoff``.

        Returns
        -------
        NeighbourPairs
            As :func:`neighbour_pairs` restricted to ``i`` in ``centres``: sorted by ``i``, ``j``, shift.

        Raises
        ------
        ValueError
            A centre index out of range, or two atoms closer than 0.1 Å.
        """
        i, j, shift, vec = self.raw_pairs(centres)
        dist = np.linalg.norm(vec, axis=1)
        if len(dist) and dist.min() < MIN_DISTANCE:
            p = int(np.argmin(dist))
            a, b = sorted((int(i[p]), int(j[p])))
            raise ValueError(f"atoms {a} and {b} are {dist[p]:.3g} Å apart (on top of each other?)")
        order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
        return NeighbourPairs(i[order], j[order], shift[order], vec[order], dist[order])
